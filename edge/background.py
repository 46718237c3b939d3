"""What the room sounds like when nobody near the microphone speaks: the level of the signal
and the detector's probability in the background, tracked window by window, so that
decisions can be made relative to them instead of to fixed numbers."""

from __future__ import annotations

from .onset import SILENT_DB

WINDOW_S = 512 / 16000


class NoiseFloor:
    """The background level of the signal: follows any fall at once and rises at most
    ``rise_db_per_s`` (minimum tracking), so speech barely lifts it while a room that gets
    louder is followed within seconds."""

    def __init__(self, rise_db_per_s: float):
        self.rise_per_window = rise_db_per_s * WINDOW_S
        self._level: float | None = None

    @property
    def level_db(self) -> float:
        """The floor in dB re full scale (SILENT_DB until a window with sound was seen)."""
        return SILENT_DB if self._level is None else self._level

    def update(self, level: float) -> float:
        # Digital silence (a gap in a file, a muted input) is no room's noise.
        if level > SILENT_DB:
            if self._level is None or level < self._level:
                self._level = level
            else:
                self._level = min(level, self._level + self.rise_per_window)
        return self.level_db


class AdaptiveThreshold:
    """The start threshold follows the detector's background probability (a moving average
    over ``time_s`` of the windows the caller says are outside speech): ``margin`` above it,
    never below ``lowest`` nor above ``highest`` (the configured threshold). In a quiet room a soft voice that never reaches the configured
    threshold still starts speech; where babble keeps the probability up, the threshold
    stays where it was configured."""

    def __init__(self, highest: float, lowest: float | None, margin: float, time_s: float):
        self.highest = highest
        self.lowest = highest if lowest is None else min(lowest, highest)
        self.margin = margin
        self.weight = min(1.0, WINDOW_S / time_s)
        self.background = highest  # until the room is known, decide as configured
        self.value = highest

    def update(self, prob: float) -> float:
        self.background += self.weight * (prob - self.background)
        self.value = min(self.highest, max(self.lowest, self.background + self.margin))
        return self.value
