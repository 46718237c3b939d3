"""Window-level accuracy of the shipped models beside the Silero ONNX reference, with how far
their probabilities move from it: the figures of the model card (models/README.md).

Build/bench-time only (onnxruntime and silero-vad installed with --no-deps, as in the test
venv). Run from the repository root:

    .venv/bin/python models/evaluate.py [DATA_DIR]

DATA_DIR defaults to ../shared/data/ten-vad-testset-dev. Labels, the per-window truth and
the scores are the benchmark's own (bench/labels.py, bench/metrics.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))

from bench.detectors import OnnxSilero, silero_onnx_path  # noqa: E402
from bench.labels import label_file_for, read_speech_intervals, window_truth  # noqa: E402
from bench.metrics import detection_scores  # noqa: E402
from edge.vad import RUNTIMES, SileroVad, window_probabilities  # noqa: E402
from edge.wavio import read_wav_16k  # noqa: E402

DEFAULT_DATA_DIR = REPO_DIR.parent / "shared" / "data" / "ten-vad-testset-dev"
THRESHOLD = 0.5
REFERENCE = "silero_vad.onnx (onnxruntime)"


def main(argv: list[str]) -> int:
    data_dir = Path(argv[0]) if argv else DEFAULT_DATA_DIR
    wavs = [wav for wav in sorted(data_dir.glob("*.wav")) if label_file_for(wav)]
    if not wavs:
        sys.exit(f"evaluate: no labelled WAV files in {data_dir}")
    detectors = {REFERENCE: OnnxSilero(silero_onnx_path())}
    for model in ("silero_vad_int8.tflite", "silero_vad_fp16.tflite"):
        for runtime in RUNTIMES:
            detectors[f"{model} ({runtime})"] = SileroVad(REPO_DIR / "models" / model, runtime=runtime)
    truth, probs = [], {name: [] for name in detectors}
    for wav in wavs:
        samples = read_wav_16k(wav)
        truth.append(window_truth(read_speech_intervals(label_file_for(wav)), len(samples) // SileroVad.WINDOW))
        for name, detector in detectors.items():
            probs[name].append(window_probabilities(detector, samples))
    is_speech = np.concatenate(truth)
    reference = np.concatenate(probs[REFERENCE])
    seconds = len(is_speech) * SileroVad.WINDOW / SileroVad.SAMPLE_RATE
    print(f"{len(wavs)} files, {len(is_speech)} windows ({seconds:.0f} s), {is_speech.mean():.1%} speech")
    print("model,precision,recall,f1,average_precision,mean_abs_diff_to_onnx,max_abs_diff_to_onnx,"
          "decisions_agree_with_onnx")
    for name, per_file in probs.items():
        model_probs = np.concatenate(per_file)
        s = detection_scores(model_probs, is_speech, THRESHOLD)
        diff = np.abs(model_probs - reference)
        agree = np.mean((model_probs >= THRESHOLD) == (reference >= THRESHOLD))
        print(f"{name},{s.precision:.4f},{s.recall:.4f},{s.f1:.4f},{s.average_precision:.4f},"
              f"{diff.mean():.4f},{diff.max():.4f},{agree:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
