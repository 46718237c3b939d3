"""`edge list`: the segments of the card, or of many devices' folders merged into one table.

On the device (no DIR) the card's manifests are read as they are. In the office (`edge list
DIR...`) the answer comes from the catalogue (edge.catalogue), which reads only what changed
in the manifests since the last run; ``--no-catalogue`` reads every manifest instead, as
before, and is what the catalogue's output is compared with (tests/test_catalogue.py).
"""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import datetime
from pathlib import Path
from typing import Optional

from .config import add_config_argument, load_config, resolve_data_path
from .day_range import DayRange, add_day_arguments
from .entries import checked_segments
from .errors import EdgeError
from .manifest import DAY_FOLDER, MANIFEST, has_manifest

LIST_COLUMNS = ("file", "start", "duration_s", "prob_mean", "prob_max", "recovered")
OFFICE_COLUMNS = ("device",) + LIST_COLUMNS
DAY_COLUMNS = ("day", "segments", "speech")
"""`edge list --days`: a line per day (and device, with DIR), what the segments of LIST_COLUMNS sum to."""


def add_command(subparsers) -> None:
    """Register `edge list`."""
    listing = subparsers.add_parser("list", help="list the recorded segments",
                                    description="Show the segments on the card, or with DIR... those of "
                                                "many devices' folders merged (a copy, a NAS share, an "
                                                "rclone mount): a table, or CSV for a spreadsheet.")
    listing.add_argument("dirs", nargs="*", type=Path, metavar="DIR",
                         help="a device's folder (with manifest.jsonl) or a folder of such folders")
    listing.add_argument("--csv", action="store_true", help="comma-separated values on stdout")
    add_day_arguments(listing)
    listing.add_argument("--days", action="store_true",
                         help="a line per device and day (its segments and hours of speech) instead of "
                              "a line per segment: a fleet's year at a glance")
    listing.add_argument("--no-catalogue", action="store_true",
                         help="with DIR: read every manifest instead of the catalogue in the user's "
                              "cache folder (slow for many devices; the catalogue is left as it is)")
    add_config_argument(listing)
    listing.set_defaults(func=run_list_command)


def run_list_command(args: argparse.Namespace) -> int:
    days = DayRange.from_args(args)
    if args.dirs and not args.no_catalogue:
        from .catalogue import open_catalogue  # it formats its rows with list_row, below
        from .catalogue_table import day_rows, write_listing

        folders = device_folders(args.dirs)
        with open_catalogue() as catalogue:
            catalogue.update(folders)
            if args.days:
                _write(("device",) + DAY_COLUMNS, *day_rows(catalogue.db, folders, days), args.csv)
            else:
                write_listing(catalogue.db, folders, sys.stdout, as_csv=args.csv, days=days)
        return 0
    if args.dirs:
        columns = OFFICE_COLUMNS
        rows = [[_device(folder, entry)] + list_row(entry) for folder, entry in merged_segments(args.dirs)
                if days.holds(entry)]
    else:
        settings = load_config(args.config)
        columns = LIST_COLUMNS
        rows = [list_row(entry) for entry in checked_segments(resolve_data_path(settings.storage.recordings_dir))
                if days.holds(entry)]
    keys = len(columns) - len(LIST_COLUMNS)  # the device's cell, with DIR
    if args.days:
        _write(columns[:keys] + DAY_COLUMNS, *_by_day(rows, keys), args.csv)
    else:
        duration = keys + LIST_COLUMNS.index("duration_s")
        _write(columns, rows, speech_total(len(rows), round(sum(float(row[duration]) for row in rows))), args.csv)
    return 0


