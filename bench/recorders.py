"""The recorders whose stored segments are scored on the test streams: the project's own
pipeline (``edge process`` run as a subprocess) and a baseline built the way Silero's
examples stream audio."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import EdgeError
from edge.storage import read_manifest

from .labels import SAMPLE_RATE, WINDOW, Intervals

REPO = Path(__file__).resolve().parent.parent


class VadIteratorBaseline:
    """silero_vad.utils_vad.VADIterator (v6.2.3) driven by precomputed probabilities: speech
    starts at a window >= threshold, ends after min_silence_ms below threshold - 0.15, and
    both ends are padded by speech_pad_ms; there is no pre-roll buffer beyond that pad."""

    def __init__(self, threshold: float = 0.5, min_silence_duration_ms: int = 100, speech_pad_ms: int = 30):
        self.threshold = threshold
        self.min_silence_samples = SAMPLE_RATE * min_silence_duration_ms / 1000
        self.speech_pad_samples = SAMPLE_RATE * speech_pad_ms / 1000
        self.triggered = False
        self.temp_end = 0
        self.current_sample = 0

    def __call__(self, speech_prob: float) -> dict | None:
        self.current_sample += WINDOW
        if speech_prob >= self.threshold and self.temp_end:
            self.temp_end = 0
        if speech_prob >= self.threshold and not self.triggered:
            self.triggered = True
            return {"start": int(max(0, self.current_sample - self.speech_pad_samples - WINDOW))}
        if speech_prob < self.threshold - 0.15 and self.triggered:
            if not self.temp_end:
                self.temp_end = self.current_sample
            if self.current_sample - self.temp_end < self.min_silence_samples:
                return None
            speech_end = self.temp_end + self.speech_pad_samples - WINDOW
            self.temp_end = 0
            self.triggered = False
            return {"end": int(speech_end)}
        return None


def baseline_segments(probabilities: np.ndarray) -> Intervals:
    """Stored intervals (seconds) of the baseline recorder; speech still open at the end of
    the stream is stored up to the end."""
    iterator = VadIteratorBaseline()
    segments: Intervals = []
    start = None
    for prob in probabilities:
        event = iterator(float(prob))
        if event and "start" in event:
            start = event["start"]
        elif event:
            segments.append((start / SAMPLE_RATE, event["end"] / SAMPLE_RATE))
            start = None
    if start is not None:
        segments.append((start / SAMPLE_RATE, len(probabilities) * WINDOW / SAMPLE_RATE))
    return segments


@dataclass(frozen=True)
class ChildRun:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float


def peak_rss_mb(pid: int) -> float:
    """High-water mark of the resident memory of a running process, or 0 once it has exited.
    (ru_maxrss cannot be used: Linux carries the parent's peak over into a child at exec, so
    every child of this big bench process would report at least the bench's own size.)"""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


POLL_S = 0.01


def run_child(command: list[str]) -> ChildRun:
    """Run a command to completion, sampling its memory high-water mark until it exits."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, cwd=REPO)
        peak = 0.0
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, peak_rss_mb(child.pid))
            time.sleep(POLL_S)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            stderr.seek(0)
            lines = stderr.read().decode(errors="replace").strip().splitlines()
            raise EdgeError(f"{' '.join(command[2:5])} ... failed: {lines[-1] if lines else child.returncode}")
    return ChildRun(wall, usage.ru_utime + usage.ru_stime, peak)


def edge_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge", "--log-level", "warning", *args]


def edge_process(inputs: list[Path], out_dir: Path, config: Path | None) -> tuple[dict[str, Intervals], ChildRun]:
    """Run ``edge process`` on ``inputs`` into a fresh ``out_dir``; the stored (start_s, end_s)
    of each input, keyed by the path as given, and how the run went."""
    config_args = ["--config", str(config)] if config else []
    run = run_child(edge_command("process", *map(str, inputs), "--out", str(out_dir), *config_args))
    stored: dict[str, Intervals] = defaultdict(list)
    for entry in read_manifest(out_dir / "manifest.jsonl"):
        stored[entry["source"]].append((entry["start_s"], entry["end_s"]))
    return stored, run
