"""The resampler at the rates microphones and files come in (Hypothesis): output length, delay,
a tone's frequency and amplitude, and blocks of any size giving the same samples."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from edge.resample import TARGET_RATE, StreamingResampler, resample_blocks, resample_to_16k

RATES = [8000, 22050, 32000, 44100, 48000]
TOLERANCE = 4  # int16 steps, of a tone of amplitude 8000 (0.05 %)


def tone(frequency, rate, count, amplitude=8000.0, phase=0.0):
    t = np.arange(count) / rate
    return np.round(amplitude * np.sin(2 * np.pi * frequency * t + phase)).astype(np.int16)


@st.composite
def tones(draw):
    rate = draw(st.sampled_from(RATES))
    # Within the flat passband: up to half the lower Nyquist frequency (4 kHz at 16 kHz, the
    # speech band); above it the filter's transition band starts to cut (-5 % at 5.6 kHz).
    frequency = draw(st.floats(100.0, 0.25 * min(rate, TARGET_RATE)))
    seconds = draw(st.floats(0.1, 0.6))
    phase = draw(st.floats(0.0, 2 * np.pi))
    return rate, frequency, int(rate * seconds), phase


def splits(count, cuts):
    edges = sorted({0, count, *(c % (count + 1) for c in cuts)})
    return list(zip(edges, edges[1:]))


@settings(max_examples=60, deadline=None)
@given(case=tones())
def test_a_tone_keeps_its_frequency_amplitude_and_timing(case):
    rate, frequency, count, phase = case
    out = resample_to_16k(tone(frequency, rate, count, phase=phase), rate)
    assert len(out) == count * TARGET_RATE // rate
    expected = tone(frequency, TARGET_RATE, len(out), phase=phase)
    # Away from the edges (where the filter sees the zeros around the recording), the output
    # is the same tone sampled at 16 kHz: no delay, no change of gain or frequency.
    edge = 100
    error = np.abs(out[edge:-edge].astype(int) - expected[edge:-edge])
    assert error.max() <= TOLERANCE, f"{rate} Hz, {frequency:.0f} Hz tone: off by {error.max()}"


@settings(max_examples=60, deadline=None)
@given(rate=st.sampled_from(RATES), count=st.integers(0, 6000),
       cuts=st.lists(st.integers(0, 6000), max_size=12), seed=st.integers(0, 2**32 - 1))
def test_blocks_of_any_size_give_the_same_samples_as_one_block(rate, count, cuts, seed):
    samples = np.random.default_rng(seed).integers(-20000, 20000, count).astype(np.int16)
    whole = StreamingResampler(rate).process(samples)
    streamed = StreamingResampler(rate)
    pieces = [streamed.process(samples[a:b]) for a, b in splits(count, cuts)]
    joined = np.concatenate([np.zeros(0, np.int16), *pieces])
    np.testing.assert_array_equal(joined, whole)
    # Every output that the input seen so far determines, and no more.
    assert len(whole) == -(-count * TARGET_RATE // rate)
    blocks = list(resample_blocks([samples[a:b] for a, b in splits(count, cuts)], rate))
    assert sum(len(b) for b in blocks) == count * TARGET_RATE // rate


@settings(max_examples=30, deadline=None)
@given(case=tones())
def test_the_streaming_delay_is_the_one_it_reports(case):
    """The microphone path streams without removing the delay: recording times rely on it."""
    rate, frequency, count, phase = case
    resampler = StreamingResampler(rate)
    out = resampler.process(tone(frequency, rate, count, phase=phase))
    delay = resampler.delay_out
    expected = tone(frequency, TARGET_RATE, len(out) - delay, phase=phase)
    edge = 100
    aligned = out[delay:].astype(int)
    assert len(aligned) > 2 * edge
    assert np.abs(aligned[edge:-edge] - expected[edge:-edge]).max() <= TOLERANCE


@given(rate=st.sampled_from(RATES))
def test_sixteen_khz_passes_through_untouched(rate):
    samples = np.arange(-500, 500, dtype=np.int16)
    assert np.array_equal(resample_to_16k(samples, TARGET_RATE), samples)
    assert len(resample_to_16k(samples, rate)) == len(samples) * TARGET_RATE // rate


@settings(max_examples=20, deadline=None)
@given(rate=st.sampled_from(RATES), count=st.integers(0, 3000))
def test_output_is_int16_whatever_the_input_length(rate, count):
    samples = np.zeros(count, np.int16)
    assert resample_to_16k(samples, rate).dtype == np.int16
    resampler = StreamingResampler(rate)
    assert resampler.process(samples).dtype == np.int16
    assert resampler.process(samples[:0]).dtype == np.int16


@settings(max_examples=20, deadline=None)
@given(rate=st.sampled_from(RATES), period_ms=st.floats(2.0, 30.0))
def test_full_scale_input_saturates_and_never_wraps_around(rate, period_ms):
    """A full-scale square wave overshoots at its edges (the filter is band-limited): the
    overshoot must stop at the int16 limits, not wrap to the other sign. Elsewhere the
    resampler is linear: full scale is twice half scale."""
    period = max(2, int(rate * period_ms / 1000))
    square = np.where((np.arange(rate // 4) // (period // 2 or 1)) % 2 == 0, 1, -1)
    full = resample_to_16k((32767 * square).astype(np.int16), rate).astype(int)
    twice_half = 2 * resample_to_16k((16383 * square).astype(np.int16), rate).astype(int)
    above, below = twice_half > 32767 + 8, twice_half < -32768 - 8
    assert np.all(full[above] == 32767) and np.all(full[below] == -32768)
    inside = ~(above | below) & (np.abs(twice_half) < 32767 - 8)
    assert np.abs(full[inside] - twice_half[inside]).max(initial=0) <= 8
