"""The manifest of a card: one JSON line per finished segment, and tombstones for deleted ones.

A card keeps one manifest per day folder, so that what the daemon does at start, per segment
and every few minutes costs the same after a day or after five years (docs/card-layout.md):

    ROOT/card-state.json          {"seq": S, "folder": F}: the sequence number of the first
                                  segment written in day folder F, the folder written last
    ROOT/YYYYMMDD/manifest.jsonl  the lines of the segments in that folder, and their tombstones
    ROOT/deletions.jsonl          tombstones of day folders whose segments are all gone

Sequence numbers only grow: every segment outside F was written before F was chosen, so the
next number is above S and above every number in F, whatever was deleted since. A copy made by
``edge export`` (and a card written before day manifests) has one ``ROOT/manifest.jsonl``
instead; ``edge.card.migrate_card`` splits such a card once, and the readers take either
layout. The card state, the migration and retiring whole days are in ``edge.card``.

Every line is checked in one place, ``parse_line``: readers skip a damaged line with a warning
naming file and line; the daemon moves damaged lines aside (``repair_manifest``) and records on.
"""

from __future__ import annotations

try:
    import fcntl
except ImportError:  # Windows: only the office commands (list, decrypt) run there, without locks
    fcntl = None

import json
import logging
import os
import re
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, Optional

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
DAMAGED = "manifest.damaged.jsonl"
DELETIONS = "deletions.jsonl"
DAY_FOLDER = re.compile(r"^\d{8}$")
_SEQ_IN_TEXT = re.compile(rb'"seq":\s*(\d+)|(?:^|[/"])(\d{6,})_\d{6}_')


_warned: set = set()


class DamagedLine(ValueError):
    """A manifest line that is not an entry; the message says what was expected."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_lines_atomically(path: Path, lines: Iterable[str], owner: Optional[tuple] = None,
                           mode: Optional[int] = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        if owner is not None:
            os.fchown(f.fileno(), *owner)
        if mode is not None:
            os.fchmod(f.fileno(), mode)
        f.writelines(line + "\n" for line in lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json_atomically(path: Path, data: dict) -> None:
    write_lines_atomically(path, [json.dumps(data)])


# -- one line ---------------------------------------------------------------------------------

def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_relative_file(value) -> bool:
    """A path inside the recordings folder, as a manifest names a segment's file."""
    return (isinstance(value, str) and bool(value) and not value.startswith("/") and "\\" not in value
            and ".." not in value.split("/"))


def is_iso_time(value) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
        return True
    except ValueError:
        return False


_SEGMENT_FIELDS = (
    ("file", is_relative_file, "a relative path"),
    ("seq", is_int, "an integer"),
    ("start", is_iso_time, "an ISO 8601 time"),
    ("duration_s", lambda v: is_int(v) or isinstance(v, float), "a number"),
    ("sha256", lambda v: isinstance(v, str), "a string"),
)


LAST_LINE_STEP = 4096
"""Bytes read at a time from a manifest's end to find its last line (one is about 700)."""


def parse_line(raw: bytes) -> dict:
    """The entry one manifest line holds: a segment or a tombstone; raises DamagedLine."""
    try:
        entry = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise DamagedLine("a JSON object, one per line") from None
    if not isinstance(entry, dict):
        raise DamagedLine(f"a JSON object, got {type(entry).__name__}")
    if is_tombstone(entry):
        if not is_relative_file(entry["deleted"]) or ("seq" in entry and not is_int(entry["seq"])):
            raise DamagedLine('a tombstone {"deleted": relative path, "seq": integer}')
        return entry
    for key, valid, what in _SEGMENT_FIELDS:
        if key not in entry:
            raise DamagedLine(f'a segment entry with "{key}"')
        if not valid(entry[key]):
            raise DamagedLine(f'"{key}" to be {what}')
    return entry


def is_tombstone(entry: dict) -> bool:
    return "deleted" in entry


