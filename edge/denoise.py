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

Frames of 512 samples with hops of 256 and square-root Hann windows on both sides add up
to the input exactly when every gain is 1, so the detector's 512-sample window of suppressed
audio lags the microphone's by one hop (16 ms).
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np

from .config import DenoiseSettings
from .vad import SileroVad, check_window

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
# Where a voice's energy lies (telephone band): what `gain_db` averages over.
VOICE_BAND = slice(round(300 * FRAME / SAMPLE_RATE), round(3400 * FRAME / SAMPLE_RATE) + 1)


class NoiseSuppressor:
    """Streaming suppression, one 512-sample window at a time: ``window`` int16 samples in,
    float32 samples in [-1, 1] out (the input 256 samples earlier, suppressed)."""

    def __init__(self, settings: DenoiseSettings):
        self.floor_gain = 10 ** (-settings.max_attenuation_db / 20)
        # The minimum is tracked in SUBWINDOWS pieces so that the window slides in steps of a
        # piece without keeping every hop's power.
        self.hops_per_subwindow = max(1, round(settings.noise_window_s * SAMPLE_RATE / HOP / SUBWINDOWS))
        self.learning_hops = SUBWINDOWS * self.hops_per_subwindow
        self.analysis = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(FRAME) / FRAME))
        self._frames = np.empty((2, FRAME))
        self.reset()

    def reset(self) -> None:
        """Forget the room: a new stream's noise is learnt afresh."""
        self._samples = np.zeros(HOP + FRAME)  # the last hop of the previous window, then this window
        self._overlap = np.zeros(HOP)
        self._smoothed: np.ndarray | None = None
        self._running_min: np.ndarray | None = None  # minimum within the current subwindow
        self._past_mins: deque = deque(maxlen=SUBWINDOWS)
        self._past_min: np.ndarray | None = None  # minimum over _past_mins
        self._hops = 0
        self._cleaned = np.zeros(FRAME // 2 + 1)  # |gain * spectrum|^2 of the previous hop
        self._gains = np.ones((2, FRAME // 2 + 1))  # of the last window's two hops

    def noise_power(self) -> np.ndarray:
        """The current noise estimate per frequency bin (power of the windowed frame)."""
        lowest = self._running_min if self._past_min is None else np.minimum(self._running_min, self._past_min)
        return np.maximum(MINIMUM_BIAS * lowest, 1e-3)

    def _gain(self, power: np.ndarray) -> np.ndarray:
        """The gain of each frequency bin for the next hop, whose power spectrum is ``power``."""
        if self._smoothed is None:
            self._smoothed = power.copy()
            self._running_min = power.copy()
        else:
            self._smoothed = POWER_SMOOTHING * self._smoothed + (1 - POWER_SMOOTHING) * power
            np.minimum(self._running_min, self._smoothed, out=self._running_min)
        self._hops += 1
        if self._hops % self.hops_per_subwindow == 0:
            self._past_mins.append(self._running_min)
            self._past_min = np.min(self._past_mins, axis=0)
            self._running_min = self._smoothed.copy()
        if self._hops < self.learning_hops:
            # Until one noise window has been heard, the minimum is only what the first
            # frames held, which may be speech (a stream that starts mid-sentence): pass it on.
            self._cleaned = power
            return np.ones_like(power)
        noise = self.noise_power()
        prior_snr = (DECISION_DIRECTED * self._cleaned / noise
                     + (1 - DECISION_DIRECTED) * np.maximum(power / noise - 1, 0))
        gain = np.maximum(prior_snr / (1 + prior_snr), self.floor_gain)
        self._cleaned = gain * gain * power
        return gain

    @property
    def gain_db(self) -> float:
        """Mean gain of the last window over the voice band (300-3400 Hz), in dB: how much
        quieter the detector heard it (for `edge plot`)."""
        return float(20 * np.log10(self._gains[:, VOICE_BAND].mean()))

    def __call__(self, window: np.ndarray) -> np.ndarray:
        # Buffers are reused and nothing is computed that only `edge plot` reads: per window
        # the cost is mostly numpy's fixed cost per call, not arithmetic on 257 bins.
        samples, frames, gains = self._samples, self._frames, self._gains
        samples[:HOP] = samples[FRAME:]
        samples[HOP:] = window
        # The window's two hops: the frame ending halfway through it and the frame ending with it.
        np.multiply(samples[:FRAME], self.analysis, out=frames[0])
        np.multiply(samples[HOP:], self.analysis, out=frames[1])
        spectra = np.fft.rfft(frames, axis=1)
        power = spectra.real**2 + spectra.imag**2
        gains[0] = self._gain(power[0])
        gains[1] = self._gain(power[1])
        synthesized = np.fft.irfft(gains * spectra, FRAME, axis=1) * self.analysis
        out = np.empty(FRAME)
        out[:HOP] = self._overlap + synthesized[0, :HOP]
        out[HOP:] = synthesized[0, HOP:] + synthesized[1, :HOP]
        self._overlap = synthesized[1, HOP:]
        return (out * INT16_SCALE).astype(np.float32)


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
        return self.detector(self.suppressor(window))

    @property
    def model_path(self) -> Path:
        return self.detector.model_path

    @property
    def runtime(self) -> str:
        return self.detector.runtime

    @property
    def sha256(self) -> str:
        return self.detector.sha256
