"""Labelled speech intervals and the one rule that turns them into per-window truth."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
WINDOW = 512
WINDOW_S = WINDOW / SAMPLE_RATE
LABEL_SUFFIXES = (".scv", ".csv")

Intervals = list[tuple[float, float]]


def read_speech_intervals(path: str | Path) -> Intervals:
    """Speech intervals (seconds) of a label file in either format of the shared data:
    ``.scv`` is one line ``name,start,end,label,start,end,label,...`` (TEN VAD testset);
    ``.csv`` has rows ``start_s,end_s,label`` with an optional header (speechocean762)."""
    path = Path(path)
    if path.suffix == ".scv":
        fields = path.read_text().strip().split(",")[1:]
        triples = [fields[i : i + 3] for i in range(0, len(fields) - 2, 3)]
    else:
        with path.open(newline="") as file:
            triples = [row for row in csv.reader(file) if row and row[0].strip() != "start_s"]
    return [(float(start), float(end)) for start, end, label in triples if int(float(label)) == 1]


def label_file_for(wav: Path) -> Path | None:
    for suffix in LABEL_SUFFIXES:
        candidate = wav.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def window_truth(intervals: Intervals, window_count: int) -> np.ndarray:
    """True for each 32 ms window whose centre lies in a speech interval (start inclusive)."""
    centres = (np.arange(window_count) + 0.5) * WINDOW_S
    truth = np.zeros(window_count, dtype=bool)
    for start, end in intervals:
        truth |= (centres >= start) & (centres < end)
    return truth
