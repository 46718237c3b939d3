"""The noise suppressor in front of the detector: on hand-made signals (seeded noise, held
tones), then the real model on the labelled lesson clip under noise."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from bench.labels import window_truth
from edge.config import DenoiseSettings, Settings, settings_from_dict
from edge.denoise import HOP, NoiseSuppressor, SuppressedDetector
from edge.detector import make_detector
from edge.errors import EdgeError
from edge.vad import DEFAULT_MODEL, SileroVad, window_probabilities

from conftest import RATE, WINDOW


def suppressed(settings: DenoiseSettings, samples: np.ndarray, suppressor: NoiseSuppressor | None = None) -> np.ndarray:
    """The suppressor's output for ``samples``, in int16 units, moved back by its one-hop lag
    so that index i is the input's sample i."""
    suppressor = suppressor or NoiseSuppressor(settings)
    out = np.concatenate([suppressor(samples[i * WINDOW : (i + 1) * WINDOW]) for i in range(len(samples) // WINDOW)])
    return np.concatenate([out[HOP:], np.zeros(HOP)]) * 32768


def power_db(samples: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.asarray(samples, dtype=np.float64) ** 2)))


def tone_db(samples: np.ndarray, start_s: float, length_s: float, hz: float) -> float:
    """Power of the ``hz`` tone in a stretch of ``samples`` (Hann-windowed spectrum, +-20 Hz)."""
    piece = np.asarray(samples[int(start_s * RATE) : int((start_s + length_s) * RATE)], dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(piece * np.hanning(len(piece)))) ** 2
    frequencies = np.fft.rfftfreq(len(piece), 1 / RATE)
    return float(10 * np.log10(spectrum[abs(frequencies - hz) < 20].sum()))


@pytest.fixture
def white_noise() -> np.ndarray:
    return np.random.default_rng(11).normal(0, 1000, 3 * RATE).astype(np.int16)


def test_with_no_attenuation_allowed_the_detector_hears_the_input_one_hop_late():
    samples = np.random.default_rng(3).integers(-20000, 20000, 40 * WINDOW).astype(np.int16)
    out = suppressed(DenoiseSettings(max_attenuation_db=0.0), samples)
    # Square-root Hann frames at half overlap add up exactly; the first hop is the ramp-in.
    np.testing.assert_allclose(out[HOP : -HOP], samples[HOP : -HOP], atol=0.05)


def test_steady_noise_is_turned_down_by_the_configured_attenuation(white_noise):
    after_learning = slice(RATE, None)  # the noise is known after noise_window_s (0.5 s)
    for attenuation in (15.0, 6.0):
        out = suppressed(DenoiseSettings(max_attenuation_db=attenuation), white_noise)
        turned_down = power_db(white_noise[after_learning]) - power_db(out[after_learning])
        assert attenuation - 0.5 <= turned_down <= attenuation + 0.5, (attenuation, turned_down)


def held_tone() -> np.ndarray:
    """A 1 kHz tone 20 dB above white noise from 2 s to 5 s of a 6 s signal."""
    t = np.arange(6 * RATE) / RATE
    tone = 3000 * np.sin(2 * np.pi * 1000 * t) * ((t >= 2) & (t < 5))
    return (np.random.default_rng(5).normal(0, 300, len(t)) + tone).astype(np.int16)


def test_a_frequency_held_for_the_noise_window_becomes_noise():
    samples = held_tone()
    out = suppressed(DenoiseSettings(noise_window_s=0.5), samples)
    # Fresh, it is heard as it is (a vowel, a whistle) ...
    for start in (2.05, 2.2):
        assert abs(tone_db(out, start, 0.1, 1000) - tone_db(samples, start, 0.1, 1000)) < 1.0, start
    # ... held past the window (0.5 s, tracked in sixths: at most 0.58 s), it is the room's hum.
    for start in (2.6, 3.5, 4.8):
        assert tone_db(samples, start, 0.1, 1000) - tone_db(out, start, 0.1, 1000) > 14.0, start


def test_a_longer_noise_window_keeps_a_held_frequency_longer():
    samples = held_tone()
    out = suppressed(DenoiseSettings(noise_window_s=4.0), samples)
    for start in (2.6, 3.5, 4.8):
        assert abs(tone_db(out, start, 0.1, 1000) - tone_db(samples, start, 0.1, 1000)) < 1.0, start


def test_until_one_noise_window_is_heard_the_audio_passes_unchanged(white_noise):
    # The first frames may be speech (a start mid-sentence): they must not become the noise.
    out = suppressed(DenoiseSettings(noise_window_s=0.5), white_noise)
    learning = slice(HOP, int(0.4 * RATE))  # the window is tracked in sixths: 30 hops of 16 ms
    np.testing.assert_allclose(out[learning], white_noise[learning], atol=0.05)
    assert power_db(white_noise[RATE:]) - power_db(out[RATE:]) > 14.0


def test_reset_forgets_the_room(white_noise):
    settings = DenoiseSettings()
    suppressor = NoiseSuppressor(settings)
    suppressed(settings, held_tone(), suppressor)
    suppressor.reset()
    np.testing.assert_array_equal(suppressed(settings, white_noise, suppressor), suppressed(settings, white_noise))


def test_the_voice_band_gain_says_how_far_the_detector_heard_it_turned_down(white_noise):
    suppressor = NoiseSuppressor(DenoiseSettings(max_attenuation_db=15.0))
    suppressed(DenoiseSettings(), white_noise, suppressor)
    assert -15.0 <= suppressor.gain_db < -12.0


def test_the_model_hears_speech_under_steady_noise_it_misses_without_suppression(lesson, lesson_speech):
    samples = lesson.astype(np.float64)
    speech = window_truth(lesson_speech, len(samples) // WINDOW)
    away = ~np.convolve(speech, np.ones(31), "same").astype(bool)  # over 0.5 s from labelled speech
    speech_samples = np.repeat(speech, WINDOW)
    speech_power = np.mean(samples[: len(speech_samples)][speech_samples] ** 2)
    noise = np.random.default_rng(7).normal(0, 1, len(samples)) * np.sqrt(speech_power / 10 ** (-5 / 10))
    noisy = np.clip(samples + noise, -32768, 32767).astype(np.int16)  # speech 5 dB under white noise
    plain = window_probabilities(SileroVad(DEFAULT_MODEL), noisy)
    heard = window_probabilities(make_detector(Settings()), noisy)
    assert np.mean(heard[speech] >= 0.5) >= np.mean(plain[speech] >= 0.5) + 0.1
    # The noise that was turned down is not taken for speech.
    assert np.mean(heard[away] >= 0.5) <= 0.05


def room(seed: int, windows: int) -> np.ndarray:
    """Noise with a held tone and loud bursts coming and going: every part of the suppressor
    (learning, subwindow ends, gains between the floor and 1) has work in it."""
    rng = np.random.default_rng(seed)
    t = np.arange(windows * WINDOW) / RATE
    bursts = rng.normal(0, 6000, len(t)) * (np.sin(2 * np.pi * rng.uniform(0.5, 3) * t) > 0.3)
    tone = 2000 * np.sin(2 * np.pi * rng.uniform(200, 3000) * t) * (t > rng.uniform(0, 1))
    return np.clip(rng.normal(0, 500, len(t)) + bursts + tone, -32768, 32767).astype(np.int16)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), blocks=st.lists(st.integers(1, 9), min_size=1, max_size=6),
       noise_window_s=st.sampled_from([0.1, 0.5, 1.3]))
