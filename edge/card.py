"""The card's small durable state, the one-time migration from a single manifest.jsonl to a
manifest per day folder, and retiring days whose segments are all gone (docs/card-layout.md).

``card-state.json`` is ``{"seq": S, "folder": F}``: the sequence number of the first segment
written in day folder F, the folder written last. It is written once per new day folder, never
per segment; with F's own numbers it gives the next sequence number without reading any other
day. Lines are read and checked only by ``edge.manifest``.

``days.jsonl`` is ``{"folder": F, "seq": S}`` per day folder as the writer begins writing to
it: the order the days were begun in, which a wrong clock can make another than their names'.
Retention reads it instead of every day's first manifest line, so that its first sweep after a
start reads one small file, not one file per day of the card's history.
"""

from __future__ import annotations

try:
    import fcntl
except ImportError:  # Windows: only the office commands run there
    fcntl = None

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

from .manifest import (DAMAGED, DAY_FOLDER, DELETIONS, MANIFEST, DamagedLine, day_folder_names, day_folders,
                       first_seq, fsync_dir, is_int, is_tombstone, locked_manifest, manifest_entries,
                       manifest_segments, parse_line, seq_numbers, write_json_atomically, write_lines_atomically,
                       write_raw_lines)

log = logging.getLogger(__name__)

CARD_STATE = "card-state.json"
DAYS_BEGUN = "days.jsonl"
DAY_BEGUN_LINE = re.compile(rb'^\{"folder": "(\d{8})", "seq": (\d+)\}$', re.M)
SEGMENT_NAME = re.compile(r"^(\d{6,})_\d{6}_.+\.wav(\.age)?(\.part)?$")


# -- the card's durable state -------------------------------------------------------------------

@dataclass(frozen=True)
class CardState:
    seq: int
    """Sequence number of the first segment written in ``folder``."""
    folder: Optional[str]
    """The day folder segments were written to last; None on an empty card."""

    @classmethod
    def load(cls, root: Path) -> Optional["CardState"]:
        """The state on the card; None when there is none or it is damaged."""
        try:
            data = json.loads((Path(root) / CARD_STATE).read_bytes())
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            return None
        if (not isinstance(data, dict) or not is_int(data.get("seq")) or data["seq"] < 0
                or not (data.get("folder") is None or
                        (isinstance(data["folder"], str) and DAY_FOLDER.match(data["folder"])))):
            return None
        return cls(data["seq"], data["folder"])

    def save(self, root: Path) -> None:
        write_json_atomically(Path(root) / CARD_STATE, {"seq": self.seq, "folder": self.folder})


def note_day_begun(root: Path, folder: str, seq: int) -> None:
    """Add day folder ``folder`` to ROOT/days.jsonl as its first segment, ``seq``, is opened."""
    # Not fsynced: a line a power cut loses (or a card without the file) only makes
    # days_in_order read that day's first manifest line, as it did before the file existed.
    with open(Path(root) / DAYS_BEGUN, "a") as f:
        f.write(json.dumps({"folder": folder, "seq": seq}) + "\n")


def days_in_order(root: Path) -> list:
    """The names of the day folders under ``root`` in the order they were begun: by the
    sequence number days.jsonl gives each (its first line for a day: a folder the writer came
    back to after a clock jump keeps its first place), else by the first line of the day's
    manifest, which is then added to days.jsonl so that it is read once. Costs microseconds a
    day of history (one listing, one file, no object per day but its name)."""
    root = Path(root)
    begun: dict = {}
    try:
        # Only lines as note_day_begun writes them; any other (cut short, damaged) is passed
        # over, and its day read from its manifest instead.
        for folder, seq in DAY_BEGUN_LINE.findall((root / DAYS_BEGUN).read_bytes()):
            begun.setdefault(folder.decode(), int(seq))
    except FileNotFoundError:
        pass
    names = day_folder_names(root)
    for name in names:
        if name not in begun and (root / name / MANIFEST).is_file():
            begun[name] = first_seq(root / name / MANIFEST)
            try:
                note_day_begun(root, name, begun[name])
            except OSError:
                pass  # a full or read-only card: read again next time
    return sorted(names, key=lambda name: (begun.get(name, 0), name))


def folder_max_seq(folder: Path) -> int:
    """The highest sequence number a day folder shows: in its file names, its manifest lines
    (tombstones too) and what its damaged lines still show."""
    numbers = []
    try:
        numbers += [int(m.group(1)) for name in os.listdir(folder) if (m := SEGMENT_NAME.match(name))]
    except (FileNotFoundError, NotADirectoryError):
        return 0
    numbers += [entry["seq"] for entry in manifest_entries(
        folder / MANIFEST, lambda number, raw, expected: numbers.extend(seq_numbers(raw))) if "seq" in entry]
    return max(numbers, default=0)


