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


# Per noise type and child-like streams -------------------------------------------------
#
# The 20 speechocean762 speakers are split in two halves by a seeded shuffle: one half speaks
# in the foreground, the other makes the babble, so no voice is both. "report" and "tune"
# swap the halves (and the noise files), so settings chosen on "tune" are reported on voices
# and noises they were not chosen on.

SPLITS = ("report", "tune")
NOISE_TYPES = ("babble", "transients", "music", "stationary")
# Up to about 12 voices Silero hears a babble as speech nearly all the time (it is: median
# probability 0.8 at 12, 0.995 at 5); 20 make the crowd of a classroom (median 0.33).
BABBLE_TALKERS = 20
BABBLE_GAP_S = (0.0, 0.4)
STATIONARY = ["recorded-ambient/air_conditioner.wav", "recorded-ambient/rain.wav", "recorded-ambient/water.wav",
              "recorded-ambient/wind.wav", "recorded-ambient/forest_1.wav", "recorded-ambient/forest_2.wav",
              "speech-commands-background/exercise_bike.wav", "speech-commands-background/running_tap.wav"]
# The only impulsive recording here (plates and cutlery): kept only where it is well above its
# own median level, so what remains is clatter with near-silence between, like knocks.
TRANSIENTS = "speech-commands-background/doing_the_dishes.wav"
TRANSIENT_RISE_DB = 12.0
# Child-like utterances: short pieces of adult sentences, raised in pitch and formants by
# playing them faster (children's vocal tracts are shorter: formants ~20-30 % higher), softer
# and with faded-in onsets.
CHILD_PIECE_S = (0.4, 1.6)
CHILD_PITCH = (1.2, 1.25, 1.3)
CHILD_GAIN_DB = (-9.0, 0.0)
CHILD_FADE_S = (0.02, 0.15)


