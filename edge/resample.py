"""Anti-aliased rational resampling to 16 kHz, in numpy, usable on a stream.

Microphones that only offer 44.1 or 48 kHz are captured at their own rate and brought to
the detector's 16 kHz here. Dropping samples would fold everything above 8 kHz back into
the speech band, so this is a polyphase windowed-sinc filter instead.
"""

from __future__ import annotations

from math import gcd
from typing import Iterable, Iterator

import numpy as np

TARGET_RATE = 16000
TAPS_PER_PHASE = 48
KAISER_BETA = 8.0
# Passband edge as a fraction of the lower Nyquist frequency: leaves a transition band
# so that what survives above 8 kHz is attenuated by the Kaiser window's stop band.
CUTOFF_FRACTION = 0.9


class StreamingResampler:
    """Converts blocks of int16 samples at ``in_rate`` to ``out_rate``, keeping the
    filter history between blocks so that block boundaries leave no trace."""

    def __init__(self, in_rate: int, out_rate: int = TARGET_RATE):
        divisor = gcd(in_rate, out_rate)
        self.up = out_rate // divisor
        self.down = in_rate // divisor
        # An odd length whose centre falls on an output sample makes the delay a whole
        # number of output samples, so it can be removed exactly.
        half = (self.up * TAPS_PER_PHASE - 1) // 2 // self.down * self.down
        length = 2 * half + 1
        cutoff = CUTOFF_FRACTION * 0.5 * min(in_rate, out_rate) / (in_rate * self.up)
        k = np.arange(length) - half
        prototype = 2 * cutoff * np.sinc(2 * cutoff * k) * np.kaiser(length, KAISER_BETA)
        prototype *= self.up / prototype.sum()
        prototype = np.pad(prototype, (0, self.up * TAPS_PER_PHASE - length))
        # phases[p, i] multiplies input sample j0 - i for outputs whose phase is p.
        self._phases = prototype.reshape(TAPS_PER_PHASE, self.up).T.astype(np.float32)
        self._history = np.zeros(TAPS_PER_PHASE - 1, dtype=np.float32)
        self._consumed = 0  # input samples seen before the current history's end
        self._next_output = 0
        self.delay_out = half // self.down  # in output samples

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Return as many output samples as the input seen so far fully determines."""
        buffer = np.concatenate([self._history, samples.astype(np.float32)])
        base = self._consumed - len(self._history)  # absolute index of buffer[0]
        total = self._consumed + len(samples)
        # Output n needs input j0 = n*down // up; it must already have arrived.
        last = (total * self.up - 1) // self.down if total else -1
        outputs = np.arange(self._next_output, last + 1)
        result = np.empty(0, dtype=np.int16)
        if len(outputs):
            position = outputs * self.down
            newest = position // self.up - base
            phase = position % self.up
            taps = newest[:, None] - np.arange(TAPS_PER_PHASE)[None, :]
            valid = taps >= 0
            values = np.where(valid, buffer[np.clip(taps, 0, None)], 0.0)
            filtered = np.einsum("ij,ij->i", values, self._phases[phase])
            result = np.clip(np.round(filtered), -32768, 32767).astype(np.int16)
            self._next_output = last + 1
        keep = min(TAPS_PER_PHASE - 1, len(buffer))
        self._history = buffer[len(buffer) - keep :]
        self._consumed = total
        return result


def resample_blocks(blocks: Iterable[np.ndarray], rate: int) -> Iterator[np.ndarray]:
    """Resample a finite recording given in blocks, removing the filter's delay so that
    times in the output match times in the input."""
    if rate == TARGET_RATE:
        yield from blocks
        return
    resampler = StreamingResampler(rate)
    to_skip = resampler.delay_out
    seen = produced = 0
    for block in blocks:
        seen += len(block)
        out = resampler.process(block)
        skipped = min(to_skip, len(out))
        to_skip -= skipped
        produced += len(out) - skipped
        yield out[skipped:]
    # Zeros push the last real samples through the filter's delay line.
    tail = np.zeros(resampler.delay_out * resampler.down // resampler.up + TAPS_PER_PHASE, np.int16)
    expected = seen * resampler.up // resampler.down
    yield resampler.process(tail)[to_skip:][: max(expected - produced, 0)]


def resample_to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample a whole recording to 16 kHz (see resample_blocks)."""
    return np.concatenate([np.zeros(0, np.int16), *resample_blocks([samples], rate)])
