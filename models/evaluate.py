"""Frame-level accuracy of the shipped VAD models and of the Silero ONNX reference.

Build/bench-time only (needs onnxruntime and silero-vad installed with --no-deps, as the test
venv has). Run from the repository root:

    .venv/bin/python models/evaluate.py [DATA_DIR]

DATA_DIR defaults to ../shared/data/ten-vad-testset-dev (labelled 16 kHz WAVs: each
`NAME.scv` is one line `name,start,end,label,start,end,label,...`, label 1 = speech). Per
32 ms window, a window is speech when its centre lies in a labelled speech interval. Prints
precision, recall and F1 at threshold 0.5 and average precision for every model.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))

from edge.vad import RUNTIMES, SileroVad, window_probabilities  # noqa: E402
from edge.wavio import read_wav_16k  # noqa: E402

DEFAULT_DATA_DIR = REPO_DIR.parent / "shared" / "data" / "ten-vad-testset-dev"
WINDOW = SileroVad.WINDOW
SAMPLE_RATE = SileroVad.SAMPLE_RATE
THRESHOLD = 0.5
REFERENCE = "silero_vad.onnx (onnxruntime)"


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    f1: float
    average_precision: float


def speech_labels(label_path: Path, window_count: int) -> np.ndarray:
    fields = label_path.read_text().strip().split(",")[1:]
    intervals = [tuple(float(v) for v in fields[i : i + 3]) for i in range(0, len(fields), 3)]
    centres = (np.arange(window_count) * WINDOW + WINDOW / 2) / SAMPLE_RATE
    is_speech = np.zeros(window_count, dtype=bool)
    for start, end, label in intervals:
        if label == 1:
            is_speech |= (centres >= start) & (centres < end)
    return is_speech


def onnx_probabilities(session: onnxruntime.InferenceSession, samples: np.ndarray) -> np.ndarray:
    """Silero's OnnxWrapper without torch: 64 samples of context in front of each window."""
    audio = samples.astype(np.float32) / 32768
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros((1, 64), np.float32)
    probs = []
    for start in range(0, len(audio) - WINDOW + 1, WINDOW):
        model_input = np.concatenate([context, audio[None, start : start + WINDOW]], axis=1)
        prob, state = session.run(None, {"input": model_input, "state": state, "sr": np.array(SAMPLE_RATE)})
        context = model_input[:, -64:]
        probs.append(float(prob[0, 0]))
    return np.array(probs)


def average_precision(is_speech: np.ndarray, probs: np.ndarray) -> float:
    """Area under the precision-recall steps, one step per distinct score (as scikit-learn)."""
    order = np.argsort(-probs, kind="stable")
    sorted_probs, sorted_truth = probs[order], is_speech[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(sorted_probs)), len(probs) - 1]
    true_positives = np.cumsum(sorted_truth)[last_of_each_score]
    precision = true_positives / (last_of_each_score + 1)
    recall_gain = np.diff(np.r_[0, true_positives]) / is_speech.sum()
    return float(np.sum(recall_gain * precision))


def score(is_speech: np.ndarray, probs: np.ndarray) -> Scores:
    decided = probs > THRESHOLD
    true_positives = np.sum(decided & is_speech)
    precision = true_positives / max(decided.sum(), 1)
    recall = true_positives / max(is_speech.sum(), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return Scores(float(precision), float(recall), float(f1), average_precision(is_speech, probs))


def main(argv: list[str]) -> int:
    data_dir = Path(argv[0]) if argv else DEFAULT_DATA_DIR
    wavs = sorted(data_dir.glob("*.wav"))
    if not wavs:
        sys.exit(f"evaluate: no WAV files in {data_dir}")
    onnx_path = Path(importlib.util.find_spec("silero_vad").submodule_search_locations[0]) / "data" / "silero_vad.onnx"
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    detectors = {REFERENCE: lambda samples: onnx_probabilities(session, samples)}
    for model in ("silero_vad_int8.tflite", "silero_vad_fp16.tflite"):
        for runtime in RUNTIMES:
            vad = SileroVad(REPO_DIR / "models" / model, runtime=runtime)
            detectors[f"{model} ({runtime})"] = lambda samples, vad=vad: window_probabilities(vad, samples)
    truth, probs = [], {name: [] for name in detectors}
    for wav in wavs:
        samples = read_wav_16k(wav)
        truth.append(speech_labels(wav.with_suffix(".scv"), len(samples) // WINDOW))
        for name, detect in detectors.items():
            probs[name].append(detect(samples))
    is_speech = np.concatenate(truth)
    reference = np.concatenate(probs[REFERENCE])
    seconds = len(is_speech) * WINDOW / SAMPLE_RATE
    print(f"{len(wavs)} files, {len(is_speech)} windows ({seconds:.0f} s), {is_speech.mean():.1%} speech")
    print("model,precision,recall,f1,average_precision,mean_abs_diff_to_onnx,max_abs_diff_to_onnx,decisions_agree_with_onnx")
    for name, per_file in probs.items():
        model_probs = np.concatenate(per_file)
        s = score(is_speech, model_probs)
        diff = np.abs(model_probs - reference)
        agree = np.mean((model_probs > THRESHOLD) == (reference > THRESHOLD))
        print(f"{name},{s.precision:.4f},{s.recall:.4f},{s.f1:.4f},{s.average_precision:.4f},{diff.mean():.4f},{diff.max():.4f},{agree:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