def _by_day(rows: list, keys: int) -> tuple:
    """The DAY_COLUMNS rows (by day, then device) and their last line, of segment rows whose
    first ``keys`` cells (the device) come before LIST_COLUMNS'."""
    start, duration = keys + LIST_COLUMNS.index("start"), keys + LIST_COLUMNS.index("duration_s")
    sums: dict = {}
    for row in rows:
        key = (row[start][:10], *row[:keys])
        segments, ms = sums.get(key, (0, 0))
        sums[key] = (segments + 1, ms + milliseconds(row[duration]))
    table = [[*device, day, str(segments), clock_text(round(ms / 1000))]
             for (day, *device), (segments, ms) in sorted(sums.items())]
    return table, speech_total(len(rows), round(sum(ms for _, ms in sums.values()) / 1000))


def device_folders(dirs: list) -> list:
    """The device folders (holding a manifest.jsonl) that ``dirs`` name or contain."""
    folders = []
    for folder in dirs:
        try:
            if not folder.is_dir():
                raise EdgeError(f"{folder}: no such folder")
        except PermissionError:
            raise EdgeError(f"{folder}: permission denied") from None
        # A card's day folders hold its manifests: they are not devices of their own.
        candidates = [folder] + sorted(sub for sub in _listing(folder)
                                       if not sub.name.startswith(".") and not DAY_FOLDER.match(sub.name))
        folders += [candidate for candidate in candidates if _has_manifest(candidate)]
    if not folders:
        raise EdgeError(f"{', '.join(map(str, dirs))}: no {MANIFEST} here nor in a folder one level down")
    return folders


def _listing(folder: Path) -> list:
    try:
        return [sub for sub in folder.iterdir() if sub.is_dir()]
    except PermissionError:
        raise EdgeError(f"{folder}: permission denied") from None


def _has_manifest(folder: Path) -> bool:
    """A card's or a copy's folder: a manifest.jsonl, or day folders that have one."""
    try:
        return has_manifest(folder)
    except PermissionError:
        raise EdgeError(f"{folder}: permission denied") from None


def merged_segments(dirs: list) -> list:
    """(device folder, entry) of every segment present in the folders, by start time."""
    found = []
    for folder in device_folders(dirs):
        try:
            found += [(folder, entry) for entry in checked_segments(folder)]
        except PermissionError:
            raise EdgeError(f"{folder}: permission denied") from None
    return sorted(found, key=lambda pair: (datetime.fromisoformat(pair[1]["start"]), pair[0].name, pair[1]["seq"]))


def _device(folder: Path, entry: dict) -> str:
    """The device that recorded a segment, as its manifest says (a folder may be renamed);
    the folder's name for an entry without one."""
    return device_cell(entry) or folder.name


def device_cell(entry: dict) -> Optional[str]:
    """The device a segment's line names, or None when it names none."""
    device = entry.get("device")
    return device if isinstance(device, str) and device else None


def list_row(entry: dict) -> list:
    """The cells of a segment's row after its device: what LIST_COLUMNS name."""
    # Spreadsheets read "2026-11-24 09:30:12" as a date and time, not an ISO string with an
    # offset; the manifest keeps the exact time.
    start = datetime.fromisoformat(entry["start"]).strftime("%Y-%m-%d %H:%M:%S")
    return [entry["file"], start, f"{entry['duration_s']:.3f}", _probability(entry["prob_mean"]),
            _probability(entry["prob_max"]), "yes" if entry.get("recovered") else "no"]


def _probability(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.3f}"


def _write(columns: tuple, rows: list, last_line: str, as_csv: bool) -> None:
    """The table (``last_line`` under it) or CSV of ``rows``."""
    if as_csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
        return
    widths = [max([len(column)] + [len(row[i]) for row in rows]) for i, column in enumerate(columns)]
    for row in [list(columns)] + rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(last_line)


def milliseconds(duration: str) -> int:
    """A duration_s cell (three decimals) in whole milliseconds."""
    return int(duration.replace(".", ""))


def clock_text(seconds: int) -> str:
    """H:MM:SS."""
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def speech_total(segments: int, seconds: int) -> str:
    """The table's last line."""
    return f"{segments} segments, {clock_text(seconds)} of speech"