def moving_mean(values: np.ndarray, width: int) -> np.ndarray:
    """Mean of ``width`` values centred on each one (fewer at the ends)."""
    sums = np.concatenate([[0.0], np.cumsum(values)])
    index = np.arange(len(values))
    low, high = np.maximum(index - width // 2, 0), np.minimum(index + (width + 1) // 2, len(values))
    return (sums[high] - sums[low]) / (high - low)


def speakers(utterance_dir: Path) -> dict[str, list[Path]]:
    """speaker -> labelled utterance WAVs, from metadata.csv."""
    import csv

    with (utterance_dir / "metadata.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    found: dict[str, list[Path]] = {}
    for row in rows:
        wav = utterance_dir / row["file"]
        if wav.with_suffix(".csv").is_file():
            found.setdefault(row["speaker"], []).append(wav)
    return found


def speaker_halves(utterance_dir: Path, split: str, seed: int) -> tuple[list[Path], list[Path]]:
    """(foreground utterances, babble utterances) of ``split``: disjoint speakers."""
    by_speaker = speakers(utterance_dir)
    names = sorted(by_speaker)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    halves = (order[: len(order) // 2], order[len(order) // 2 :])
    front, back = halves if split == "report" else halves[::-1]
    return [w for s in front for w in by_speaker[s]], [w for s in back for w in by_speaker[s]]


def _half_of(files: list[Path], split: str) -> list[Path]:
    """Every other file (sorted): even ones for "report", odd ones for "tune"."""
    return sorted(files)[SPLITS.index(split) :: 2]


def babble(utterances: list[Path], length: int, rng: np.random.Generator) -> np.ndarray:
    """BABBLE_TALKERS voices, each talking on and on (utterances end to end with short gaps),
    each at the same level, summed."""
    total = np.zeros(length)
    for _ in range(BABBLE_TALKERS):
        pieces, position = [], 0
        while position < length:
            gap = np.zeros(int(rng.uniform(*BABBLE_GAP_S) * SAMPLE_RATE))
            voice = read_wav_16k(utterances[rng.integers(len(utterances))]).astype(np.float64)
            pieces += [gap, voice]
            position += len(gap) + len(voice)
        talker = np.concatenate(pieces)[rng.integers(SAMPLE_RATE) :][:length]
        talker = np.pad(talker, (0, length - len(talker)))
        total += talker / max(np.sqrt(np.mean(talker**2)), 1e-9)
    return total * 1000


def transients(path: Path) -> np.ndarray:
    noise = read_wav_16k(path).astype(np.float64)
    frame = SAMPLE_RATE // 100
    energy = moving_mean(noise**2, frame)
    loud = energy > np.median(energy) * 10 ** (TRANSIENT_RISE_DB / 10)
    # Open the gate 20 ms around each loud stretch so that clicks keep their attack and decay.
    gate = moving_mean(loud.astype(float), 2 * frame) > 0
    return noise * gate


def noise_of_type(kind: str, noise_root: Path, babble_utterances: list[Path], split: str, length: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    if kind == "babble":
        return babble(babble_utterances, length, rng), [f"{BABBLE_TALKERS} talkers of {len(babble_utterances)} utterances"]
    if kind == "transients":
        path = noise_root / TRANSIENTS
        noise = transients(path)
        half = len(noise) // 2
        return (noise[:half] if split == "report" else noise[half:]), [f"{path} ({split} half, gated)"]
    files = (_half_of(sorted((noise_root / "music-instrumental").glob("*.wav")), split) if kind == "music"
             else _half_of([noise_root / name for name in STATIONARY], split))
    pieces = []
    for path in files:
        noise = read_wav_16k(path).astype(np.float64)
        pieces.append(noise / max(np.sqrt(np.mean(noise**2)), 1e-9) * 1000)
    order = rng.permutation(len(pieces))
    return np.concatenate([pieces[i] for i in order]), [str(files[i]) for i in order]


def child_like(wav: Path, rng: np.random.Generator) -> tuple[np.ndarray, Intervals]:
    """A short, higher, softer piece of one adult utterance with a faded-in onset, and its
    labelled speech (seconds from the piece's start)."""
    from edge.resample import resample_to_16k

    samples = read_wav_16k(wav).astype(np.float64)
    speech = read_speech_intervals(wav.with_suffix(".csv"))
    frame = SAMPLE_RATE // 100
    energy = moving_mean(samples**2, 3 * frame)
    # A piece begins where a word may begin (a labelled onset or a dip inside speech) with at
    # least the shortest piece of labelled speech after it, so that no piece is only a fading tail.
    shortest = int(CHILD_PIECE_S[0] * SAMPLE_RATE)
    dips = [i for s, e in speech for i in range(int(s * SAMPLE_RATE) + frame, int(e * SAMPLE_RATE) - shortest, frame)
            if energy[i] < 0.05 * np.median(energy[int(s * SAMPLE_RATE) : int(e * SAMPLE_RATE)])]
    starts = [int(s * SAMPLE_RATE) for s, e in speech if e - s >= CHILD_PIECE_S[0]] + dips
    starts = starts or [int(speech[0][0] * SAMPLE_RATE)]
    start = starts[rng.integers(len(starts))]
    want = start + int(rng.uniform(*CHILD_PIECE_S) * SAMPLE_RATE)
    # End at the quietest point within 150 ms of the wanted length, so no word is cut hard.
    near = slice(max(start + frame, want - 15 * frame), min(len(samples), want + 15 * frame))
    end = near.start + int(np.argmin(energy[near])) if near.stop > near.start else len(samples)
    piece = samples[start:end].copy()
    fade = min(int(rng.uniform(*CHILD_FADE_S) * SAMPLE_RATE), len(piece))
    piece[:fade] *= 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / max(fade, 1))
    tail = min(frame * 3, len(piece))
    piece[len(piece) - tail :] *= np.linspace(1, 0, tail)
    piece *= 10 ** (rng.uniform(*CHILD_GAIN_DB) / 20)
    factor = CHILD_PITCH[rng.integers(len(CHILD_PITCH))]
    raised = resample_to_16k(np.round(piece).astype(np.int16), int(SAMPLE_RATE * factor))
    begin, finish = start / SAMPLE_RATE, end / SAMPLE_RATE
    labels = [((max(s, begin) - begin) / factor, (min(e, finish) - begin) / factor)
              for s, e in speech if min(e, finish) > max(s, begin)]
    return raised, labels


def build_typed_track(utterances: list[Path], duration_s: float, rng: np.random.Generator, child: bool
                      ) -> tuple[np.ndarray, list[PlacedUtterance]]:
    """Like build_speech_track, from the given utterances; with ``child`` each is replaced by a
    child-like piece of it (child_like)."""
    pieces: list[np.ndarray] = []
    placed: list[PlacedUtterance] = []
    position = 0
    while position < duration_s * SAMPLE_RATE or not placed:
        wav = utterances[rng.integers(len(utterances))]
        pause = np.zeros(int(rng.uniform(*PAUSE_RANGE_S) * SAMPLE_RATE), dtype=np.int16)
        if child:
            audio, labels = child_like(wav, rng)
        else:
            audio, labels = read_wav_16k(wav), read_speech_intervals(wav.with_suffix(".csv"))
        offset = (position + len(pause)) / SAMPLE_RATE
        placed.append(PlacedUtterance(wav.name, offset, [(offset + s, offset + e) for s, e in labels]))
        pieces += [pause, np.asarray(audio, dtype=np.int16)]
        position += len(pause) + len(audio)
    pieces.append(np.zeros(int(rng.uniform(*PAUSE_RANGE_S) * SAMPLE_RATE), dtype=np.int16))
    return np.concatenate(pieces), placed


@dataclass(frozen=True)
class TypedStream(Stream):
    noise_type: str = ""
    speech_kind: str = ""
    """"adult" or "child-like"."""


def build_typed_streams(utterance_dir: Path, noise_root: Path, snrs_db: list[float], duration_s: float,
                        out_dir: Path, seed: int, split: str = "report") -> list[TypedStream]:
    """One stream per speech kind, noise type and SNR; the speech track of a kind is shared by
    all its noise types and SNRs. ``streams.json`` in ``out_dir`` records how each was made."""
    rng = np.random.default_rng(seed)
    foreground, babble_voices = speaker_halves(utterance_dir, split, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    streams: list[TypedStream] = []
    manifest: dict = {"seed": seed, "split": split, "foreground": [w.name for w in foreground],
                      "babble": [w.name for w in babble_voices], "child_like": {
                          "piece_s": CHILD_PIECE_S, "pitch_factors": CHILD_PITCH, "gain_db": CHILD_GAIN_DB,
                          "fade_in_s": CHILD_FADE_S}, "streams": {}}
    for kind in ("adult", "child-like"):
        speech, placed = build_typed_track(foreground, duration_s, rng, child=kind == "child-like")
        mask = speech_mask([i for u in placed for i in u.speech], len(speech))
        for noise_type in NOISE_TYPES:
            noise, sources = noise_of_type(noise_type, noise_root, babble_voices, split, len(speech), rng)
            for snr in snrs_db:
                path = out_dir / f"{kind}_{noise_type}_snr{snr:g}dB.wav"
                write_wav_16k(path, mix_at_snr(speech, noise, mask, snr).samples)
                streams.append(TypedStream(path, snr, len(speech) / SAMPLE_RATE, placed, noise_type, kind))
                manifest["streams"][path.name] = {"noise": sources, "snr_db": snr,
                                                  "utterances": [asdict(u) for u in placed]}
    (out_dir / "streams.json").write_text(json.dumps(manifest, indent=1))
    return streams
