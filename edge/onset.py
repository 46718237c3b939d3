"""Where speech really begins and ends, found in audio already in RAM.

The detector is sure of speech only some windows after it began (a soft onset in noise can
take half a second) and lets go some windows after it ended. Instead of keeping a fixed span
on either side, the segmenter asks these two small helpers how far speech-like windows reach
around what the detector decided, and keeps a margin beyond that.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

WINDOW = 512
SAMPLE_RATE = 16000
SILENT_DB = -100.0  # the level of an all-zero window


class Window(NamedTuple):
    frame: np.ndarray
    prob: float
    level_db: float
    """Mean power of the window in dB relative to a full-scale sine."""


def level_db(frame: np.ndarray) -> float:
    samples = frame.astype(np.float32)
    power = float(np.dot(samples, samples)) / max(len(samples), 1)
    return max(10 * np.log10(power / (32768**2 / 2)), SILENT_DB) if power > 0 else SILENT_DB


class OnsetFinder:
    """A window is speech-like when the detector gives it at least ``prob_floor`` or its level
    is ``rise_db`` or more above the noise floor. Speech reaches as far as speech-like windows
    go with gaps shorter than ``bridge`` windows between them (stops and closures inside words
    are quiet); ``onset_margin`` windows more are kept before it, ``tail_margin`` after, and
    None keeps all that is offered on that side (no search)."""

    def __init__(self, prob_floor: float, rise_db: float, bridge: int, onset_margin: int | None,
                 tail_margin: int | None):
        self.prob_floor = prob_floor
        self.rise_db = rise_db
        self.bridge = bridge
        self.onset_margin = onset_margin
        self.tail_margin = tail_margin

    def speech_like(self, window: Window, floor_db: float) -> bool:
        return window.prob >= self.prob_floor or window.level_db >= floor_db + self.rise_db

    def reach(self, windows: Sequence[Window], floor_db: float) -> int:
        """How many of ``windows`` (nearest to the speech first) speech goes on into."""
        reach = gap = 0
        for count, window in enumerate(windows, start=1):
            if self.speech_like(window, floor_db):
                reach, gap = count, 0
            else:
                gap += 1
                if gap >= self.bridge:
                    break
        return reach

    def onset(self, before: Sequence[Window], floor_db: float) -> int:
        """How many of the windows ``before`` the detector's trigger (oldest first) to keep."""
        if self.onset_margin is None:
            return len(before)
        return min(len(before), self.reach(before[::-1], floor_db) + self.onset_margin)

    def tail(self, after: Sequence[Window], floor_db: float) -> int:
        """How many of the windows ``after`` the end of speech (oldest first) to keep."""
        if self.tail_margin is None:
            return len(after)
        return min(len(after), self.reach(after, floor_db) + self.tail_margin)