def test_how_the_audio_is_cut_into_blocks_does_not_change_what_the_detector_hears(seed, blocks, noise_window_s):
    # The recorder hands the suppressor a capture block at a time, a file many windows at a
    # time, `edge plot` one window: all must hear the same.
    samples = room(seed, 90)
    settings = DenoiseSettings(noise_window_s=noise_window_s)
    window_by_window = NoiseSuppressor(settings)
    one_at_a_time = [window_by_window(window) for window in samples.reshape(-1, WINDOW)]
    in_blocks, heard, start = NoiseSuppressor(settings), [], 0
    for size in blocks * 90:
        if start == len(samples):
            break
        heard.append(in_blocks(samples[start:start + size * WINDOW]))
        start = min(len(samples), start + size * WINDOW)
    # The same to the last bits: only the order of additions differs (the smoothing's product).
    np.testing.assert_allclose(np.concatenate(heard), np.concatenate(one_at_a_time), rtol=0, atol=1e-6)
    assert abs(in_blocks.gain_db - window_by_window.gain_db) < 1e-9


def test_a_detector_scores_a_block_as_it_scores_its_windows_one_by_one():
    samples = room(4, 64)
    detector = make_detector(Settings())
    blockwise = window_probabilities(detector, samples)
    detector.reset()
    np.testing.assert_allclose(blockwise, [detector(window) for window in samples.reshape(-1, WINDOW)], atol=1e-5)


def test_make_detector_puts_the_suppressor_in_front_unless_disabled():
    detector = make_detector(Settings())
    assert isinstance(detector, SuppressedDetector)
    assert detector.sha256 == detector.detector.sha256 and detector.model_path == DEFAULT_MODEL
    plain = make_detector(settings_from_dict({"denoise": {"enabled": False}}))
    assert isinstance(plain, SileroVad)


def test_a_detector_reset_also_forgets_the_room():
    detector = make_detector(Settings())
    samples = held_tone()
    first = window_probabilities(detector, samples)  # resets before it starts, like the recorder
    np.testing.assert_array_equal(window_probabilities(detector, samples), first)


def test_suppressed_detector_refuses_a_wrong_window_like_the_model():
    with pytest.raises(EdgeError, match=r"expected one window of 512 samples, got shape \(300,\)"):
        make_detector(Settings())(np.zeros(300, np.int16))


@pytest.mark.parametrize("section, message", [
    ({"max_attenuation_db": 50}, r"denoise\.max_attenuation_db must be between 0\.0 and 40\.0, got 50"),
    ({"noise_window": 1}, r"unknown key 'denoise\.noise_window' \(expected one of: enabled, max_attenuation_db, noise_window_s\)"),
    ({"enabled": "yes"}, r"denoise\.enabled must be true or false, got 'yes'"),
])
def test_bad_denoise_settings_are_refused_by_name(section, message):
    with pytest.raises(EdgeError, match=message):
        settings_from_dict({"denoise": section}, "edge.yaml")
