"""Reading input WAV files as 16 kHz mono int16, the only format the detector takes."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from .errors import EdgeError
from .resample import resample_to_16k

TARGET_RATE = 16000


def read_wav_16k(path: str | Path) -> np.ndarray:
    """Return the file's samples as 16 kHz mono int16.

    16-bit files of any rate are converted (channels averaged, rate resampled with an
    anti-aliasing filter); other sample widths are refused because silently rescaling
    8-bit or 24-bit audio would change what the detector hears.
    """
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as wav:
            channels = wav.getnchannels()
            width = wav.getsampwidth()
            rate = wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except FileNotFoundError:
        raise EdgeError(f"{path}: no such file") from None
    except (wave.Error, EOFError, OSError) as exc:
        raise EdgeError(f"{path}: not a readable PCM WAV file ({exc})") from None
    if width != 2:
        raise EdgeError(
            f"{path}: {8 * width}-bit samples are not supported, expected 16-bit PCM "
            f"(convert with: sox {path.name} -b 16 out.wav)"
        )
    samples = np.frombuffer(raw[: len(raw) - len(raw) % (2 * channels)], dtype="<i2")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).round().astype(np.int16)
    return resample_to_16k(samples.astype(np.int16, copy=False), rate)


def write_wav_16k(path: str | Path, samples: np.ndarray) -> None:
    """Write 16 kHz mono int16 samples as a WAV file (used for fixtures and exports)."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(TARGET_RATE)
        wav.writeframes(np.asarray(samples, dtype="<i2").tobytes())
