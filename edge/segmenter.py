"""Turning per-window speech probabilities into segments of audio worth keeping.

Plain data in (one 512-sample frame and its probability at a time), events out; nothing
here touches files, clocks or hardware, so every rule can be tested with made-up numbers.

Rules, all in whole windows of 32 ms:
- speech starts at a window with probability >= the start threshold and lasts until a pause,
  a run of windows that begins below the end threshold and is not interrupted by one at or
  above the start threshold; the start threshold is ``threshold`` lowered towards
  ``adaptive_threshold_min`` while the background probability is low (AdaptiveThreshold), and
  the end threshold keeps the configured ratio ``neg_threshold`` / ``threshold`` to it;
- a pause of ``min_silence`` or more ends the segment; shorter pauses stay inside it;
- speech shorter than ``min_speech`` (up to where its pause began) is a blip: not stored;
- audio from before the start is kept back to where speech-like windows began (the first
  syllable is often quieter than the detector needs), up to ``pre_roll``, and after the end
  as far as speech-like windows go on, up to ``post_roll``, each with a margin (OnsetFinder);
- a segment reaching ``max_segment`` is split at the quietest window of the last
  ``split_search`` so that long talk is not cut mid-word if a pause can be found.

Audio is released as soon as it is known to belong to a segment, so a power cut loses as
little as possible; only a pause in progress and the search span before a split are held.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Union

import numpy as np

from .config import SegmenterSettings
from .background import AdaptiveThreshold, NoiseFloor
from .onset import OnsetFinder, Window, level_db

WINDOW = 512
SAMPLE_RATE = 16000
SPLIT_SEARCH_S = 5.0


@dataclass(frozen=True)
class SegmentOpened:
    start_sample: int
    """Offset of the segment's first sample in the stream."""
    audio: np.ndarray
    """The segment's first samples (pre-roll and the speech that confirmed it)."""
    speech_sample: int
    """Offset of the first window of the speech that opened it (after the pre-roll kept)."""


@dataclass(frozen=True)
class SegmentAudio:
    audio: np.ndarray


@dataclass(frozen=True)
class SegmentClosed:
    end_sample: int
    """Offset just past the segment's last sample in the stream."""
    prob_mean: float
    prob_max: float
    split: bool
    """True when closed for length: the next segment continues without a gap."""
    speech_end_sample: int
    """Offset just past the last speech window (before the post-roll kept)."""


SegmentEvent = Union[SegmentOpened, SegmentAudio, SegmentClosed]


def frames(ms: float) -> int:
    return int(np.ceil(ms * SAMPLE_RATE / 1000 / WINDOW))


def _margin(ms: int | None) -> int | None:
    return None if ms is None else frames(ms)


