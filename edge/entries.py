"""What the office commands need of a segment's manifest line, checked before they use it.

A line damaged on the card or edited by hand may hold any JSON. `edge list`, `edge export`,
`edge decrypt` and `edge sync` read the fields below; a line whose field is unusable stops the
command with one line naming the manifest, the segment and the key, before anything is
copied, deleted or written (the daemon never reads these fields to keep recording).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Callable

from .errors import EdgeError, shown
from .manifest import is_iso_time, is_relative_file, iter_segments, manifest_path

SHA256 = re.compile(r"[0-9a-f]{64}")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "file": (is_relative_file, "a path inside the recordings folder (like 20261124/000001_093000_room1.wav)"),
    "sha256": (lambda v: isinstance(v, str) and SHA256.fullmatch(v) is not None, "64 hex digits"),
    "start": (is_iso_time, "an ISO 8601 time (like 2026-11-24T09:30:00.000+01:00)"),
    "duration_s": (_number, "a number of seconds, 0 or more"),
    "samples": (lambda v: _number(v) and isinstance(v, int), "a whole number, 0 or more"),
    "prob_mean": (lambda v: v is None or _number(v) and v <= 1, "a probability (0 to 1) or null"),
    "prob_max": (lambda v: v is None or _number(v) and v <= 1, "a probability (0 to 1) or null"),
}
OPTIONAL: dict[str, tuple[Callable[[object], bool], str]] = {
    "device": (lambda v: isinstance(v, str) and v != "", "a device name"),
    "recovered": (lambda v: isinstance(v, bool), "true or false"),
}


def checked_entry(manifest: Path, entry: dict) -> dict:
    """``entry`` when the office commands can use it; else an EdgeError naming what is wrong."""
    for key, (usable, expected) in FIELDS.items():
        if key not in entry:
            _damaged(manifest, entry, f"has no '{key}' ({expected})")
        if not usable(entry[key]):
            _damaged(manifest, entry, f"'{key}' must be {expected}, got {shown(entry[key])}")
    for key, (usable, expected) in OPTIONAL.items():
        if key in entry and not usable(entry[key]):
            _damaged(manifest, entry, f"'{key}' must be {expected}, got {shown(entry[key])}")
    return entry


def checked_segments(root: Path) -> list:
    """The segments under ``root`` whose files exist (manifest.iter_segments), each checked."""
    return [checked_entry(manifest_path(root, entry["file"]), entry) for entry in iter_segments(root)]


def _damaged(manifest: Path, entry: dict, problem: str) -> None:
    raise EdgeError(f"{manifest}: the line of segment {entry.get('seq')} {problem}; "
                    "the manifest is damaged or was edited, nothing done")