def scan_card(root: Path) -> CardState:
    """The state rebuilt from everything on the card (once: no state, or a damaged one)."""
    best = CardState(0, None)
    for folder in day_folders(root):
        top = folder_max_seq(folder)
        if top > best.seq or best.folder is None and top:
            best = CardState(top, folder.name)
    return best


def next_seq(root: Path, state: CardState) -> int:
    """The next sequence number: above the state's and every number in its folder."""
    top = state.seq if state.folder is None else max(state.seq, folder_max_seq(Path(root) / state.folder))
    return top + 1


# -- migration from one manifest to a manifest per day -------------------------------------------

def migrate_card(root: Path) -> list:
    """Split a card's single ``manifest.jsonl`` (written before day manifests) into its day
    folders' manifests, once; returns what was found damaged, for the log and `edge status`.

    Safe against a power cut at any point: the single manifest stays the card's manifest (it
    is what every reader takes when present) until every day manifest is written and synced;
    a migration cut short starts again from it and rewrites the day manifests whole."""
    root = Path(root)
    single = root / MANIFEST
    if not single.is_file():
        return []
    lock = open(single, "rb")
    with lock:
        if fcntl is not None:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # an export rewriting it finishes first
        days: dict = {}
        moved: list = []
        top, top_folder = 0, None
        with open(single, "rb") as f:
            offset = 0
            for number, raw in enumerate(f, 1):
                try:
                    if not raw.endswith(b"\n"):
                        raise DamagedLine("a whole line (this one is cut off)")
                    entry = parse_line(raw)
                    file = entry["deleted"] if is_tombstone(entry) else entry["file"]
                    parts = PurePosixPath(file).parts
                    if len(parts) != 2 or not DAY_FOLDER.match(parts[0]):
                        raise DamagedLine('"file" in a day folder, YYYYMMDD/NAME')
                    days.setdefault(parts[0], []).append((offset, len(raw)))
                    if entry.get("seq", 0) > top:
                        top, top_folder = entry["seq"], parts[0]
                except DamagedLine as exc:
                    moved.append(json.dumps({"line": number, "expected": str(exc),
                                             "text": raw.rstrip(b"\n").decode("utf-8", "backslashreplace")}))
                    top = max([top] + seq_numbers(raw))
                offset += len(raw)
            for day, spans in sorted(days.items()):
                (root / day).mkdir(exist_ok=True)
                lines = []
                for start, length in spans:
                    f.seek(start)
                    lines.append(f.read(length).decode("utf-8", "surrogateescape").rstrip("\n"))
                status = os.fstat(f.fileno())
                write_raw_lines(root / day / MANIFEST, lines, owner=(status.st_uid, status.st_gid),
                                 mode=status.st_mode & 0o7777)
        if moved:
            aside = root / DAMAGED
            try:
                before = aside.read_text().splitlines()
            except FileNotFoundError:
                before = []
            write_lines_atomically(aside, before + [line for line in moved if line not in before])
        scanned = scan_card(root)  # file names too: a segment renamed but not yet listed
        state = max(CardState(top, top_folder), scanned, key=lambda s: s.seq)
        state.save(root)
        os.unlink(single)
        fsync_dir(root)
    log.info("%s: split into %d day manifests (a manifest per day folder)", single, len(days))
    if not moved:
        return []
    numbers = ", ".join(str(json.loads(line)["line"]) for line in moved)
    return [f"{single}: damaged line{'s' if len(moved) > 1 else ''} {numbers} moved to {DAMAGED}"]


# -- whole days -------------------------------------------------------------------------------

def retire_day(root: Path, folder: Path) -> bool:
    """Once no segment a day folder's manifest lists is left on the card, its tombstones join
    ROOT/deletions.jsonl and its manifest goes (the folder too when nothing else is in it),
    so that no later pass reads it again. The folder written last is never retired: the card
    state's sequence number rests on it. Returns whether the day was retired."""
    root = Path(root)
    state = CardState.load(root)
    if state is None or state.folder == folder.name or (root / MANIFEST).exists():
        return False
    manifest = folder / MANIFEST
    with locked_manifest(manifest, create=False):
        damaged = []
        tombstones = [json.dumps(entry) for entry in manifest_entries(
            manifest, lambda number, raw, expected: damaged.append(number)) if is_tombstone(entry)]
        if damaged or manifest_segments(manifest, root):
            return False  # a damaged line is never dropped
        if tombstones:
            with open(root / DELETIONS, "a") as f:
                f.writelines(line + "\n" for line in tombstones)
                f.flush()
                os.fsync(f.fileno())
        os.unlink(manifest)
    try:
        folder.rmdir()
    except OSError:
        pass  # something else is in it (a file no manifest lists): it stays
    fsync_dir(root)
    return True
