"""Speech segments on the card: WAV files that survive power cuts, and their manifest.

A segment is written as ``<name>.wav.part`` beside a ``<name>.wav.part.json`` sidecar that
holds what is known when it opens. The header is brought up to date at every fsync, so even
a ``.part`` cut off by a power loss is a valid WAV of the audio it had. On close the file is
renamed to ``<name>.wav`` and one JSON line is appended to its day folder's ``manifest.jsonl``
(edge.manifest); only then is the sidecar removed. ``recover()`` finishes whatever a power cut interrupted, so that every
segment ends up listed in the manifest exactly once.

How the audio itself reaches the file is a ``SegmentFormat``: a plain WAV (edge.plain_wav) or
an age stream (edge.encryption, ``<name>.wav.age``); naming, sidecar, manifest and recovery
are the same for both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .encryption import AGE_WAV_EXTENSION, age_wav_samples, interrupted_age_wav_samples
from .plain_wav import HEADER_BYTES, SAMPLE_RATE, PlainWav, SegmentFile, SegmentFormat, fit_wav_header
from .errors import EdgeError
from .card import CARD_STATE, SEGMENT_NAME, CardState, migrate_card, next_seq, note_day_begun, retire_day, scan_card
from .manifest import (MANIFEST, append_manifest, day_folders, fsync_dir, iter_segments,  # noqa: F401
                       manifest_path, manifest_segments, read_deletions, read_manifest, repair_manifest,
                       rewrite_manifest, write_json_atomically, write_lines_atomically)

if TYPE_CHECKING:  # numpy is not needed to read or copy the card (`edge sync` starts without it)
    import numpy as np

log = logging.getLogger(__name__)

PART = ".part"
SIDECAR = ".part.json"


CHUNK = 1 << 20
"""Bytes read or written at a time, 1 MiB."""


def file_sha256(path: Path, from_medium: bool = False) -> str:
    """SHA-256 of a file; ``from_medium``: as stored, not as cached (its clean pages are
    dropped first)."""
    digest = hashlib.sha256()
    # One buffer read into again and again: a new block per read is fresh memory each time,
    # and the kernel's page faults and zeroing cost a third more than the hash (sync's card check).
    block = bytearray(CHUNK)
    view = memoryview(block)
    with open(path, "rb", buffering=0) as f:
        if from_medium:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        while size := f.readinto(block):
            digest.update(view[:size])
    return digest.hexdigest()


def safe_name(name: str) -> str:
    """A device name as it may appear in file and folder names."""
    return re.sub(r"[^A-Za-z0-9.-]+", "-", name)


@dataclass(frozen=True)
class SegmentStart:
    """What is known of a segment when it opens."""

    source: str
    start_s: float
    """Offset of the first sample from the session or input start, in seconds."""
    start: str
    """Wall-clock time of the first sample, ISO 8601."""
    monotonic_s: float
    """CLOCK_BOOTTIME of the first sample, in seconds: orders segments within a boot."""
    boot_id: str
    clock_synced: bool
    mic_gaps: list = field(default_factory=list)
    """Microphone outages since the previous segment: [{"start": ISO, "end": ISO}]."""


@dataclass(frozen=True)
class SegmentEnd:
    """What is known of a segment when it closes."""

    prob_mean: Optional[float]
    prob_max: Optional[float]
    overflows: int
    dropped_frames: int


def read_sidecar(sidecar: Path) -> Optional[SegmentStart]:
    """The start of an interrupted segment as its sidecar tells it; None when it is damaged."""
    try:
        meta = json.loads(sidecar.read_text())
        start = SegmentStart(**{key: value for key, value in meta.items() if key not in ("file", "seq")})
        datetime.fromisoformat(start.start)
    except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError):
        return None
    numbers = (start.start_s, start.monotonic_s)
    if (any(isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n) for n in numbers)
            or not all(isinstance(v, str) for v in (start.source, start.boot_id))
            or not isinstance(start.clock_synced, bool) or not isinstance(start.mic_gaps, list)):
        return None
    return start


class StorageUnavailable(Exception):
    """The card cannot take more audio now (full, read-only, failing)."""


def repair_part(part: Path) -> int:
    """Make an interrupted ``.part`` as whole as it can be without a key; returns its samples.

    A plain WAV is cut to whole samples and given a header that matches. An encrypted one
    stays as the power cut left it (ciphertext cannot be cut or given a new header without
    the key; `edge decrypt` keeps what is authentic), and the count is what it certainly holds."""
    if part.name.endswith(AGE_WAV_EXTENSION + PART):
        return interrupted_age_wav_samples(part)
    with open(part, "r+b") as f:
        return fit_wav_header(f)


def stored_samples(final: Path) -> int:
    """The samples of a segment file, from its size (for an encrypted one: at most)."""
    if final.name.endswith(AGE_WAV_EXTENSION):
        return age_wav_samples(final)
    return (final.stat().st_size - HEADER_BYTES) // 2


class SegmentWriter:
    """Writes segments one at a time under ``recordings_dir`` and lists them in the manifest."""

    def __init__(self, recordings_dir: Path, device: str, model_sha256: str, version: str,
                 fsync_interval_s: float = 1.0, segment_format: SegmentFormat = PlainWav()):
        self.root = Path(recordings_dir)
        self.format = segment_format
        self.device = safe_name(device)
        self.model_sha256 = model_sha256
        self.version = version
        self.fsync_interval = int(fsync_interval_s * SAMPLE_RATE)
        self._part: Optional[Path] = None
        self._file: Optional[SegmentFile] = None
        self._start: Optional[SegmentStart] = None
        self._samples = 0
        self._unsynced = 0
        self._next_seq: Optional[int] = None
        self._folder: Optional[str] = None  # the day folder the card state names
        self._recover_everywhere = True  # until the card state says where a cut can leave work
        self.repairs: list = []
        """What prepare() found damaged on the card and repaired, one line each (the recorder
        logs them and shows them in `edge status`)."""

    @property
    def is_open(self) -> bool:
        return self._file is not None

    def prepare(self) -> list[dict]:
        """Create the folder, bring the card's manifests to the current layout, repair them
        and recover interrupted segments. Costs the same whatever the card's history: only
        the day folder written last is read (all of them once, when the card state is new)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EdgeError(f"{self.root}: cannot create recordings folder ({exc.strerror})") from None
        self.repairs = migrate_card(self.root)
        self._load_seq()
        if self._folder is not None:
            repaired = repair_manifest(self.root / self._folder / MANIFEST)
            if repaired:
                self.repairs.append(repaired)
        return self.recover()

    def _load_seq(self) -> None:
        state = CardState.load(self.root)
        if state is None:
            if (self.root / CARD_STATE).exists():
                self.repairs.append(f"{self.root / CARD_STATE}: damaged, rebuilt from every day folder")
            state = scan_card(self.root)
            state.save(self.root)
            self._recover_everywhere = True
        else:
            self._recover_everywhere = False
        self._folder = state.folder
        self._next_seq = next_seq(self.root, state)

    def open(self, start: SegmentStart) -> Path:
        """Start a new segment; raises StorageUnavailable when the card cannot take it."""
        assert self._file is None, "a segment is already open"
        wall = datetime.fromisoformat(start.start)
        seq = self._take_seq()
        folder = self.root / wall.strftime("%Y%m%d")
        final = folder / f"{seq:06d}_{wall.strftime('%H%M%S')}_{self.device}{self.format.extension}"
        part = final.with_name(final.name + PART)
        try:
            folder.mkdir(exist_ok=True)
            if folder.name != self._folder:
                # Before anything is written there: where a power cut can leave work, and
                # the number every later one is above (edge.manifest).
                CardState(seq, folder.name).save(self.root)
                note_day_begun(self.root, folder.name, seq)
                self._folder = folder.name
            # The sidecar exists before the .part, so a .part never lacks its metadata.
            write_json_atomically(final.with_name(final.name + SIDECAR),
                                  {"seq": seq, "file": self._relative(final), **asdict(start)})
            self._file = self.format.create(part)
        except OSError as exc:
            self._abandon()
            raise StorageUnavailable(f"{part}: {exc.strerror}") from exc
        self._part, self._start, self._samples, self._unsynced = part, start, 0, 0
        return final

    def append(self, samples: np.ndarray) -> None:
        """Add audio to the open segment, making it durable every fsync interval."""
        try:
            self._file.write(samples.astype("<i2", copy=False).tobytes())
            self._samples += len(samples)
            self._unsynced += len(samples)
            if self._unsynced >= self.fsync_interval:
                self._sync()
        except OSError as exc:
            part = self._part
            self._abandon()
            raise StorageUnavailable(f"{part}: {exc.strerror}") from exc

    def close(self, end: SegmentEnd) -> Optional[dict]:
        """Finish the open segment and list it; an empty one is removed instead."""
        part, start = self._part, self._start
        try:
            self._sync()
            self._file.close()
            self._file = None
            if self._samples == 0:
                part.unlink()
                Path(str(part)[: -len(PART)] + SIDECAR).unlink()
                return None
            entry = self._finish(part, start, self._samples, end, recovered=False)
        except OSError as exc:
            self._abandon()
            raise StorageUnavailable(f"{part}: {exc.strerror}") from exc
        self._part = self._start = None
        return entry

    def discard(self) -> list[Path]:
        """Let go of the open segment without finishing or listing it (its audio is to be
        forgotten); returns its files, still on the card, for the caller to delete."""
        if self._file is None:
            return []
        part = self._part
        self._abandon()
        return [part, Path(str(part)[: -len(PART)] + SIDECAR)]

    def recover(self) -> list[dict]:
        """Turn what a power cut left behind into listed segments; returns their entries.

        A forget that a power cut interrupted is carried out first: the audio it names must
        never become a segment again. Only the day folder the card state names can hold such
        work (it is recorded before a segment opens in a new folder); every folder is looked at
        when there was no state."""
        from .forget import finish_interrupted_forget  # forget is built on this module

        finish_interrupted_forget(self.root)
        if self._recover_everywhere:
            folders = day_folders(self.root)
        else:
            folders = [self.root / self._folder] if self._folder else []
        recovered = []
        for folder in folders:
            recovered += self._recover_folder(folder)
        self._recover_everywhere = False
        return recovered

    def _recover_folder(self, folder: Path) -> list[dict]:
        sidecars = sorted(folder.glob(f"*{SIDECAR}"))
        listed = {entry["file"] for entry in read_manifest(folder / MANIFEST)} if sidecars else set()
        recovered = []
        for sidecar in sidecars:
            final = Path(str(sidecar)[: -len(SIDECAR)])
            part = final.with_name(final.name + PART)
            start = read_sidecar(sidecar)
            if start is None:  # the audio stays on the card, untouched, for a person to look at
                log.warning("%s: damaged (expected the JSON a segment's start writes): %s not recovered",
                            sidecar, part.name)
                continue
            if part.exists():
                samples = repair_part(part)
                if samples == 0:
                    part.unlink()
                    sidecar.unlink()
                    continue
            elif final.exists() and self._relative(final) not in listed:
                part = final  # renamed but not yet listed when the power went
                samples = stored_samples(final)
            else:
                sidecar.unlink()
                continue
            unknown = SegmentEnd(prob_mean=None, prob_max=None, overflows=0, dropped_frames=0)
            recovered.append(self._finish(part, start, samples, unknown, recovered=True))
            log.warning("recovered %s after an interruption (%.1f s of audio)",
                        self._relative(final), samples / SAMPLE_RATE)
        for tmp in folder.glob("*.tmp"):
            tmp.unlink()
        return recovered

    def _finish(self, part: Path, start: SegmentStart, samples: int, end: SegmentEnd,
                recovered: bool) -> dict:
        final = Path(str(part)[: -len(PART)]) if part.name.endswith(PART) else part
        if part != final:
            os.replace(part, final)
            fsync_dir(final.parent)
        duration = samples / SAMPLE_RATE
        wall = datetime.fromisoformat(start.start)
        entry = {
            "file": self._relative(final),
            "seq": int(SEGMENT_NAME.match(final.name).group(1)),
            "device": self.device,
            "source": start.source,
            "start": start.start,
            "end": (wall + timedelta(seconds=duration)).isoformat(timespec="milliseconds"),
            "start_s": round(start.start_s, 3),
            "end_s": round(start.start_s + duration, 3),
            "duration_s": round(duration, 3),
            "samples": samples,
            "sample_rate": SAMPLE_RATE,
            "sha256": file_sha256(final),
            "prob_mean": end.prob_mean,
            "prob_max": end.prob_max,
            "clock_synced": start.clock_synced,
            "boot_id": start.boot_id,
            "monotonic_s": start.monotonic_s,
            "overflows": end.overflows,
            "dropped_frames": end.dropped_frames,
            "mic_gaps": start.mic_gaps,
            "recovered": recovered,
            "model_sha256": self.model_sha256,
            "version": self.version,
        }
        append_manifest(manifest_path(self.root, entry["file"]), entry)
        Path(str(final) + SIDECAR).unlink()
        return entry

    def _sync(self) -> None:
        self._file.sync(2 * self._samples)
        self._unsynced = 0

    def _abandon(self) -> None:
        """Give up the open file after a write error; recover() finishes it later."""
        if self._file is not None:
            self._file.abandon()
        self._file = None
        self._part = self._start = None

    def _take_seq(self) -> int:
        # File order must not depend on the wall clock (no RTC on a Pi): a sequence number
        # that only grows, kept on the card so a power cut cannot reset it (edge.manifest).
        if self._next_seq is None:
            migrate_card(self.root)  # prepare() could not run (a card that refused writes)
            self._load_seq()
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()



class FreeSpaceGuard:
    """Keeps the card from filling: below ``min_free_mb`` no audio is written, unless the
    owner chose to give up the oldest recordings for new ones."""

    def __init__(self, root: Path, min_free_mb: int, when_full: str):
        self.root = Path(root)
        self.min_free_mb = min_free_mb
        self.when_full = when_full

    def free_mb(self) -> float:
        stat = os.statvfs(self.root)
        return stat.f_bavail * stat.f_frsize / 1e6

    def has_room(self) -> bool:
        if self.free_mb() >= self.min_free_mb:
            return True
        if self.when_full != "delete_oldest":
            return False
        for folder in day_folders(self.root):
            manifest = folder / MANIFEST
            for entry in manifest_segments(manifest, self.root):
                (self.root / entry["file"]).unlink()
                rewrite_manifest(manifest, lambda e, gone=entry["file"]: e["file"] != gone)
                log.warning("card full: deleted the oldest segment %s", entry["file"])
                if self.free_mb() >= self.min_free_mb:
                    return True
            retire_day(self.root, folder)
        return False
