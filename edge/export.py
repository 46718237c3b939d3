"""Copying recordings off the card: `edge export DEST` (`edge list` is in edge.listing).

Segments go to ``DEST/<device>/`` in the same date folders as on the card, beside a merged
``manifest.jsonl`` and a ``SHA256SUMS`` that ``sha256sum -c`` accepts. Every file is written
under a temporary name, fsynced, dropped from the page cache and read back from the medium;
only a copy whose hash matches the manifest is renamed into place, and with ``--move`` only
such a copy lets the original go. A run that is stopped (stick pulled, power cut, disk full)
leaves at worst a temporary file that the next run removes, and that run carries on where
the last one stopped: files already on the destination and verified are not copied again.

The export never touches the LED (the recorder daemon owns the GPIO line); it publishes its
state in a small JSON file that the daemon polls (edge.export_state).
"""

from __future__ import annotations

try:
    import fcntl
except ImportError:  # Windows: only the office commands (list, decrypt) run there, without locks
    fcntl = None

import argparse
import errno
import hashlib
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, TextIO

from .config import add_config_argument, device_name, load_config, resolve_data_path
from .entries import checked_entry, checked_segments
from .day_range import DayRange, add_day_arguments
from .errors import EdgeError
from .export_state import ExportStatePublisher, export_state_file
from .manifest import card_manifests, is_tombstone, manifest_entries
from .offload import SUMS, megabytes, merge_manifest, remove_segments, sha256sums
from .storage import CHUNK, MANIFEST, file_sha256, fsync_dir, safe_name, write_lines_atomically

EXPORTING_SUFFIX = ".exporting"


@dataclass
class ExportReport:
    """What one run did; ``problems`` holds a one-line message per file that was not exported."""

    total: int = 0
    total_bytes: int = 0
    copied: int = 0
    copied_bytes: int = 0
    present: int = 0
    moved: int = 0
    problems: list = field(default_factory=list)
    stopped: Optional[str] = None
    """Why the run ended before the last file (destination full or failing), else None."""

    @property
    def exported(self) -> int:
        return self.copied + self.present

    @property
    def ok(self) -> bool:
        return not self.problems and self.stopped is None

    def summary(self, dest: Path) -> str:
        text = (f"{self.exported} of {self.total} files on {dest} "
                f"({self.copied} copied now, {megabytes(self.copied_bytes)}; {self.present} already there)")
        if self.moved:
            text += f"; {self.moved} removed from the card"
        if self.problems:
            text += f"; {len(self.problems)} not exported (see above)"
        return text


class DestinationFailed(Exception):
    """Writing to the destination failed: nothing more can be copied in this run."""


class SourceUnreadable(Exception):
    """A segment on the card could not be read."""