def seq_numbers(raw: bytes) -> list:
    """Sequence numbers a damaged line still shows ("seq": N, or a segment's file name)."""
    return [int(a or b) for a, b in _SEQ_IN_TEXT.findall(raw)]


# -- one manifest file --------------------------------------------------------------------------

def manifest_entries(path: Path, damaged: Optional[Callable[[int, bytes, str], None]] = None) -> Iterator[dict]:
    """Every entry (segments and tombstones) of one manifest file, read as a stream.

    A damaged line goes to ``damaged(number, raw, expected)``, by default a warning naming the
    file and line; it is skipped either way. A torn last line (a power cut mid-append) is too."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        yield from line_entries(f, str(path), damaged)


def last_entry(path: Path) -> Optional[dict]:
    """The entry of the last whole line of one manifest file, read from its end (a day's
    lines are a few hundred kilobytes); None when there is none or it is damaged."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        position = f.seek(0, os.SEEK_END)
        tail = b""
        while position > 0:
            step = min(LAST_LINE_STEP, position)
            position -= step
            f.seek(position)
            tail = f.read(step) + tail
            whole = tail[:tail.rfind(b"\n") + 1]  # a torn line (a power cut mid-append) is not one
            if whole.count(b"\n") >= 2 or (position == 0 and whole):
                try:
                    return parse_line(whole.rsplit(b"\n", 2)[-2])
                except DamagedLine:
                    return None
    return None


def line_entries(lines: Iterable[bytes], where: str,
                 damaged: Optional[Callable[[int, bytes, str], None]] = None) -> Iterator[dict]:
    """The entries of manifest lines (bytes, each with its newline) read from ``where`` (a
    file, or a remote's copy); damaged lines as in ``manifest_entries``."""
    if damaged is None:
        def damaged(number: int, raw: bytes, expected: str) -> None:
            if raw.endswith(b"\n") and (where, number) not in _warned:
                _warned.add((where, number))  # once per process, however often it is read
                log.warning("%s:%d: skipped, expected %s", where, number, expected)
    for number, raw in enumerate(lines, 1):
        try:
            if not raw.endswith(b"\n"):
                raise DamagedLine("a whole line (this one is cut off)")
            entry = parse_line(raw)
        except DamagedLine as exc:
            damaged(number, raw, str(exc))
            continue
        yield entry


@contextmanager
def locked_manifest(manifest: Path, create: bool = True) -> Iterator:
    """The manifest opened for appending under an exclusive flock.

    The daemon appends while an export with --move or a full card's rotation rewrites the
    file (a new inode renamed over the old one): whoever waited for the lock re-opens the
    file the path names now, so that no line is lost to an unlinked inode. Without
    ``create``, a manifest that is gone (retired, or migrated into day manifests while we
    waited) raises FileNotFoundError instead of starting an empty one."""
    while True:
        f = open(manifest, "ab" if create else "rb")
        if fcntl is None:
            break
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            if os.fstat(f.fileno()).st_ino == os.stat(manifest).st_ino:
                break
        except FileNotFoundError:
            if not create:
                f.close()
                raise
        f.close()
    with f:
        yield f


