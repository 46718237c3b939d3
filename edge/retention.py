"""Retention: segments recorded more than ``storage.keep_days`` ago are deleted.

A Pi has no real-time clock: until NTP syncs, its wall clock may be years behind or ahead,
and it may jump when it syncs. A segment is therefore never aged by comparing a wall time
with a wall time that may be wrong. What is known of a segment's age, in this order:

- recorded in the current boot: CLOCK_BOOTTIME now minus its ``monotonic_s`` (exact, whatever
  the wall clock says);
- recorded with a synchronised clock, the clock synchronised now: wall time now minus its
  ``start``;
- recorded with an unsynchronised clock in a boot where another segment had a synchronised
  one: that segment's time plus the difference of their ``monotonic_s`` (same boot, same
  CLOCK_BOOTTIME), when the clock is synchronised now.

A segment is also at least as old as any segment recorded after it (sequence numbers only
grow), so an unknown age takes the largest known age of a later segment. A segment whose age
stays unknown (recorded unsynchronised, with nothing recorded after it whose age is known) is
kept: retention waits for evidence rather than deleting on a guess.

Deleted files are logged and a tombstone line is appended to the manifest:
``{"deleted": FILE, "seq": N, "reason": ..., "at": ISO}``.

A sweep works on whole day folders in the order they were begun and stops at the first day
with a segment it proves young (ages only shrink as ``seq`` grows): what it reads is that day,
the next one and the folder written last (the newest segments, the evidence of later ones),
whatever the card's history. A day whose segments are all gone is retired
(edge.manifest.retire_day), so that no later sweep reads it again. Less evidence can only make
an age smaller, never larger: a sweep may delete later than one that read everything, never
more. With ``keep_days`` null it deletes nothing and reads only up to the oldest segment left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Optional

from .card import CardState, retire_day
from .manifest import (MANIFEST, append_manifest, card_manifests, fsync_dir, first_seq, manifest_path,
                       manifest_segments)
from .sync import SyncState

log = logging.getLogger(__name__)

DAY_S = 86400.0
UNPROVEN_DAYS_READ = 7
"""Day folders of segments of unknown age a sweep reads past, at most."""


@dataclass(frozen=True)
class SegmentAge:
    file: str
    seq: int
    age_s: Optional[float]
    """Seconds since the segment was recorded, at least; None when nothing tells."""


def segment_ages(entries: list, clock) -> list:
    """How old each listed segment is at least (see the module's docstring), oldest first."""
    entries = sorted(entries, key=lambda e: e["seq"])
    boot_now, boot_id_now = clock.boottime(), clock.boot_id()
    synced_now = clock.synced()
    wall_now = clock.wall()
    # One synchronised segment per boot anchors that boot's CLOCK_BOOTTIME to true time.
    anchors = {}
    for entry in entries:
        if entry.get("clock_synced") and entry.get("boot_id") not in anchors:
            anchors[entry["boot_id"]] = entry

    def known_age(entry: dict) -> Optional[float]:
        if entry.get("boot_id") == boot_id_now and boot_id_now != "unknown":
            return boot_now - entry["monotonic_s"]
        if not synced_now:
            return None
        anchor = anchors.get(entry.get("boot_id"))
        if anchor is None:
            return None
        recorded = (datetime.fromisoformat(anchor["start"]).timestamp()
                    + entry["monotonic_s"] - anchor["monotonic_s"])
        return wall_now.timestamp() - recorded

    ages = []
    later = None  # the largest known age of the segments recorded after this one
    for entry in reversed(entries):
        own = known_age(entry)
        age = max((a for a in (own, later) if a is not None), default=None)
        if age is not None:
            age = max(age, 0.0)
            later = age
        ages.append(SegmentAge(entry["file"], entry["seq"], age))
    return ages[::-1]


def _fingerprint(manifest: Path) -> Optional[tuple]:
    try:
        status = manifest.stat()
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns


class SegmentRetention:
    """Deletes the segments under ``root`` that are older than ``keep_days`` (None: none)."""

    def __init__(self, root: Path, keep_days: Optional[float], clock, sync_remote: Optional[str] = None):
        self.root = Path(root)
        self.keep_days = keep_days
        self.clock = clock
        self.sync_remote = sync_remote
        """The remote `edge sync` copies to, if any: deleting what never reached it is said."""
        self.oldest: Optional[SegmentAge] = None
        """The oldest segment left after the last sweep."""
        self._first_seq: dict = {}  # day folder -> (inode of its manifest, seq of its first line)
        self._rest: Optional[tuple] = None  # (boot time due, clock synced, manifest, its fingerprint)
        self._rest_from = 0.0

    def sweep(self) -> list:
        """Delete what is too old; returns the tombstones written to the manifest, by seq.

        Once the oldest segment left has a known age, nothing can be due before it is: until
        then (in this boot, with the clock as it was, that day's manifest unchanged) a sweep
        only ages it, and reads nothing but the manifest's inode."""
        if self._rest is not None:
            due, synced_then, manifest, seen = self._rest
            now = self.clock.boottime()
            if now < due and self.clock.synced() == synced_then and _fingerprint(manifest) == seen:
                oldest = self.oldest
                if oldest is not None and oldest.age_s is not None:
                    self.oldest = replace(oldest, age_s=oldest.age_s + now - self._rest_from)
                self._rest_from = now
                return []
        self._rest = None
        manifests = self._by_first_seq(card_manifests(self.root))
        state = CardState.load(self.root)
        # The folder written last holds the newest segments, whose ages bound every older one's.
        newest = [] if state is None or state.folder is None else manifest_segments(
            self.root / state.folder / MANIFEST, self.root)
        synced = SyncState.load(self.root) if self.sync_remote and self.keep_days is not None else None
        tombstones = []
        self.oldest = None
        unproven = 0
        for index, manifest in enumerate(manifests):
            window = {entry["file"]: entry for day in manifests[index:index + 2]
                      for entry in manifest_segments(day, self.root)}
            window.update((entry["file"], entry) for entry in newest)
            ages = [age for age in segment_ages(list(window.values()), self.clock)
                    if manifest_path(self.root, age.file) == manifest and (self.root / age.file).exists()]
            left = []
            for age in ages:
                if self.keep_days is None or age.age_s is None or age.age_s <= self.keep_days * DAY_S:
                    left.append(age)
                    continue
                tombstone = self._delete(age)
                if synced is not None and not synced.is_synced(age.file):
                    log.warning("deleted %s before it was copied to %s", age.file, self.sync_remote)
                tombstones.append(tombstone)
            if self.oldest is None and left:
                self.oldest = left[0]
            # Ages only shrink as seq grows: after a segment proven young, all are young. Days
            # of segments nothing ages (recorded in another boot, no clock to tell, nothing
            # of this boot yet) are passed over, a bounded few a sweep.
            unproven += bool(left)
            if (self.keep_days is None and left or any(age.age_s is not None for age in left)
                    or unproven > UNPROVEN_DAYS_READ):
                self._rest_until_due(manifest, left)
                break
            if not left and self.keep_days is not None and manifest.parent != self.root:
                retire_day(self.root, manifest.parent)
        return sorted(tombstones, key=lambda t: t["seq"])

    def _rest_until_due(self, manifest: Path, left: list) -> None:
        if left[0].age_s is None:
            return  # what this boot records next may prove it old at any time
        now = self.clock.boottime()
        due = now + (self.keep_days * DAY_S - left[0].age_s if self.keep_days is not None else float("inf"))
        self._rest = (due, self.clock.synced(), manifest, _fingerprint(manifest))
        self._rest_from = now

    def _by_first_seq(self, manifests: list) -> list:
        """Day manifests in the order they were begun (by their first line's seq): a wrong
        clock can name a newer day folder before an older one. Remembered per manifest file,
        so that a sweep reads one line of a day only once in the daemon's life."""
        keys = {}
        for manifest in manifests:
            try:
                inode = manifest.stat().st_ino
            except FileNotFoundError:
                continue
            key = self._first_seq.get(manifest.parent.name)
            if key is None or key[0] != inode:
                key = self._first_seq[manifest.parent.name] = (inode, first_seq(manifest))
            keys[manifest] = key[1]
        # Days retired or moved off are forgotten: five years of days do not stay in memory.
        self._first_seq = {manifest.parent.name: self._first_seq[manifest.parent.name] for manifest in keys}
        return sorted(keys, key=lambda manifest: (keys[manifest], manifest.name))

    def _delete(self, age: SegmentAge) -> dict:
        path = self.root / age.file
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)
        # File first, tombstone after: a power cut in between leaves a listed file that is
        # gone (skipped everywhere), never a tombstone for a file still on the card.
        tombstone = {"deleted": age.file, "seq": age.seq,
                     "reason": f"retention: recorded {age.age_s / DAY_S:.2f} days ago, "
                               f"storage.keep_days is {self.keep_days:g}",
                     "at": self.clock.wall().isoformat(timespec="seconds")}
        append_manifest(manifest_path(self.root, age.file), tombstone)
        log.warning("deleted %s: %s", age.file, tombstone["reason"])
        return tombstone
