"""What the detector hears: the microphone's audio with its steady background turned down.

Silero hears a soft voice under an air conditioner, rain or a held chord as noise: the
utterances it misses get a highest probability of 0.04-0.3 (bench/results). A classic
single-channel suppressor in front of it lifts them out: per frequency, the noise is the
quietest the smoothed power has been over the last ``noise_window_s`` (minimum statistics,
Martin 2001: a voice moves from frequency to frequency within a syllable or two and pauses
between words, while a fan, rain or a held note stays put), and each
frequency is scaled by a Wiener gain from its estimated speech-to-noise ratio (decision-directed,
Ephraim and Malah 1984), never by less than ``max_attenuation_db``, so what is left of the
noise stays smooth instead of turning into the warbling "musical noise" that sounds like
voices. Until one ``noise_window_s`` has been heard after a start the audio is passed on as it
is, since the first frames may be speech. Only the detector hears this: segments store the
microphone's audio untouched.

A capture block (four windows, eight hops) is taken in one call: the transforms, the
smoothing and everything but the gain's recursion from hop to hop are computed for all its
hops at once, since per window the cost is numpy's fixed cost per call, not arithmetic on
257 bins. The output is the same however the audio is cut into calls.

Frames of 512 samples with hops of 256 and square-root Hann windows on both sides add up
to the input exactly when every gain is 1, so the detector's 512-sample window of suppressed
audio lags the microphone's by one hop (16 ms).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import DenoiseSettings
from .vad import SileroVad, check_window, check_windows

FRAME = 512
HOP = 256
SAMPLE_RATE = 16000
# The periodogram of noise scatters by a factor of ten from frame to frame; smoothed over
# about five hops (80 ms) its minimum is a steadier estimate, and a minimum is still lower
# than the mean by about this factor, which is put back (Martin 2001, Fig. 3, for ~10 frames).
POWER_SMOOTHING = 0.8
MINIMUM_BIAS = 2.0
# Decision-directed weight: how much of the previous hop's cleaned power stands for this
# hop's speech power. Near 1 keeps the gains from flickering with the noise.
DECISION_DIRECTED = 0.98
SUBWINDOWS = 6
INT16_SCALE = 1 / 32768
# Longer inputs (a file) are taken this many windows at a time: the smoothing's product
# grows with the square of the hops in one pass.
WINDOWS_PER_PASS = 16
# Where a voice's energy lies (telephone band): what `gain_db` averages over.
VOICE_BAND = slice(round(300 * FRAME / SAMPLE_RATE), round(3400 * FRAME / SAMPLE_RATE) + 1)


class NoiseSuppressor:
    """Streaming suppression: int16 samples in, any number of whole 512-sample windows at a
    time, float32 samples in [-1, 1] out (the input 256 samples earlier, suppressed)."""

    def __init__(self, settings: DenoiseSettings):
        self.floor_gain = 10 ** (-settings.max_attenuation_db / 20)
        # The minimum is tracked in SUBWINDOWS pieces so that the window slides in steps of a
        # piece without keeping every hop's power.
        self.hops_per_subwindow = max(1, round(settings.noise_window_s * SAMPLE_RATE / HOP / SUBWINDOWS))
        self.learning_hops = SUBWINDOWS * self.hops_per_subwindow
        self.analysis = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(FRAME) / FRAME))
        self.synthesis = self.analysis * INT16_SCALE  # the same window, giving samples in [-1, 1]
        self._smoothing_weights: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the room: a new stream's noise is learnt afresh."""
        self._last_hop = np.zeros(HOP)  # input samples of the previous call's last hop
        self._overlap = np.zeros(HOP)
        self._smoothed: np.ndarray | None = None  # of the last hop
        self._running_min: np.ndarray | None = None  # minimum within the current subwindow
        self._subwindow_mins = np.full((SUBWINDOWS, FRAME // 2 + 1), np.inf)  # of the last ones, in a ring
        self._past_min = np.full(FRAME // 2 + 1, np.inf)  # minimum over _subwindow_mins
        self._hops = 0
        self._last_power = np.zeros(FRAME // 2 + 1)  # of the last hop
        self._last_gain = np.ones(FRAME // 2 + 1)  # of the last hop
        self._last_gains = np.ones((2, FRAME // 2 + 1))  # of the last window's two hops

    def _smoothing(self, hops: int) -> tuple[np.ndarray, np.ndarray]:
        """The recursive smoothing over ``hops`` hops as one product: smoothed = weights @
        power + decay * (the smoothed power before them)."""
        if hops not in self._smoothing_weights:
            age = np.arange(hops)[:, None] - np.arange(hops)[None, :]
            weights = np.where(age >= 0, (1 - POWER_SMOOTHING) * POWER_SMOOTHING ** np.maximum(age, 0), 0.0)
            self._smoothing_weights[hops] = weights, POWER_SMOOTHING ** np.arange(1, hops + 1)[:, None]
        return self._smoothing_weights[hops]

    def _lowest(self, smoothed: np.ndarray) -> np.ndarray:
        """The minimum of the smoothed power over the noise window as of each hop."""
        lowest = np.empty_like(smoothed)
        for hop, power in enumerate(smoothed):
            np.minimum(self._running_min, power, out=self._running_min)
            self._hops += 1
            if self._hops % self.hops_per_subwindow == 0:
                # The subwindow ends with this hop, which already sees the minimum move on.
                self._subwindow_mins[self._hops // self.hops_per_subwindow % SUBWINDOWS] = self._running_min
                self._subwindow_mins.min(axis=0, out=self._past_min)
                self._running_min[:] = power
            np.minimum(self._running_min, self._past_min, out=lowest[hop])
        return lowest

    def _gains(self, power: np.ndarray) -> np.ndarray:
        """The gain of each frequency bin of each hop, whose power spectra are ``power``."""
        if self._smoothed is None:
            self._smoothed, self._running_min = power[0], power[0].copy()
        weights, decay = self._smoothing(len(power))
        smoothed = weights @ power
        smoothed += decay * self._smoothed
        self._smoothed = smoothed[-1]
        learning = max(0, min(len(power), self.learning_hops - 1 - self._hops))
        noise = self._lowest(smoothed)
        np.multiply(noise, MINIMUM_BIAS, out=noise)
        np.maximum(noise, 1e-3, out=noise)
        # The decision-directed estimate, prior = DD * (gain before)^2 * (power before) / noise
        # + (1 - DD) * max(power / noise - 1, 0): all but the gain before for every hop at once.
        fresh = power / noise
        fresh -= 1
        np.maximum(fresh, 0, out=fresh)
        fresh *= 1 - DECISION_DIRECTED
        carried = np.concatenate((self._last_power[None], power[:-1]))
        carried *= DECISION_DIRECTED
        carried /= noise
        gains = np.empty_like(power)
        # Until one noise window has been heard, the minimum is only what the first frames
        # held, which may be speech (a stream that starts mid-sentence): passed on as it is.
        gains[:learning] = 1
        before = gains[learning - 1] if learning else self._last_gain
        plus_one = np.empty(power.shape[1])
        for hop in range(learning, len(power)):
            prior = gains[hop]
            np.multiply(before, before, out=prior)
            prior *= carried[hop]
            prior += fresh[hop]
            np.add(prior, 1, out=plus_one)
            np.divide(prior, plus_one, out=prior)
            np.maximum(prior, self.floor_gain, out=prior)
            before = prior
        self._last_power, self._last_gain = power[-1], gains[-1]
        return gains

    @property
    def gain_db(self) -> float:
        """Mean gain of the last window over the voice band (300-3400 Hz), in dB: how much
        quieter the detector heard it (for `edge plot`)."""
        return float(20 * np.log10(self._last_gains[:, VOICE_BAND].mean()))

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        most = WINDOWS_PER_PASS * FRAME
        if len(samples) > most:
            return np.concatenate([self(samples[start:start + most]) for start in range(0, len(samples), most)])
        halves = np.concatenate((self._last_hop, samples)).reshape(-1, HOP)
        self._last_hop = halves[-1]
        frames = np.concatenate((halves[:-1], halves[1:]), axis=1)  # the frames ending at each hop
        frames *= self.analysis
        spectra = np.fft.rfft(frames, axis=1)
        power = spectra.real**2 + spectra.imag**2
        gains = self._gains(power)
        self._last_gains = gains[-2:]
        spectra *= gains
        synthesized = np.fft.irfft(spectra, FRAME, axis=1)
        synthesized *= self.synthesis
        out = np.empty((len(synthesized), HOP), dtype=np.float32)
        np.add(synthesized[0, :HOP], self._overlap, out=out[0])
        np.add(synthesized[1:, :HOP], synthesized[:-1, HOP:], out=out[1:])
        self._overlap = synthesized[-1, HOP:]
        return out.reshape(-1)


class SuppressedDetector:
    """A detector that hears the audio through a NoiseSuppressor: the same calls as SileroVad."""

    WINDOW = FRAME
    SAMPLE_RATE = SAMPLE_RATE

    def __init__(self, suppressor: NoiseSuppressor, detector: SileroVad):
        self.suppressor = suppressor
        self.detector = detector

    def reset(self) -> None:
        self.suppressor.reset()
        self.detector.reset()

    def __call__(self, window: np.ndarray) -> float:
        check_window(window, self.model_path)
        return float(self.probabilities(window)[0])

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """The speech probability of each window of ``samples`` (whole windows, a block at a
        time: the suppressor's cost per call is shared by all of them)."""
        check_windows(samples, self.model_path)
        return self.detector.probabilities(self.suppressor(samples))

    @property
    def model_path(self) -> Path:
        return self.detector.model_path

    @property
    def runtime(self) -> str:
        return self.detector.runtime

    @property
    def sha256(self) -> str:
        return self.detector.sha256
