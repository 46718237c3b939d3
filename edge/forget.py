"""Forgetting the last minutes: the privacy button's long press and `edge forget MINUTES`.

The open segment never becomes a segment (its ``.part`` and sidecar are deleted) and every
segment that began inside the window is deleted, each leaving a tombstone line in the
manifest. Nothing that began before the window is touched.

A power cut must not bring forgotten audio back, and recovery would otherwise finish the
open segment's ``.part`` into a segment. So what is to go is written down first, durably
(``forget.json`` beside the manifest, the file and its folder fsynced); then each file is
deleted and its folder fsynced, and its tombstone appended; then the note is removed.
``SegmentWriter.recover`` carries out a note it finds before it finishes any ``.part``.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterable, Optional

from .manifest import manifest_path, manifest_segments, manifests_in_order
from .storage import SEGMENT_NAME, append_manifest, fsync_dir, read_deletions, write_json_atomically
from .sync_state import SyncState

log = logging.getLogger(__name__)

INTENT = "forget.json"
"""The note of a forget under way, beside the manifest."""


def forget_recent(root: Path, minutes: float, by: str, clock, open_files: Iterable[Path] = (),
                  export_state: Optional[Path] = None) -> list[dict]:
    """Forget what was recorded under ``root`` in the last ``minutes``: ``open_files`` (the
    open segment's files, let go by SegmentWriter.discard) and the segments that began
    inside the window. ``by`` says who asked ("button", "edge forget"). Returns what was
    forgotten: ``{"file", "seq", "start" (None for the open one), "delete", "copies"}`` per
    segment."""
    root = Path(root)
    now = clock.wall()
    since_wall = now - timedelta(minutes=minutes)
    since_boot = clock.boottime() - minutes * 60
    boot_id = clock.boot_id()
    synced = SyncState.load(root)
    export = _last_export(export_state)
    items = []
    for entry in _newest_first(root, lambda entry: _began_inside(entry, since_boot, boot_id, since_wall)):
        items.append({"file": entry["file"], "seq": entry["seq"], "start": entry["start"],
                      "delete": [entry["file"]], "copies": _copies(entry, synced, export)})
    items.reverse()
    open_files = [Path(path) for path in open_files]
    if open_files:
        final = open_files[0].name.removesuffix(".part")
        name = open_files[0].parent.relative_to(root).joinpath(final).as_posix()
        items.append({"file": name, "seq": int(SEGMENT_NAME.match(final).group(1)), "start": None,
                      "delete": [path.relative_to(root).as_posix() for path in open_files],
                      "copies": []})
    intent = {"at": now.isoformat(timespec="seconds"), "minutes": minutes,
              "reason": f"forgotten by {by} at {now.strftime('%H:%M:%S')}", "segments": items}
    try:
        write_json_atomically(root / INTENT, intent)
    except OSError:
        # A full card cannot take the note but may still take deletions: forget what it can.
        _carry_out(root, intent, noted=False)
        raise
    _carry_out(root, intent)
    return items


def finish_interrupted_forget(root: Path) -> Optional[dict]:
    """Carry out the forget a power cut interrupted, if any; returns its note."""
    root = Path(root)
    path = root / INTENT
    path.with_name(INTENT + ".tmp").unlink(missing_ok=True)  # a note cut off while written: nothing was deleted
    try:
        intent = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        # Written whole or not at all (atomically): only a foreign hand can damage it.
        log.error("%s: unreadable, the forget it records cannot be finished; "
                  "delete the last minutes' segments by hand", path)
        return None
    log.warning("finishing the forget of %s interrupted by a power cut", intent["at"])
    _carry_out(root, intent)
    return intent


def _newest_first(root: Path, inside) -> list:
    """The segments under ``root`` that ``inside`` accepts, newest first, reading day by day
    back only until a day has none: the window is minutes, the card's history years."""
    found = []
    for manifest in reversed(manifests_in_order(root)):
        entries = manifest_segments(manifest, root)
        chosen = [entry for entry in reversed(entries) if inside(entry)]
        found += chosen
        if entries and not chosen:
            break
    return found


def _carry_out(root: Path, intent: dict, noted: bool = True) -> None:
    manifests = {manifest_path(root, item["file"]) for item in intent["segments"]}
    done = {tombstone["deleted"] for manifest in manifests for tombstone in read_deletions(manifest)}
    for item in intent["segments"]:
        for name in item["delete"]:
            path = root / name
            path.unlink(missing_ok=True)
            fsync_dir(path.parent)
        if item["file"] in done:
            continue  # a power cut came after this one's tombstone
        reason = intent["reason"]
        if item["copies"]:
            reason += f"; a copy exists elsewhere: {'; '.join(item['copies'])}"
        append_manifest(manifest_path(root, item["file"]), {"deleted": item["file"], "seq": item["seq"],
                                          "reason": reason, "at": intent["at"]})
        log.warning("%s: %s", item["file"], reason)
    if noted:
        (root / INTENT).unlink()
        fsync_dir(root)


def _began_inside(entry: dict, since_boot: float, boot_id: str, since_wall: datetime) -> bool:
    # Within this boot CLOCK_BOOTTIME is exact whatever the wall clock says; a segment of an
    # earlier boot (a restart inside the window) has only its wall time.
    if boot_id != "unknown" and entry.get("boot_id") == boot_id:
        return entry["monotonic_s"] >= since_boot
    return datetime.fromisoformat(entry["start"]) >= since_wall


def _copies(entry: dict, synced: SyncState, export: Optional[dict]) -> list[str]:
    copies = []
    if entry["file"] in synced.synced:
        copies.append(f"copied to {synced.remote or 'the sync remote'} by edge sync")
    if export is not None and export["updated"] >= datetime.fromisoformat(entry["start"]):
        copies.append(f"maybe on the USB stick of the export at {export['updated'].strftime('%H:%M')}")
    return copies


def _last_export(path: Optional[Path]) -> Optional[dict]:
    """The last USB export's state (edge.export publishes it beside the daemon's status)."""
    if path is None:
        return None
    try:
        state = json.loads(Path(path).read_text())
        return {"updated": datetime.fromisoformat(state["updated"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None
