"""SpeechSegmenter on arbitrary probability sequences and settings (Hypothesis): whatever the
detector says, segments are well-formed, never overlap, keep a bounded pre- and post-roll,
hold every window of their span exactly once, and keep every run of confident speech."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, example, given, settings, strategies as st

from edge.config import SegmenterSettings
from edge.segmenter import WINDOW, SegmentAudio, SegmentClosed, SegmentOpened, SpeechSegmenter, frames

THRESHOLD, NEG_THRESHOLD = 0.5, 0.35

optional_ms = st.one_of(st.none(), st.integers(0, 400))
segmenter_settings = st.builds(
    SegmenterSettings,
    min_speech_ms=st.integers(0, 300), min_silence_ms=st.integers(0, 1200),
    pre_roll_ms=st.integers(0, 1000), post_roll_ms=st.integers(0, 600),
    speech_bridge_ms=st.integers(0, 400), onset_margin_ms=optional_ms, tail_margin_ms=optional_ms,
    adaptive_threshold_min=st.one_of(st.none(), st.floats(0.05, 0.5)),
    background_s=st.floats(0.1, 5.0), max_segment_s=st.floats(5.0, 8.0))

# Runs of windows at one probability and level, as speech and pauses come in runs.
runs = st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 60), st.sampled_from([30, 300, 3000])),
                min_size=1, max_size=25)


def run_segmenter(config, probs, levels):
    """Segments as dicts: first window, end window, speech window, windows held, split, probs."""
    segmenter = SpeechSegmenter(config, THRESHOLD, NEG_THRESHOLD)
    events = []
    for index, (prob, level) in enumerate(zip(probs, levels)):
        frame = np.full(WINDOW, level, np.int16)
        frame[0] = index  # each window says which it is
        events += segmenter.push(frame, prob)
    events += segmenter.flush()
    found, current = [], None
    for event in events:
        if isinstance(event, SegmentOpened):
            assert current is None, "a segment opened inside another"
            assert event.start_sample % WINDOW == 0 and event.speech_sample % WINDOW == 0
            current = {"start": event.start_sample // WINDOW, "speech": event.speech_sample // WINDOW,
                       "audio": [event.audio]}
        elif isinstance(event, SegmentAudio):
            assert current is not None, "audio outside a segment"
            current["audio"].append(event.audio)
        else:
            assert isinstance(event, SegmentClosed) and current is not None, "a close without an open"
            audio = np.concatenate(current["audio"])
            assert len(audio) % WINDOW == 0
            current.update(end=event.end_sample // WINDOW, speech_end=event.speech_end_sample // WINDOW,
                           windows=audio[::WINDOW].tolist(), split=event.split,
                           prob_mean=event.prob_mean, prob_max=event.prob_max)
            found.append(current)
            current = None
    assert current is None, "flush left a segment open"
    assert not segmenter.is_open
    return found


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=segmenter_settings, spans=runs)
def test_segments_are_well_formed_whatever_the_probabilities(config, spans):
    probs = [p for p, n, _ in spans for _ in range(n)]
    levels = [level for _, n, level in spans for _ in range(n)]
    found = run_segmenter(config, probs, levels)
    lowest_start = min(THRESHOLD, config.adaptive_threshold_min or THRESHOLD)
    previous_end, previous_split = 0, False
    for segment in found:
        start, end = segment["start"], segment["end"]
        # Every window of its span exactly once, in order: nothing lost, nothing stored twice.
        assert segment["windows"] == list(range(start, end))
        assert 0 <= start < end <= len(probs)
        assert start >= previous_end, "segments overlap"
        if previous_split:
            assert start == previous_end, "a split lost audio between its parts"
            assert segment["speech"] == start
        else:
            # Pre-roll: back from the first confident window, at most pre_roll_ms of it.
            assert start <= segment["speech"] <= start + frames(config.pre_roll_ms)
            assert probs[segment["speech"]] >= lowest_start
        assert end - start <= frames(config.max_segment_s * 1000)
        if not segment["split"]:
            assert segment["speech"] <= segment["speech_end"] <= end
            assert end - segment["speech_end"] <= frames(config.post_roll_ms)
        kept = probs[start:end]
        assert segment["prob_max"] == round(max(kept), 4)
        assert abs(segment["prob_mean"] - sum(kept) / len(kept)) <= 5e-5 + 1e-9
        previous_end, previous_split = end, segment["split"]


@settings(max_examples=150, deadline=None)
@given(config=segmenter_settings, spans=runs)
def test_confident_speech_is_always_kept(config, spans):
    """A run of windows at or above the threshold as long as min_speech_ms is never dropped."""
    probs = [p for p, n, _ in spans for _ in range(n)]
    levels = [level for _, n, level in spans for _ in range(n)]
    found = run_segmenter(config, probs, levels)
    stored = set()
    for segment in found:
        stored.update(range(segment["start"], segment["end"]))
    needed = max(frames(config.min_speech_ms), 1)
    run = []
    for index, prob in enumerate(probs + [0.0]):
        if prob >= THRESHOLD:
            run.append(index)
            continue
        if len(run) >= needed:
            missing = [i for i in run if i not in stored]
            assert not missing, f"confident speech at windows {missing} was not stored"
        run = []


@settings(max_examples=60, deadline=None)
@given(spans=runs)
def test_silence_alone_never_makes_a_segment(spans):
    probs = [min(p, NEG_THRESHOLD * 0.99) * 0.2 for p, n, _ in spans for _ in range(n)]
    levels = [level for _, n, level in spans for _ in range(n)]
    assert run_segmenter(SegmenterSettings(adaptive_threshold_min=None), probs, levels) == []


@example(ms=32.01)  # a hair over one window: two, or the setting is cut short
@example(ms=64.0)
@example(ms=0.0)
@given(ms=st.floats(min_value=0.001, max_value=3_600_000))  # a thousandth of a millisecond at least
def test_a_duration_setting_takes_the_fewest_whole_windows_that_cover_it(ms):
    windows = frames(ms)
    window_ms = WINDOW * 1000 / 16000
    assert windows * window_ms >= ms * (1 - 1e-12)
    assert (windows - 1) * window_ms < ms
