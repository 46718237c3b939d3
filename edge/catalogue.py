"""The office's catalogue: what every device recorded, in one sqlite3 file, so that `edge list
DIR...` over a fleet reads only what changed in the manifests since the last run.

Where: ``$XDG_CACHE_HOME/edge/catalogue.sqlite3`` (``~/.cache/edge/``; ``%LOCALAPPDATA%\\edge``
on Windows), the office user's own, on a local disk. Never in the folders it lists: those
are a card, a stick, a NAS share or an rclone mount, often read-only or shared, where sqlite's
locking cannot be trusted. Where that file cannot be written, a temporary catalogue is used
for the run and deleted after, and one line on stderr says so. Everything in it is derived
from the manifests and the folders' listings: deleting it is a rebuild; a damaged file (or
one of another schema) is deleted and rebuilt, with one line.

What it keeps, per device folder:

- a row per manifest file: inode, size, mtime, how far it was read (the end of its last whole
  line), how many lines that is, the bytes just before that offset, and the folders its
  segments are in with their mtimes. Manifests grow by appends; a rewrite (``edge export
  --move``'s tombstones, a repair, a retention rotation) is a new file renamed over the old.
  So: same inode, size and mtime is unchanged and not opened; same inode and a larger size
  with the same bytes before the offset is read from the offset on; anything else (new inode,
  smaller size, changed bytes) is read again whole. A manifest that is gone takes its rows.
- a row per segment line (its id is the manifest's id times 2**32 plus its line number, so a
  manifest's rows are one id range), with the cells `edge list` prints, formatted when read.
  Like the plain reader, a segment is listed while its file exists: a folder whose mtime
  changed is listed again and its segments marked present or not (a tombstone comes with
  its file's removal, so it needs no row of its own). An mtime less than 2 s old (FAT's
  granularity) is not trusted: that folder or manifest is looked at again next time.
- a row per damaged line (line number, what was expected), warned about on every run as the
  plain reader does (edge.manifest.line_entries); a torn last line is not read until whole.
- per manifest, the count, total duration and widest cells of its present segments, so the
  table's widths and last line need no pass over the rows; and their day and device when
  all have the same (a day folder's manifest, written by one device), so that `edge list
  --days` is a line per manifest.

Each device folder is updated in its own transaction (``BEGIN IMMEDIATE``; WAL), so two
`edge list` at once serialise their updates and read consistent snapshots. The rows are
formatted and ordered by sqlite, and the text of a whole listing is kept an hour at a time
(edge.catalogue_pages): memory does not grow with the history, and listing it again reads
only the text of what did not change.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator, Optional

from . import catalogue_pages
from .entries import checked_entry
from .errors import EdgeError
from .listing import device_cell, list_row, milliseconds
from .manifest import DamagedLine, card_manifests, is_tombstone, parse_line

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4
"""PRAGMA user_version of the file; a catalogue of another version is rebuilt."""
FILE_NAME = "catalogue.sqlite3"
LINE_BITS = 32
RACY_NS = 2_000_000_000
"""An mtime this close to the time it was read may still change without changing (FAT: 2 s)."""
TAIL = 64
"""Bytes before a manifest's read offset kept to recognise an append from a rewrite."""
BATCH = 5000
"""Rows inserted, or fetched, at a time."""
MAX_INT = (1 << 63) - 1
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

SCHEMA = """
CREATE TABLE folder(id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL);
CREATE TABLE manifest(
    id INTEGER PRIMARY KEY, folder_id INTEGER NOT NULL, path TEXT NOT NULL,
    inode INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    offset INTEGER NOT NULL, lines INTEGER NOT NULL, tail BLOB NOT NULL, dirs TEXT NOT NULL,
    segments INTEGER NOT NULL DEFAULT 0, total_ms INTEGER NOT NULL DEFAULT 0,
    w_device INTEGER NOT NULL DEFAULT 0, w_file INTEGER NOT NULL DEFAULT 0,
    w_start INTEGER NOT NULL DEFAULT 0, w_duration INTEGER NOT NULL DEFAULT 0,
    w_prob_mean INTEGER NOT NULL DEFAULT 0, w_prob_max INTEGER NOT NULL DEFAULT 0,
    day TEXT, day_device TEXT);
CREATE UNIQUE INDEX manifest_path ON manifest(folder_id, path);
CREATE TABLE segment(
    start_us INTEGER NOT NULL, folder_id INTEGER NOT NULL, seq INTEGER NOT NULL, id INTEGER NOT NULL,
    present INTEGER NOT NULL, file TEXT NOT NULL, device TEXT, start TEXT, duration TEXT,
    duration_ms INTEGER, prob_mean TEXT, prob_max TEXT, recovered TEXT, problem TEXT,
    PRIMARY KEY(start_us, folder_id, seq, id)) WITHOUT ROWID;
CREATE UNIQUE INDEX segment_line ON segment(id);
CREATE INDEX segment_problem ON segment(folder_id) WHERE problem IS NOT NULL;
CREATE TABLE damaged(manifest_id INTEGER NOT NULL, line INTEGER NOT NULL, expected TEXT NOT NULL,
                     PRIMARY KEY(manifest_id, line));
""" + catalogue_pages.SCHEMA