def append_manifest(manifest: Path, entry: dict) -> None:
    with locked_manifest(manifest) as f:
        f.write((json.dumps(entry) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def rewrite_manifest(manifest: Path, keep: Callable[[dict], bool],
                     tombstone: Optional[Callable[[dict], dict]] = None) -> None:
    """Rewrite the manifest with only the entries ``keep`` accepts, each other one replaced
    by ``tombstone(entry)`` when given (damaged lines and tombstones stay as they are). Owner
    and mode are kept: the export runs as root, the recorder as its own user, which must
    still be able to append."""
    with locked_manifest(manifest, create=False) as current:
        kept = []
        with open(manifest, "rb") as f:
            for raw in f:
                line = raw.decode("utf-8", "surrogateescape").rstrip("\n")
                try:
                    entry = parse_line(raw)
                except DamagedLine:
                    kept.append(line)
                    continue
                if is_tombstone(entry) or keep(entry):
                    kept.append(line)
                elif tombstone is not None:
                    kept.append(json.dumps(tombstone(entry)))
        status = os.fstat(current.fileno())
        write_raw_lines(Path(manifest), kept, owner=(status.st_uid, status.st_gid),
                         mode=status.st_mode & 0o7777)


def write_raw_lines(path: Path, lines: list, owner: tuple, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        try:
            os.fchown(f.fileno(), *owner)
        except PermissionError:
            pass  # not root: the file stays ours, which is who appends to it
        os.fchmod(f.fileno(), mode)
        f.writelines(line.encode("utf-8", "surrogateescape") + b"\n" for line in lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def repair_manifest(manifest: Path) -> Optional[str]:
    """Move the damaged lines of ``manifest`` (and a torn last one) aside, each with its line
    number, into manifest.damaged.jsonl beside it; the other lines stay byte for byte. Returns
    what was done (for the log and `edge status`), None when the manifest was whole."""
    damaged = []
    for _ in manifest_entries(manifest, lambda number, raw, expected: damaged.append(number)):
        pass
    if not damaged:
        return None
    with locked_manifest(manifest, create=False) as current:
        kept, moved = [], []
        with open(manifest, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    if not raw.endswith(b"\n"):
                        raise DamagedLine("a whole line (this one is cut off)")
                    parse_line(raw)
                    kept.append(raw.decode("utf-8", "surrogateescape").rstrip("\n"))
                except DamagedLine as exc:
                    moved.append({"line": number, "expected": str(exc),
                                  "text": raw.rstrip(b"\n").decode("utf-8", "backslashreplace")})
        if not moved:
            return None
        # Aside first, manifest after: a power cut in between leaves a line in both places.
        with open(manifest.with_name(DAMAGED), "a") as aside:
            aside.writelines(json.dumps(line) + "\n" for line in moved)
            aside.flush()
            os.fsync(aside.fileno())
        status = os.fstat(current.fileno())
        write_raw_lines(manifest, kept, owner=(status.st_uid, status.st_gid), mode=status.st_mode & 0o7777)
    lines = ", ".join(str(line["line"]) for line in moved)
    return f"{manifest}: damaged line{'s' if len(moved) > 1 else ''} {lines} moved to {DAMAGED}"


# -- a card's manifests -------------------------------------------------------------------------

def manifest_path(root: Path, file: str) -> Path:
    """Where the manifest line and the tombstone of ``file`` (a path under ``root``) go."""
    root = Path(root)
    single = root / MANIFEST
    if single.exists():  # a copy made by `edge export`, or a card not yet migrated
        return single
    return root / PurePosixPath(file).parts[0] / MANIFEST


def day_folders(root: Path) -> list:
    """The day folders (YYYYMMDD) under ``root``, by name."""
    return [Path(root) / name for name in sorted(day_folder_names(root))]


def day_folder_names(root: Path) -> list:
    """The names of the day folders under ``root``, in the listing's order: no object per
    day but its name (a card holds one a day)."""
    return list(_day_folder_names(root))


def _day_folder_names(root: Path) -> Iterator[str]:
    """day_folder_names, one at a time: who needs only the first looks at no other."""
    try:
        with os.scandir(root) as entries:
            yield from (e.name for e in entries if DAY_FOLDER.match(e.name) and e.is_dir())
    except FileNotFoundError:
        return


def moved_aside(root: Path) -> list:
    """The files on a card that hold manifest lines moved aside as damaged (for `edge doctor`)."""
    root = Path(root)
    return [aside for aside in [root / DAMAGED] + [folder / DAMAGED for folder in day_folders(root)]
            if aside.is_file()]


def card_manifests(root: Path) -> list:
    """The manifest files of a card or a copy, oldest day first; a day's manifest that is not
    a file (a folder made by hand) is passed over with one warning, never silently."""
    return list(_card_manifests(Path(root), in_order=True))


def has_manifest(root: Path) -> bool:
    """Whether ``root`` is a card or a copy: it has a manifest, found without looking at the
    others (a year of day folders is looked at once, by whoever reads them)."""
    return next(_card_manifests(Path(root), in_order=False), None) is not None


def _card_manifests(root: Path, in_order: bool) -> Iterator[Path]:
    if (root / MANIFEST).is_file():
        yield root / MANIFEST
        return
    names = _day_folder_names(root)
    for name in sorted(names) if in_order else names:
        if manifest := day_manifest(root / name):
            yield manifest


def day_manifest(folder: Path) -> Optional[Path]:
    """A day folder's manifest, or None when it has none; one that is not a file (a folder
    made by hand) is passed over with one warning, never silently."""
    manifest = folder / MANIFEST
    if manifest.is_file():
        return manifest
    if manifest.exists() and (manifest, 0) not in _warned:
        _warned.add((manifest, 0))  # once per process, however often the card is read
        log.warning("%s: not a file (expected that day's manifest): its segments are not listed", manifest)
    return None


def _card_or_file(path: Path) -> list:
    """``path`` names one manifest file; a card's ``ROOT/manifest.jsonl`` that is not there
    (day manifests) or its folder names the card's manifests."""
    path = Path(path)
    if path.is_dir():
        return card_manifests(path)
    if path.name == MANIFEST and not path.exists():
        return card_manifests(path.parent)
    return [path]


def read_manifest(path: Path) -> list:
    """The segment entries (not the tombstones) of a manifest file, or of a card given as its
    folder or its ``manifest.jsonl``; damaged lines are skipped with a warning."""
    return [entry for manifest in _card_or_file(path) for entry in manifest_entries(manifest)
            if not is_tombstone(entry)]


def read_deletions(path: Path) -> list:
    """The tombstones: ``{"deleted": FILE, "reason": ..., ...}`` per deleted file, those of
    retired day folders first."""
    path = Path(path)
    files = _card_or_file(path)
    retired = (path if path.is_dir() else path.parent) / DELETIONS
    if files != [path]:
        files = [retired] + files
    return [entry for manifest in files for entry in manifest_entries(manifest) if is_tombstone(entry)]


def manifest_segments(manifest: Path, root: Path) -> list:
    """The segment entries of one manifest whose files are still under ``root``, by seq."""
    present: dict = {}

    def exists(file: str) -> bool:
        folder, _, name = file.rpartition("/")
        if folder not in present:
            try:
                present[folder] = set(os.listdir(os.path.join(root, folder)))
            except (FileNotFoundError, NotADirectoryError):
                present[folder] = set()
        return name in present[folder]

    entries = [e for e in manifest_entries(manifest) if not is_tombstone(e) and exists(e["file"])]
    return sorted(entries, key=lambda e: e["seq"])


def first_seq(manifest: Path) -> int:
    """The sequence number on a manifest's first line: when its day was begun."""
    return next((entry["seq"] for entry in manifest_entries(manifest) if "seq" in entry), 0)


def iter_segments(recordings_dir: Path) -> Iterator[dict]:
    """Manifest entries of the segments whose files still exist, by sequence number (day by
    day, the days in the order they were begun); one day in memory at a time."""
    root = Path(recordings_dir)
    for manifest in manifests_in_order(root):
        yield from manifest_segments(manifest, root)


def manifests_in_order(root: Path) -> list:
    """The card's manifests in the order their days were begun (by the first line's seq: a
    wrong clock can name a newer day folder before an older one)."""
    manifests = card_manifests(root)
    if len(manifests) > 1:
        manifests.sort(key=first_seq)
    return manifests