class ExportProgress:
    """A bar redrawn in place on a terminal; a plain line per file for the journal."""

    WIDTH = 24

    def __init__(self, stream: TextIO, total: int, total_bytes: int):
        self.stream = stream
        self.tty = stream.isatty()
        self.total = total
        self.total_bytes = total_bytes
        self._drawn = False

    def advance(self, report: ExportReport, done_bytes: int, what: str) -> None:
        counts = f"{report.exported}/{self.total} files, {megabytes(done_bytes)} of {megabytes(self.total_bytes)}"
        if self.tty:
            filled = self.WIDTH * done_bytes // self.total_bytes if self.total_bytes else self.WIDTH
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self.stream.write(f"\r[{bar}] {counts}\x1b[K")
            self._drawn = True
        else:
            self.stream.write(f"{what} ({counts})\n")
        self.stream.flush()

    def say(self, line: str) -> None:
        """A line that stays: on a terminal it replaces the bar, which is redrawn next time."""
        self.stream.write(("\r\x1b[K" if self._drawn else "") + line + "\n")
        self.stream.flush()
        self._drawn = False

    def finish(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


class SegmentExporter:
    """Copies the segments of one recordings folder to ``dest/<device>/`` and verifies them."""

    def __init__(self, recordings_dir: Path, dest: Path, device: str, move: bool = False,
                 progress_stream: Optional[TextIO] = None, state_file: Optional[Path] = None):
        self.root = Path(recordings_dir)
        self.dest = Path(dest)
        # The same folder name as the device part of the segment file names.
        self.target = self.dest / safe_name(device)
        self.move = move
        self.progress_stream = progress_stream or sys.stderr
        self.state = ExportStatePublisher(state_file)

    def run(self, days: DayRange = DayRange()) -> ExportReport:
        self._check_destination()
        # A second export at the same time (the stick's udev event firing twice, a manual
        # run) would race on the manifest rewrite of --move.
        with _folder_lock(self.root):
            return self._export([entry for entry in checked_segments(self.root) if days.holds(entry)])

    def _export(self, entries: list) -> ExportReport:
        report = ExportReport(total=len(entries))
        sizes = {e["file"]: self._size(e) for e in entries}
        report.total_bytes = sum(sizes.values())
        progress = ExportProgress(self.progress_stream, report.total, report.total_bytes)
        self._remove_leftovers()
        self.state.publish("copying", 0, report.total)
        verified, done_bytes = [], 0
        for entry in entries:
            name = entry["file"]
            try:
                action = self._export_one(entry, sizes[name], report)
            except DestinationFailed as exc:
                report.stopped = str(exc)
                break
            if action is None:
                progress.say(f"edge: {report.problems[-1]}")
            else:
                verified.append(entry)
            done_bytes += sizes[name]
            progress.advance(report, done_bytes, f"{action or 'not exported'} {name}")
            self.state.publish("copying", report.exported, report.total, force=False)
        progress.finish()
        try:
            self._write_index(verified)
        except OSError as exc:
            # Without the merged manifest on the destination the originals are the only
            # record of these segments' metadata: keep them.
            report.stopped = report.stopped or f"cannot write {self.target / MANIFEST} ({exc.strerror})"
            verified = []
        if self.move and verified:
            report.moved = self._remove_originals(verified, report)
        self.state.publish("done" if report.ok else "failed", report.exported, report.total)
        return report

    def _export_one(self, entry: dict, size: int, report: ExportReport) -> Optional[str]:
        """Copy one segment; returns "copied" or "already there", or None with a problem noted."""
        name = entry["file"]
        source = self.root / name
        final = self.target / name
        if self._verified_copy_exists(final, size, entry["sha256"]):
            report.present += 1
            return "already there"
        temporary = final.with_name(final.name + EXPORTING_SUFFIX)
        try:
            source_hash = self._copy(source, temporary)
        except SourceUnreadable as exc:
            report.problems.append(f"{name}: cannot read it on the card ({exc}), not exported")
            return None
        except FileNotFoundError:
            # Removed under us (storage.when_full: delete_oldest): nothing left to export.
            report.problems.append(f"{name}: deleted from the card during the export")
            return None
        if source_hash != entry["sha256"]:
            self._discard(temporary)
            report.problems.append(f"{name}: corrupted on the card (its SHA-256 does not match the "
                                   "manifest), not exported")
            return None
        try:
            copy_hash = file_sha256(temporary, from_medium=True)
        except OSError as exc:
            raise self._destination_failed(exc, temporary) from None
        if copy_hash != entry["sha256"]:
            self._discard(temporary)
            report.problems.append(f"{name}: the copy on {self.dest} does not match after writing "
                                   "(failing medium?), original kept")
            return None
        try:
            os.replace(temporary, final)
            fsync_dir(final.parent)
        except OSError as exc:
            raise self._destination_failed(exc, temporary) from None
        report.copied += 1
        report.copied_bytes += size
        return "copied"

    def _copy(self, source: Path, temporary: Path) -> str:
        """Copy ``source`` to ``temporary`` durably; returns the SHA-256 of what was read."""
        digest = hashlib.sha256()
        try:
            src = open(source, "rb")
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise SourceUnreadable(exc.strerror) from None
        with src:
            try:
                temporary.parent.mkdir(parents=True, exist_ok=True)
                with open(temporary, "wb") as dst:
                    for block in _read_blocks(src):
                        digest.update(block)
                        dst.write(block)
                    dst.flush()
                    os.fsync(dst.fileno())
                    # Clean pages can be dropped now, so the verification reads the medium.
                    os.posix_fadvise(dst.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError as exc:
                raise self._destination_failed(exc, temporary) from None
            except SourceUnreadable:
                self._discard(temporary)
                raise
        return digest.hexdigest()

    def _destination_failed(self, exc: OSError, temporary: Path) -> DestinationFailed:
        self._discard(temporary)  # frees the space a full medium needs for the manifest
        return DestinationFailed(self._describe(exc))

    def _describe(self, exc: OSError) -> str:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"{self.dest} is full"
        return f"writing to {self.dest} failed ({exc.strerror})"

    def _verified_copy_exists(self, final: Path, size: int, sha256: str) -> bool:
        try:
            if final.stat().st_size != size:
                return False
            return file_sha256(final, from_medium=True) == sha256
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise DestinationFailed(self._describe(exc)) from None

    def _write_index(self, verified: list) -> None:
        """Merge the verified entries into the destination manifest and rewrite SHA256SUMS."""
        if not verified:
            return
        manifest = self.target / MANIFEST
        # A line at a time: a stick used all year holds a year's manifest (80 MB), which whole
        # in memory would not fit a small Pi's (see merge_manifest).
        write_lines_atomically(manifest, (json.dumps(entry) for entry in merge_manifest(self._copied(), verified)))
        write_lines_atomically(self.target / SUMS,
                               sha256sums(e for e in self._copied() if (self.target / e["file"]).exists()))

    def _copied(self) -> Iterator[dict]:
        """The segment entries of the destination's manifest, read as a stream (a folder with
        day manifests instead, as a card has, is read as the card would be)."""
        manifest = self.target / MANIFEST
        for path in [manifest] if manifest.exists() else card_manifests(self.target):
            yield from (entry for entry in manifest_entries(path) if not is_tombstone(entry))

    def _remove_originals(self, verified: list, report: ExportReport) -> int:
        return len(remove_segments(self.root, verified, report.problems,
                                   f"moved: copy verified in {self.target}"))

    def _check_destination(self) -> None:
        if not self.dest.is_dir():
            raise EdgeError(f"{self.dest}: destination folder does not exist (is the stick mounted?)")
        if not os.access(self.dest, os.W_OK):
            raise EdgeError(f"{self.dest}: destination is read-only")
        try:
            self.target.mkdir(exist_ok=True)
        except OSError as exc:
            raise EdgeError(f"{self.dest}: cannot write to the destination ({exc.strerror})") from None
        # An earlier export's manifest there is rewritten, merged with this one's, at the end:
        # a damaged line (which that rewrite would drop) must stop the export now, before
        # anything is copied.
        copied = self.target / MANIFEST

        def stop(number: int, raw: bytes, expected: str) -> None:
            raise EdgeError(f"{copied}:{number}: expected {expected}; "
                            "the manifest is damaged or was edited, nothing done")
        for entry in manifest_entries(copied, stop):
            if not is_tombstone(entry):
                checked_entry(copied, entry)

    def _remove_leftovers(self) -> None:
        for leftover in self.target.glob(f"*/*{EXPORTING_SUFFIX}"):
            self._discard(leftover)

    def _size(self, entry: dict) -> int:
        try:
            return (self.root / entry["file"]).stat().st_size
        except FileNotFoundError:
            return 0

    @staticmethod
    def _discard(path: Path) -> None:
        try:
            path.unlink()
        except OSError:
            pass  # a pulled stick: the next run removes it


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise EdgeError(f"{folder}: cannot open the recordings folder ({exc.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EdgeError(f"{folder}: another export is running") from None
        yield
    finally:
        os.close(fd)


def _read_blocks(source) -> Iterator[bytes]:
    while True:
        try:
            block = source.read(CHUNK)
        except OSError as exc:
            raise SourceUnreadable(exc.strerror) from None
        if not block:
            return
        yield block


def add_command(subparsers) -> None:
    """Register `edge export`."""
    export = subparsers.add_parser(
        "export", help="copy recordings to a folder or USB stick, verified",
        description="Copy segments and their manifest lines to DEST/<device>/, verify every copy "
                    "against the manifest hash and write SHA256SUMS. Re-running resumes.")
    export.add_argument("dest", metavar="DEST", type=Path, help="destination folder (e.g. a mounted USB stick)")
    add_day_arguments(export)
    export.add_argument("--move", action="store_true",
                        help="delete each original from the card once its copy is verified")
    export.add_argument("--auto", action="store_true",
                        help="started by the USB stick's udev rule: does nothing unless export.auto is "
                             "true; export.move decides whether originals are deleted")
    add_config_argument(export)
    export.set_defaults(func=run_export_command)


def run_export_command(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    move = args.move
    if args.auto:
        if not settings.export.auto:
            print("edge: automatic export is off (export.auto: false), nothing done")
            return 0
        move = move or settings.export.move
    days = DayRange.from_args(args)
    exporter = SegmentExporter(resolve_data_path(settings.storage.recordings_dir), args.dest,
                               device_name(settings.storage), move=move,
                               state_file=export_state_file(settings))
    report = exporter.run(days)
    if report.stopped:
        print(f"edge: export stopped: {report.stopped}; copied {report.exported} of {report.total} "
              f"files ({megabytes(report.copied_bytes)} this run); originals of the rest kept",
              file=sys.stderr)
    print(report.summary(exporter.target))
    return 0 if report.ok else 1

