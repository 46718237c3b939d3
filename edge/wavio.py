"""Reading input WAV files as 16 kHz mono int16, the only format the detector takes."""

from __future__ import annotations

import struct
import wave
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import EdgeError
from .resample import TARGET_RATE, resample_blocks

BLOCK_FRAMES = 1 << 16
MIN_RATE, MAX_RATE = 8000, 384000
"""The sample rates of WAV files taken, in Hz: telephone to studio."""
# What the wave module raises on damaged files (RuntimeError and struct.error on chunk sizes
# that point outside the file).
UNREADABLE = (wave.Error, EOFError, OSError, RuntimeError, struct.error)


@contextmanager
def _open_pcm16(path: Path):
    try:
        wav = wave.open(str(path), "rb")
    except FileNotFoundError:
        raise EdgeError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise EdgeError(f"{path}: is a folder, expected a WAV file") from None
    except UNREADABLE as exc:
        raise EdgeError(f"{path}: not a readable PCM WAV file ({str(exc) or type(exc).__name__})") from None
    with wav:
        if wav.getsampwidth() != 2:
            raise EdgeError(
                f"{path}: {8 * wav.getsampwidth()}-bit samples are not supported, expected "
                f"16-bit PCM (convert with: sox {path.name} -b 16 out.wav)"
            )
        rate = wav.getframerate()
        if not MIN_RATE <= rate <= MAX_RATE:
            # A damaged header: 0 would divide by zero, 1 Hz would resample one second of
            # data into gigabytes.
            raise EdgeError(f"{path}: its header says {rate} Hz, expected {MIN_RATE} to {MAX_RATE} Hz "
                            "(a damaged WAV file?)")
        yield wav


def iter_wav_16k(path: str | Path) -> Iterator[np.ndarray]:
    """Yield the file's audio in blocks of 16 kHz mono int16.

    16-bit files of any rate and channel count are converted (channels averaged, rate
    resampled with an anti-aliasing filter); other sample widths are refused because
    silently rescaling 8-bit or 24-bit audio would change what the detector hears.
    """
    path = Path(path)
    with _open_pcm16(path) as wav:
        channels, rate = wav.getnchannels(), wav.getframerate()

        def mono_blocks() -> Iterator[np.ndarray]:
            while True:
                try:
                    raw = wav.readframes(BLOCK_FRAMES)
                except UNREADABLE as exc:
                    raise EdgeError(f"{path}: cannot read audio data ({exc})") from None
                if not raw:
                    return
                block = np.frombuffer(raw[: len(raw) - len(raw) % (2 * channels)], dtype="<i2")
                if channels > 1:
                    block = block.reshape(-1, channels).mean(axis=1).round().astype(np.int16)
                yield block.astype(np.int16, copy=False)

        yield from resample_blocks(mono_blocks(), rate)


def read_wav_16k(path: str | Path) -> np.ndarray:
    """The whole file as 16 kHz mono int16 (see iter_wav_16k)."""
    return np.concatenate([np.zeros(0, np.int16), *iter_wav_16k(path)])


def write_wav_16k(path: str | Path, samples: np.ndarray) -> None:
    """Write 16 kHz mono int16 samples as a WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(TARGET_RATE)
        wav.writeframes(np.asarray(samples, dtype="<i2").tobytes())