def catalogue_path() -> Path:
    """The catalogue of this office user."""
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "edge" / FILE_NAME
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "edge" / FILE_NAME


@contextmanager
def open_catalogue(path: Optional[Path] = None) -> Iterator["Catalogue"]:
    """The catalogue at ``path`` (the user's by default), rebuilt when damaged; a temporary
    one, deleted afterwards, when that place cannot be written."""
    path = catalogue_path() if path is None else Path(path)
    try:
        catalogue = Catalogue.open(path)
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"edge: cannot write the catalogue {path} ({reason}): reading the manifests "
              "into a temporary one for this run", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="edge-catalogue-") as tmp:
            catalogue = Catalogue.open(Path(tmp) / FILE_NAME)
            try:
                yield catalogue
            finally:
                catalogue.close()
        return
    try:
        yield catalogue
    finally:
        catalogue.close()


class Catalogue:
    """An open catalogue file: ``update`` it from device folders, then
    :func:`edge.catalogue_table.write_listing` from its rows."""

    def __init__(self, path: Path, db: sqlite3.Connection):
        self.path = path
        self.db = db
        self._listings: dict = {}
        self._changed_hours: set = set()
        """The hours (edge.catalogue_pages) of the segment rows changed in this transaction."""

    @classmethod
    def open(cls, path: Path) -> "Catalogue":
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return cls(path, _connect(path))
        except sqlite3.DatabaseError as exc:
            if not _damaged(exc):
                raise  # cannot open or write it (read-only, permissions): not damage
            print(f"edge: the catalogue {path} is damaged ({exc}): rebuilding it from the manifests",
                  file=sys.stderr)
            _remove(path)
            return cls(path, _connect(path))

    def close(self) -> None:
        self.db.close()

    # -- update -------------------------------------------------------------------------------

    def update(self, folders: list) -> None:
        """Bring the rows of each device folder up to date with its manifests and files; a
        catalogue found damaged on the way is deleted and built again, once."""
        try:
            self._update(folders)
        except sqlite3.DatabaseError as exc:
            if not _damaged(exc):
                raise EdgeError(f"{self.path}: {exc}") from None
            print(f"edge: the catalogue {self.path} is damaged ({exc}): rebuilding it from the manifests",
                  file=sys.stderr)
            self.db.close()
            _remove(self.path)
            self.db = _connect(self.path)
            self._update(folders)

    def _update(self, folders: list) -> None:
        for folder in folders:
            try:
                self._update_folder(Path(folder))
            except PermissionError:
                raise EdgeError(f"{folder}: permission denied") from None
        self._listings.clear()

    def _update_folder(self, folder: Path) -> None:
        db = self.db
        self._listings.clear()
        self._changed_hours.clear()
        db.execute("BEGIN IMMEDIATE")
        try:
            folder_id = self._folder_id(folder)
            known = {row[0]: row for row in db.execute(
                "SELECT path, id, inode, size, mtime_ns, offset, lines, tail, dirs FROM manifest "
                "WHERE folder_id = ?", (folder_id,))}
            for manifest in card_manifests(folder):
                relative = _relative(manifest, folder)
                self._update_manifest(folder, folder_id, manifest, relative, known.pop(relative, None))
            for gone in known.values():
                self._drop_manifest(gone[1])
            catalogue_pages.mark_stale(db, self._changed_hours)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _folder_id(self, folder: Path) -> int:
        path = os.path.abspath(folder)
        row = self.db.execute("SELECT id FROM folder WHERE path = ?", (path,)).fetchone()
        if row:
            return row[0]
        return self.db.execute("INSERT INTO folder(path) VALUES (?)", (path,)).lastrowid

    def _update_manifest(self, folder: Path, folder_id: int, manifest: Path, relative: str, known) -> None:
        now = time.time_ns()
        try:
            status = manifest.stat()
        except FileNotFoundError:  # retired between the listing and now
            if known:
                self._drop_manifest(known[1])
            return
        mtime = status.st_mtime_ns if now - status.st_mtime_ns > RACY_NS else -1
        if known is None:
            manifest_id = self.db.execute(
                "INSERT INTO manifest(folder_id, path, inode, size, mtime_ns, offset, lines, tail, dirs) "
                "VALUES (?, ?, 0, 0, -1, 0, 0, x'', '{}')", (folder_id, relative)).lastrowid
            self._read(folder, folder_id, manifest_id, manifest, relative, 0, 0, b"", mtime)
            return
        _, manifest_id, inode, size, mtime_ns, offset, lines, tail, dirs = known
        same_file = inode == status.st_ino
        if same_file and status.st_size == size and mtime_ns == status.st_mtime_ns != -1:
            if self._dirs_changed(folder, json.loads(dirs)):
                self._mark_present(folder, manifest_id)
            return
        if not (same_file and status.st_size > size):  # not an append: read it whole
            offset = lines = 0
            tail = b""
        self._read(folder, folder_id, manifest_id, manifest, relative, offset, lines, tail, mtime)

    def _read(self, folder: Path, folder_id: int, manifest_id: int, manifest: Path, relative: str,
              offset: int, lines: int, tail: bytes, mtime: int) -> None:
        """Read ``manifest`` from ``offset`` (line ``lines`` + 1) on, or whole when the bytes
        before it are not ``tail`` any more."""
        first_id = manifest_id << LINE_BITS
        with open(manifest, "rb") as f:
            status = os.fstat(f.fileno())
            if offset:
                f.seek(offset - len(tail))
                if f.read(len(tail)) != tail:
                    offset = lines = 0
                    f.seek(0)
            if not offset:
                self._drop_rows(manifest_id)
            segments, damaged = [], []
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # torn (a power cut mid-append) or being written: read it once whole
                lines += 1
                offset += len(raw)
                try:
                    entry = parse_line(raw)
                except DamagedLine as exc:
                    damaged.append((manifest_id, lines, str(exc)))
                    continue
                if not is_tombstone(entry):
                    segments.append(_segment_row(first_id + lines, folder_id, relative, entry))
                    if len(segments) >= BATCH:
                        self._insert(segments)
                        segments = []
            self._insert(segments)
            self.db.executemany("INSERT OR REPLACE INTO damaged VALUES (?, ?, ?)", damaged)
            f.seek(max(0, offset - TAIL))
            tail = f.read(offset - f.tell())
        self.db.execute("UPDATE manifest SET inode = ?, size = ?, mtime_ns = ?, offset = ?, lines = ?, "
                        "tail = ? WHERE id = ?",
                        (status.st_ino, status.st_size, mtime, offset, lines, tail, manifest_id))
        self._mark_present(folder, manifest_id)

    def _insert(self, rows: list) -> None:
        self.db.executemany("INSERT INTO segment VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def _drop_rows(self, manifest_id: int) -> None:
        first, last = _line_ids(manifest_id)
        self._changed_hours.update(catalogue_pages.hour(start_us) for (start_us,) in self.db.execute(
            "SELECT start_us FROM segment WHERE id BETWEEN ? AND ? AND present", (first, last)))
        self.db.execute("DELETE FROM segment WHERE id BETWEEN ? AND ?", (first, last))
        self.db.execute("DELETE FROM damaged WHERE manifest_id = ?", (manifest_id,))

    def _drop_manifest(self, manifest_id: int) -> None:
        self._drop_rows(manifest_id)
        self.db.execute("DELETE FROM manifest WHERE id = ?", (manifest_id,))

    def _dirs_changed(self, folder: Path, dirs: dict) -> bool:
        return any(mtime == -1 or _mtime(os.path.join(folder, name)) != mtime for name, mtime in dirs.items())

    def _mark_present(self, folder: Path, manifest_id: int) -> None:
        """Mark the manifest's segments present or not by their folders' listings, and keep
        the folders' mtimes and the manifest's summary."""
        first, last = _line_ids(manifest_id)
        changes, dirs = [], {}
        now = time.time_ns()
        for row_id, start_us, file, present in self.db.execute(
                "SELECT id, start_us, file, present FROM segment WHERE id BETWEEN ? AND ?", (first, last)):
            name_in, _, name = file.rpartition("/")
            if name_in not in dirs:
                mtime = _mtime(folder / name_in)
                dirs[name_in] = mtime if mtime is not None and now - mtime > RACY_NS else -1
            if (name in self._listing(folder, name_in)) != bool(present):
                changes.append((0 if present else 1, row_id))
                self._changed_hours.add(catalogue_pages.hour(start_us))
        self.db.executemany("UPDATE segment SET present = ? WHERE id = ?", changes)
        self.db.execute(
            "UPDATE manifest SET dirs = ?5, (segments, total_ms, w_device, w_file, w_start, w_duration, "
            "w_prob_mean, w_prob_max, day, day_device) = (SELECT count(*), coalesce(sum(duration_ms), 0), "
            "coalesce(max(length(coalesce(device, ?1))), 0), coalesce(max(length(file)), 0), "
            "coalesce(max(length(start)), 0), coalesce(max(length(duration)), 0), "
            "coalesce(max(length(prob_mean)), 0), coalesce(max(length(prob_max)), 0), "
            "min(substr(start, 1, 10)), CASE WHEN count(DISTINCT substr(start, 1, 10)) = 1 "
            "AND count(DISTINCT coalesce(device, ?1)) = 1 THEN min(coalesce(device, ?1)) END "
            "FROM segment WHERE id BETWEEN ?2 AND ?3 AND present AND problem IS NULL) WHERE id = ?4",
            (folder.name, first, last, manifest_id, json.dumps(dirs)))

    def _listing(self, folder: Path, name_in: str) -> set:
        key = (folder, name_in)
        if key not in self._listings:
            try:
                self._listings[key] = set(os.listdir(folder / name_in))
            except (FileNotFoundError, NotADirectoryError):
                self._listings[key] = set()
        return self._listings[key]


def _line_ids(manifest_id: int) -> tuple:
    """The first and last id a segment row of the manifest can have."""
    first = manifest_id << LINE_BITS
    return first, first + (1 << LINE_BITS) - 1


def _segment_row(row_id: int, folder_id: int, manifest: str, entry: dict) -> tuple:
    """A segment row: its cells as `edge list` prints them, or the problem that stops it
    (naming ``manifest``, its path in the device folder: the folder is put before it when shown)."""
    start = datetime.fromisoformat(entry["start"])
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    start_us = (start - EPOCH) // timedelta(microseconds=1)
    seq = min(entry["seq"], MAX_INT)
    try:
        checked_entry(Path(manifest), entry)
    except EdgeError as exc:
        return (start_us, folder_id, seq, row_id, _text(entry["file"]), None, None, None, None, None, None,
                None, str(exc))
    file, start_text, duration, prob_mean, prob_max, recovered = list_row(entry)
    duration_ms = min(milliseconds(duration), MAX_INT)
    return (start_us, folder_id, seq, row_id, _text(file), _text(device_cell(entry)), start_text, duration,
            duration_ms, prob_mean, prob_max, recovered, None)


def _relative(manifest: Path, folder: Path) -> str:
    """``manifest``'s path in ``folder`` (a card's manifest is at its root or in a day folder)."""
    parent = manifest.parent
    return manifest.name if parent == folder else f"{parent.name}/{manifest.name}"


def _text(value: Optional[str]) -> Optional[str]:
    """A cell sqlite can store (UTF-8): a lone surrogate from a damaged line is escaped."""
    if value is None or value.isascii():
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _mtime(path) -> Optional[int]:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=600, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA cache_size = -32768")  # 32 MB
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:  # not built meanwhile
                if version:
                    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                        db.execute(f"DROP TABLE {name}")
                _create(db)
            db.execute("COMMIT")
    except BaseException:
        db.close()
        raise
    return db


def _create(db: sqlite3.Connection) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _damaged(exc: sqlite3.Error) -> bool:
    """Whether sqlite's error says the file is not a (whole) database."""
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


def _remove(path: Path) -> None:
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            name.unlink()
        except FileNotFoundError:
            pass
