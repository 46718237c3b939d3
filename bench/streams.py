"""Classroom-like test streams: labelled read sentences separated by pauses, with noise
looped under the whole stream at a chosen signal-to-noise ratio. Everything is drawn from one
seeded generator, and each stream's manifest records how it was made."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge.wavio import read_wav_16k, write_wav_16k

from .labels import SAMPLE_RATE, Intervals, read_speech_intervals

PAUSE_RANGE_S = (0.5, 3.0)
# dude_miaowing has a person talking to a cat: unlabelled speech would count as stored
# non-speech, so it is not used as noise.
NOISE_WITH_SPEECH = {"dude_miaowing.wav"}
INT16_PEAK = 32767


@dataclass(frozen=True)
class Mix:
    samples: np.ndarray
    """The int16 mixture."""
    speech_gain: float
    noise_gain: float
    """Factors applied to the speech and the looped noise before they were summed."""


def speech_mask(intervals: Intervals, sample_count: int) -> np.ndarray:
    mask = np.zeros(sample_count, dtype=bool)
    for start, end in intervals:
        mask[int(round(start * SAMPLE_RATE)) : int(round(end * SAMPLE_RATE))] = True
    return mask


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, mask: np.ndarray, snr_db: float) -> Mix:
    """Add ``noise`` (looped to the speech's length) so that speech power over the labelled
    speech samples (``mask``) is ``snr_db`` above the noise power over those same samples.
    Both parts are scaled down together if the sum would clip, which keeps the ratio."""
    speech = speech.astype(np.float64)
    looped = np.resize(noise.astype(np.float64), len(speech))
    speech_power = np.mean(speech[mask] ** 2)
    noise_power = np.mean(looped[mask] ** 2)
    noise_gain = np.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10)))
    mixture = speech + noise_gain * looped
    headroom = min(1.0, INT16_PEAK / max(np.max(np.abs(mixture)), 1.0))
    samples = np.round(mixture * headroom).astype(np.int16)
    return Mix(samples, float(headroom), float(noise_gain * headroom))


@dataclass(frozen=True)
class PlacedUtterance:
    file: str
    offset_s: float
    speech: Intervals
    """Labelled speech, in seconds from the start of the stream."""


@dataclass(frozen=True)
class Stream:
    path: Path
    snr_db: float
    duration_s: float
    utterances: list[PlacedUtterance]

    @property
    def speech(self) -> Intervals:
        return [interval for utterance in self.utterances for interval in utterance.speech]

    @property
    def onsets(self) -> list[float]:
        return [utterance.speech[0][0] for utterance in self.utterances if utterance.speech]


def noise_bed(noise_dirs: list[Path], rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """All noise files, each brought to the same RMS, in a seeded order, end to end."""
    files = sorted(p for d in noise_dirs for p in d.rglob("*.wav") if p.name not in NOISE_WITH_SPEECH)
    order = [files[i] for i in rng.permutation(len(files))]
    pieces = []
    for path in order:
        noise = read_wav_16k(path).astype(np.float64)
        pieces.append(noise / max(np.sqrt(np.mean(noise**2)), 1e-9) * 1000)
    return np.concatenate(pieces), [str(path) for path in order]


def build_speech_track(
    utterance_dir: Path, duration_s: float, rng: np.random.Generator
) -> tuple[np.ndarray, list[PlacedUtterance]]:
    """Utterances in seeded order (starting over when all are used) separated, and preceded,
    by pauses of PAUSE_RANGE_S, until at least ``duration_s`` of audio is reached."""
    wavs = sorted(p for p in utterance_dir.glob("*.wav") if p.with_suffix(".csv").is_file())
    pieces: list[np.ndarray] = []
    placed: list[PlacedUtterance] = []
    position = 0
    while position < duration_s * SAMPLE_RATE or not placed:
        for index in rng.permutation(len(wavs)):
            pause = np.zeros(int(rng.uniform(*PAUSE_RANGE_S) * SAMPLE_RATE), dtype=np.int16)
            utterance = read_wav_16k(wavs[index])
            offset = (position + len(pause)) / SAMPLE_RATE
            speech = [(offset + s, offset + e) for s, e in read_speech_intervals(wavs[index].with_suffix(".csv"))]
            placed.append(PlacedUtterance(wavs[index].name, offset, speech))
            pieces += [pause, utterance]
            position += len(pause) + len(utterance)
            if position >= duration_s * SAMPLE_RATE:
                break
    tail = np.zeros(int(rng.uniform(*PAUSE_RANGE_S) * SAMPLE_RATE), dtype=np.int16)
    return np.concatenate([*pieces, tail]), placed


def build_streams(
    utterance_dir: Path, noise_dirs: list[Path], snrs_db: list[float], duration_s: float, out_dir: Path, seed: int
) -> list[Stream]:
    """One stream per SNR, all with the same speech track and noise bed, written as WAV files
    with ``streams.json`` describing them."""
    rng = np.random.default_rng(seed)
    speech, placed = build_speech_track(utterance_dir, duration_s, rng)
    noise, noise_files = noise_bed(noise_dirs, rng)
    mask = speech_mask([interval for u in placed for interval in u.speech], len(speech))
    out_dir.mkdir(parents=True, exist_ok=True)
    streams = []
    for snr in snrs_db:
        path = out_dir / f"stream_snr{snr:g}dB.wav"
        mix = mix_at_snr(speech, noise, mask, snr)
        write_wav_16k(path, mix.samples)
        streams.append(Stream(path, snr, len(speech) / SAMPLE_RATE, placed))
    manifest = {
        "seed": seed,
        "utterance_dir": str(utterance_dir),
        "pause_range_s": PAUSE_RANGE_S,
        "noise_files_in_order": noise_files,
        "noise_rule": "each file scaled to equal RMS, concatenated, looped under the whole stream",
        "snr_rule": "speech power over labelled speech samples / noise power over the same samples",
        "duration_s": len(speech) / SAMPLE_RATE,
        "streams": {str(s.path.name): s.snr_db for s in streams},
        "utterances": [asdict(u) for u in placed],
    }
    (out_dir / "streams.json").write_text(json.dumps(manifest, indent=1))
    return streams
