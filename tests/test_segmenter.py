"""SpeechSegmenter on made-up probability sequences: every rule, one window = 32 ms."""

from __future__ import annotations

import numpy as np
import pytest

from edge.background import AdaptiveThreshold, NoiseFloor
from edge.config import SegmenterSettings
from edge.onset import OnsetFinder, Window, level_db
from edge.segmenter import SegmentAudio, SegmentClosed, SegmentOpened, SpeechSegmenter

# Without margins the whole pre- and post-roll is kept: these rules are tested apart from the
# onset and end search (tested with their own settings below).
SETTINGS = dict(min_speech_ms=96, min_silence_ms=320, pre_roll_ms=320, post_roll_ms=96, max_segment_s=300,
                onset_margin_ms=None, tail_margin_ms=None, adaptive_threshold_min=None)


def segments(probs, **overrides):
    """Run the segmenter over frames whose samples are their own window index, and return
    (first window, end window, windows stored, split) per segment."""
    segmenter = SpeechSegmenter(SegmenterSettings(**{**SETTINGS, **overrides}), 0.5, 0.35)
    events = []
    for index, prob in enumerate(probs):
        events += segmenter.push(np.full(512, index, np.int16), prob)
    events += segmenter.flush()
    found, audio = [], []
    for event in events:
        if isinstance(event, SegmentOpened):
            start, audio = event.start_sample // 512, [event.audio]
        elif isinstance(event, SegmentAudio):
            audio.append(event.audio)
        elif isinstance(event, SegmentClosed):
            windows = np.concatenate(audio)[::512].tolist()
            assert windows == list(range(start, event.end_sample // 512)), "audio is not contiguous"
            found.append((start, event.end_sample // 512, event.split))
    return found


def test_speech_with_pre_roll_and_post_roll():
    probs = [0.0] * 20 + [0.9] * 10 + [0.0] * 30
    # Speech is windows 20-29: 10 windows (320 ms) of pre-roll, 3 (96 ms) of post-roll.
    assert segments(probs) == [(10, 33, False)]


def test_pre_roll_is_what_there_is_at_the_start_of_the_stream():
    assert segments([0.0] * 4 + [0.9] * 10 + [0.0] * 30) == [(0, 17, False)]


def test_blip_shorter_than_min_speech_is_dropped():
    probs = [0.0] * 20 + [0.9, 0.9] + [0.0] * 30
    assert segments(probs) == []
    assert segments(probs, min_speech_ms=64) == [(10, 25, False)]


def test_pause_shorter_than_min_silence_is_bridged():
    probs = [0.0] * 20 + [0.9] * 10 + [0.0] * 9 + [0.9] * 10 + [0.0] * 30
    assert segments(probs) == [(10, 52, False)]
    # One window more of pause (10 windows = 320 ms) ends the first segment.
    probs = [0.0] * 20 + [0.9] * 10 + [0.0] * 10 + [0.9] * 10 + [0.0] * 30
    assert segments(probs) == [(10, 33, False), (33, 53, False)]


def test_hysteresis_keeps_speech_between_the_thresholds():
    # 0.4 is below the start threshold (0.5) but above the end threshold (0.35).
    probs = [0.0] * 20 + [0.9] * 5 + [0.4] * 20 + [0.0] * 30
    assert segments(probs) == [(10, 48, False)]
    assert segments([0.0] * 20 + [0.4] * 20 + [0.0] * 30) == []


def test_the_thresholds_themselves_count_as_speech_and_not_as_a_pause():
    # A window exactly at the start threshold is speech; exactly at the end threshold is not
    # yet a pause (a pause begins below it).
    assert segments([0.0] * 20 + [0.5] * 10 + [0.0] * 30) == [(10, 33, False)]
    # ... and so it breaks a pause in progress (9 windows of pause, one at the threshold, 9 more).
    probs = [0.0] * 20 + [0.9] * 10 + [0.0] * 9 + [0.5] + [0.0] * 9 + [0.9] * 10 + [0.0] * 30
    assert segments(probs) == [(10, 62, False)]
    probs = [0.0] * 20 + [0.9] * 5 + [0.35] * 20 + [0.0] * 30
    assert segments(probs) == [(10, 48, False)]


def test_a_zero_threshold_stores_everything():
    segmenter = SpeechSegmenter(SegmenterSettings(**{**SETTINGS, "min_silence_ms": 0}), 0.0, 0.0)
    events = [e for _ in range(20) for e in segmenter.push(np.zeros(512, np.int16), 0.0)] + segmenter.flush()
    assert isinstance(events[0], SegmentOpened) and isinstance(events[-1], SegmentClosed)
    assert events[-1].end_sample == 20 * 512


def test_no_min_silence_ends_speech_at_the_first_quiet_window():
    probs = [0.0] * 20 + [0.9] * 10 + [0.0] + [0.9] * 10 + [0.0] * 30
    assert segments(probs, min_silence_ms=0, post_roll_ms=0, pre_roll_ms=0) == [(20, 30, False), (31, 41, False)]


def test_windows_between_the_thresholds_do_not_end_a_pause():
    probs = [0.0] * 20 + [0.9] * 10 + [0.1] + [0.4] * 12 + [0.0] * 30
    assert segments(probs) == [(10, 33, False)]


def test_long_talk_is_split_at_the_quietest_recent_window():
    probs = [0.9] * 400
    probs[150] = 0.6  # the quietest window of the last 5 s before the 5 s limit
    found = segments(probs, max_segment_s=5)
    assert found[0] == (0, 151, True)
    assert found[1][0] == 151
    assert all(end - start <= 157 for start, end, _ in found)  # 157 windows = 5 s
    assert found[-1] == (found[-1][0], 400, False)


def test_flush_keeps_the_open_segment():
    assert segments([0.0] * 5 + [0.9] * 10) == [(0, 15, False)]


def test_probability_statistics_of_a_segment():
    segmenter = SpeechSegmenter(SegmenterSettings(**SETTINGS), 0.5, 0.35)
    events = []
    for prob in [0.0] * 5 + [0.6, 1.0, 0.8] + [0.0] * 12:
        events += segmenter.push(np.zeros(512, np.int16), prob)
    closed = [e for e in events if isinstance(e, SegmentClosed)]
    assert len(closed) == 1
    assert closed[0].prob_max == 1.0
    # 5 pre-roll windows at 0, 3 speech, 3 post-roll at 0: (0.6 + 1.0 + 0.8) / 11.
    assert abs(closed[0].prob_mean - 2.4 / 11) < 1e-3


# The mechanisms around the detector: background level, adaptive threshold, onset and end search.

QUIET, LOUD = 30, 3000  # sample amplitudes: 40 dB apart


def stored(windows, **overrides):
    """Run the segmenter over (amplitude, probability) windows (a square wave of that
    amplitude) and return (first window, end window) of each stored segment."""
    settings = {**SETTINGS, "adaptive_threshold_min": None, "onset_margin_ms": None, "tail_margin_ms": None,
                **overrides}
    segmenter = SpeechSegmenter(SegmenterSettings(**settings), 0.5, 0.35)
    square = np.where(np.arange(512) % 2, 1, -1)
    events = []
    for amplitude, prob in windows:
        events += segmenter.push((square * amplitude).astype(np.int16), prob)
    events += segmenter.flush()
    found = []
    for event in events:
        if isinstance(event, SegmentOpened):
            start = event.start_sample // 512
        elif isinstance(event, SegmentClosed):
            found.append((start, event.end_sample // 512))
    return found


def test_level_of_a_full_scale_square_wave_is_3_db_above_a_full_scale_sine():
    assert level_db(np.full(512, 32767, np.int16)) == pytest.approx(10 * np.log10(2), abs=1e-3)
    assert level_db(np.zeros(512, np.int16)) == -100.0


def test_noise_floor_falls_at_once_and_rises_slowly():
    floor = NoiseFloor(rise_db_per_s=3.125)  # 0.1 dB per 32 ms window
    assert floor.update(-100.0) == -100.0  # nothing heard yet
    assert floor.update(-60.0) == -60.0
    assert floor.update(-20.0) == pytest.approx(-59.9)
    for _ in range(99):
        floor.update(-20.0)
    assert floor.level_db == pytest.approx(-50.0)  # 100 windows: 10 dB
    assert floor.update(-70.0) == -70.0
    assert floor.update(-100.0) == -70.0  # digital silence is not the room


def test_adaptive_threshold_follows_the_background_between_its_bounds():
    threshold = AdaptiveThreshold(highest=0.5, lowest=0.2, margin=0.2, time_s=0.32)  # weight 0.1
    assert threshold.value == 0.5  # before anything is known: as configured
    for _ in range(100):
        threshold.update(0.0)
    assert threshold.value == pytest.approx(0.2, abs=1e-3)  # quiet room: lowest
    for _ in range(100):
        threshold.update(0.15)
    assert threshold.value == pytest.approx(0.35, abs=1e-3)  # background + margin
    for _ in range(100):
        threshold.update(0.6)
    assert threshold.value == 0.5  # babble: never above the configured threshold
    assert AdaptiveThreshold(0.5, None, 0.2, 1.0).update(0.0) == 0.5  # null: fixed


def test_soft_speech_in_a_quiet_room_starts_once_the_background_is_known():
    soft = [(LOUD, 0.3)] * 10 + [(QUIET, 0.0)] * 30
    quiet = [(QUIET, 0.0)] * 40  # 1.28 s, against a background time of 0.32 s
    # At the start of the stream the threshold is still 0.5: the first soft word is not stored.
    found = stored(soft + quiet + soft, adaptive_threshold_min=0.2, adaptive_threshold_margin=0.2, background_s=0.32)
    assert found == [(80 - 10, 80 + 10 + 3)]  # 320 ms pre-roll, 96 ms post-roll
    assert stored(soft + quiet + soft) == []  # without adaptation 0.3 never starts speech


def test_adaptive_threshold_does_not_fall_in_babble():
    babble = [(LOUD, 0.3), (LOUD, 0.1)] * 100
    assert stored(babble, adaptive_threshold_min=0.2, adaptive_threshold_margin=0.2, background_s=0.32) == []


def test_end_threshold_keeps_its_ratio_to_the_lowered_start_threshold():
    # Start lowered to 0.2 (ratio 0.35/0.5 = 0.7: end below 0.14); 0.15 keeps speech going, 0.1 ends it.
    quiet = [(QUIET, 0.0)] * 40
    speech = [(LOUD, 0.3)] * 5 + [(LOUD, 0.15)] * 20 + [(QUIET, 0.1)] * 15
    found = stored(quiet + speech, adaptive_threshold_min=0.2, adaptive_threshold_margin=0.2, background_s=0.32)
    assert found == [(40 - 10, 40 + 25 + 3)]


def test_onset_search_keeps_the_speech_like_run_and_a_margin():
    finder = OnsetFinder(prob_floor=0.15, rise_db=6.0, bridge=3, onset_margin=2, tail_margin=2)
    quiet, rising, loud = Window(None, 0.0, -60.0), Window(None, 0.2, -58.0), Window(None, 0.0, -50.0)
    # Oldest first: 5 quiet, then 2 by probability and 1 by level (10 dB above a -60 dB floor).
    assert finder.onset([quiet] * 5 + [rising, rising, loud], floor_db=-60.0) == 3 + 2
    # A gap of 2 quiet windows (< bridge) is bridged; 3 are not.
    assert finder.onset([quiet] * 5 + [loud] + [quiet] * 2 + [loud], floor_db=-60.0) == 4 + 2
    assert finder.onset([quiet] * 5 + [loud] + [quiet] * 3 + [loud], floor_db=-60.0) == 1 + 2
    assert finder.onset([loud] * 4, floor_db=-60.0) == 4  # never more than is held
    assert finder.tail([rising, quiet, quiet, quiet, quiet, quiet], floor_db=-60.0) == 1 + 2


def test_segmenter_searches_the_pre_roll_for_the_onset():
    # 10 quiet windows, 3 rising in level (not yet probable), then speech.
    windows = [(QUIET, 0.0)] * 10 + [(LOUD, 0.0)] * 3 + [(LOUD, 0.9)] * 10 + [(QUIET, 0.0)] * 30
    assert stored(windows) == [(3, 26)]  # the whole 320 ms pre-roll
    assert stored(windows, onset_margin_ms=64) == [(13 - 3 - 2, 26)]


def test_segmenter_ends_where_speech_like_windows_end():
    # After speech, 2 windows are still loud (a fading word) before quiet.
    windows = [(QUIET, 0.0)] * 10 + [(LOUD, 0.9)] * 10 + [(LOUD, 0.0)] * 2 + [(QUIET, 0.0)] * 30
    assert stored(windows, post_roll_ms=320) == [(0, 30)]  # the whole post-roll
    assert stored(windows, post_roll_ms=320, tail_margin_ms=32) == [(0, 20 + 2 + 1)]
    assert stored(windows, post_roll_ms=32, tail_margin_ms=32) == [(0, 21)]  # never beyond post_roll
