"""What `edge export` and `edge sync` share: the destination's manifest and SHA256SUMS, a file
read back from the medium rather than the page cache, and the card's originals let go once
their copies are proven (tombstones in the manifest keep ``seq`` growing)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator

from .card import retire_day
from .manifest import manifest_path
from .storage import fsync_dir, rewrite_manifest

SUMS = "SHA256SUMS"


def merge_manifest(existing: Iterable[dict], verified: Iterable[dict]) -> Iterator[dict]:
    """``existing`` manifest entries (a line repeated once) plus those of ``verified`` not yet
    among them (same file and SHA-256), in order: a copy's manifest only ever grows. A stream:
    a stick used all year holds a year's lines, of which only a digest each is kept."""
    lines, keys = set(), set()
    for entry in existing:
        line = _digest(json.dumps(entry))
        if line not in lines:
            lines.add(line)
            keys.add(_digest(json.dumps(entry_key(entry))))
            yield entry
    for entry in verified:
        key = _digest(json.dumps(entry_key(entry)))
        if key not in keys:
            keys.add(key)
            yield entry


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def sha256sums(entries: Iterable[dict]) -> list:
    """Lines of a SHA256SUMS file that `sha256sum -c` accepts."""
    return [f"{entry['sha256']}  {entry['file']}" for entry in entries]


def remove_segments(root: Path, verified: list, problems: list, reason: str) -> list:
    """Delete the segments of ``verified`` (copied elsewhere and verified) from the card; their
    manifest lines become tombstones saying ``reason`` (which also keep ``seq`` growing);
    returns the entries removed, and notes a line per failure."""
    # Files first, manifest lines after: a run stopped in between leaves lines whose file
    # is gone (skipped everywhere), never a file that no manifest lists.
    removed = []
    for entry in verified:
        try:
            (root / entry["file"]).unlink(missing_ok=True)
        except OSError as exc:
            problems.append(f"{entry['file']}: copied, but cannot remove it from the card ({exc.strerror})")
            continue
        removed.append(entry)
    removed_keys = {entry_key(entry) for entry in removed}
    at = datetime.now().astimezone().isoformat(timespec="seconds")
    for manifest in sorted({manifest_path(root, entry["file"]) for entry in removed}):
        try:
            for folder in {(root / entry["file"]).parent for entry in removed
                           if manifest_path(root, entry["file"]) == manifest}:
                fsync_dir(folder)
            rewrite_manifest(manifest, lambda entry: entry_key(entry) not in removed_keys,
                             lambda entry: {"deleted": entry["file"], "seq": entry["seq"], "reason": reason, "at": at})
            if manifest.parent != root:
                retire_day(root, manifest.parent)
        except OSError as exc:
            # Lines whose file is gone are skipped everywhere: untidy, not harmful.
            problems.append(f"{manifest}: cannot remove the copied segments' lines ({exc.strerror})")
    return removed


def entry_key(entry: dict) -> tuple:
    return entry["file"], entry["sha256"]


def megabytes(size: int) -> str:
    """Bytes as export and sync report them: decimal megabytes to a tenth."""
    return f"{size / 1e6:.1f} MB"
