"""One measured workload for bench.arm, run under qemu-aarch64 by it (or natively):

    python -m bench.arm_workload WORKLOAD N

WORKLOAD is ``model:MODEL_FILE:RUNTIME`` (N windows of the model alone), ``suppressor`` (N
windows of edge.denoise alone, a capture block of four at a time, as the recorder calls it) or ``process:RUNTIME`` (``edge process`` on N seconds of the
bundled lesson, looped: suppressor, model, segmenter and segment writer, as the daemon runs
them). The runtime is named rather than probed: edge.vad probes in a child process, which
qemu-user would neither count nor give the arm64 root. Start-up is
the same for N and 2N, so the difference of two counts is the cost of N windows or seconds.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
LESSON = REPO / "tests" / "data" / "lesson_15s.wav"
WINDOW = 512


def windows(count: int) -> list[np.ndarray]:
    from edge.wavio import read_wav_16k

    samples = read_wav_16k(LESSON)
    available = [samples[i * WINDOW : (i + 1) * WINDOW] for i in range(len(samples) // WINDOW)]
    return [available[i % len(available)] for i in range(count)]


def main(workload: str, count: int) -> None:
    if workload.startswith("model:"):
        from edge.vad import SileroVad

        _, model, runtime = workload.split(":")
        vad = SileroVad(REPO / "models" / model, runtime=runtime)
        for window in windows(count):
            vad(window)
    elif workload == "suppressor":
        from edge.capture import BLOCK
        from edge.config import DenoiseSettings
        from edge.denoise import NoiseSuppressor

        suppressor = NoiseSuppressor(DenoiseSettings())
        audio = np.concatenate(windows(count))
        for start in range(0, len(audio), BLOCK):  # as the recorder calls it
            suppressor(audio[start:start + BLOCK])
    elif workload.startswith("process:"):
        from edge import vad
        from edge.cli import main as edge_main
        from edge.wavio import write_wav_16k

        runtime = workload.split(":")[1]
        vad.usable_runtime = lambda model_path, runtimes=vad.RUNTIMES: runtime

        with tempfile.TemporaryDirectory() as work:
            audio = np.concatenate(windows(count * 16000 // WINDOW))
            wav = Path(work) / "input.wav"
            write_wav_16k(wav, audio)
            edge_main(["--log-level", "warning", "process", str(wav), "--out", str(Path(work) / "out"),
                       "--config", str(REPO / "config" / "edge.yaml")])
    else:
        raise SystemExit(f"unknown workload {workload!r}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
