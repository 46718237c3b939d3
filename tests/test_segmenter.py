"""SpeechSegmenter on made-up probability sequences: every rule, one window = 32 ms."""

from __future__ import annotations

import numpy as np

from edge.config import SegmenterSettings
from edge.segmenter import SegmentAudio, SegmentClosed, SegmentOpened, SpeechSegmenter

SETTINGS = dict(min_speech_ms=96, min_silence_ms=320, pre_roll_ms=320, post_roll_ms=96, max_segment_s=300)


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