class SpeechSegmenter:
    def __init__(self, settings: SegmenterSettings, threshold: float, neg_threshold: float):
        self.start_threshold = AdaptiveThreshold(threshold, settings.adaptive_threshold_min,
                                                 settings.adaptive_threshold_margin, settings.background_s)
        self.end_ratio = neg_threshold / threshold if threshold > 0 else 1.0
        self.min_speech = frames(settings.min_speech_ms)
        self.min_silence = max(1, frames(settings.min_silence_ms))
        self.post_roll = frames(settings.post_roll_ms)
        self.noise_floor = NoiseFloor(settings.noise_floor_rise_db_per_s)
        self.onset_finder = OnsetFinder(settings.speech_like_prob, settings.speech_like_rise_db,
                                        max(1, frames(settings.speech_bridge_ms)), _margin(settings.onset_margin_ms),
                                        _margin(settings.tail_margin_ms))
        self.max_frames = frames(settings.max_segment_s * 1000)
        self.split_search = min(frames(SPLIT_SEARCH_S * 1000), self.max_frames // 2)
        self._history: deque = deque(maxlen=frames(settings.pre_roll_ms))
        self._index = 0  # windows seen so far
        self._held: list = []  # Windows of the candidate/open segment not yet released
        self._held_start = 0  # window index of _held[0]
        self._silence = 0  # trailing windows of _held that form the current pause
        self._opened = False
        self._segment_start = 0  # window index of the open segment's first window
        self._emitted = 0  # windows released into the open segment
        self._prob_sum = 0.0
        self._prob_max = 0.0

    @property
    def is_open(self) -> bool:
        """True while a segment is being stored (the LED is on)."""
        return self._opened

    def push(self, frame: np.ndarray, prob: float) -> list[SegmentEvent]:
        index = self._index
        self._index += 1
        window = Window(frame, prob, level_db(frame))
        self.noise_floor.update(window.level_db)
        threshold = self.start_threshold.value
        if not self._held and not self._opened:
            if prob < threshold:
                # Only windows outside speech tell what the background is.
                self.start_threshold.update(prob)
                self._history.append(window)
                return []
            self._held_start = index
            self._silence = 0
        self._held.append(window)
        if prob >= threshold:
            self._silence = 0
        elif prob < threshold * self.end_ratio or self._silence:
            self._silence += 1
        if self._silence >= self.min_silence:
            return self._end_speech()
        events: list[SegmentEvent] = []
        if not self._opened and len(self._held) - self._silence >= self.min_speech:
            keep = self.onset_finder.onset(list(self._history), self.noise_floor.level_db)
            preroll = list(self._history)[len(self._history) - keep :]
            events.append(self._open(preroll, self._held_start - len(preroll)))
            self._history.clear()
        if self._opened:
            if self._emitted + len(self._held) >= self.max_frames:
                events += self._split()
            events += self._release_unneeded()
        return events

    def flush(self) -> list[SegmentEvent]:
        """End of input or shutdown: close the open segment, keeping its audio."""
        if self._opened:
            return self._end_speech()
        self._history.extend(self._held)
        self._held = []
        return []

    def _open(self, preroll: list, first_index: int) -> SegmentOpened:
        self._opened = True
        self._segment_start = first_index
        self._emitted = len(preroll)
        self._prob_sum = sum(w.prob for w in preroll)
        self._prob_max = max((w.prob for w in preroll), default=0.0)
        return SegmentOpened(first_index * WINDOW, self._audio(preroll), (first_index + len(preroll)) * WINDOW)

    def _release(self, count: int) -> list[SegmentEvent]:
        released, self._held = self._held[:count], self._held[count:]
        self._held_start += count
        if not released:
            return []
        self._emitted += len(released)
        self._prob_sum += sum(w.prob for w in released)
        self._prob_max = max(self._prob_max, max(w.prob for w in released))
        return [SegmentAudio(self._audio(released))]

    def _release_unneeded(self) -> list[SegmentEvent]:
        near_split = self._emitted + len(self._held) - (self.max_frames - self.split_search)
        keep = max(self._silence, near_split, 0)
        return self._release(len(self._held) - keep)

    def _close(self, split: bool, speech_end: int | None = None) -> SegmentClosed:
        self._opened = False
        end = self._segment_start + self._emitted
        return SegmentClosed(
            end_sample=end * WINDOW,
            prob_mean=round(self._prob_sum / max(self._emitted, 1), 4),
            prob_max=round(self._prob_max, 4),
            split=split,
            speech_end_sample=(end if speech_end is None else speech_end) * WINDOW,
        )

    def _end_speech(self) -> list[SegmentEvent]:
        if not self._opened:  # a blip: its audio may still be pre-roll for what follows
            self._history.extend(self._held)
            self._held = []
            return []
        speech = len(self._held) - self._silence
        speech_end = self._held_start + speech
        tail = self.onset_finder.tail(self._held[speech : speech + self.post_roll], self.noise_floor.level_db)
        events = self._release(speech + tail)
        events.append(self._close(split=False, speech_end=speech_end))
        self._history.extend(self._held)
        self._held = []
        return events

    def _split(self) -> list[SegmentEvent]:
        search = self._held[-self.split_search:]
        offset = len(self._held) - len(search)
        # The last quietest window: a pause near the end leaves the next part shortest.
        probs = [w.prob for w in search]
        quietest = offset + len(probs) - 1 - int(np.argmin(probs[::-1]))
        events = self._release(quietest + 1)
        events.append(self._close(split=True))
        events.append(self._open([], self._held_start))
        self._silence = min(self._silence, len(self._held))
        return events

    @staticmethod
    def _audio(pairs: list) -> np.ndarray:
        if not pairs:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([w.frame for w in pairs])
