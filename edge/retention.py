"""Retention: segments recorded more than ``storage.keep_days`` ago are deleted.

A Pi has no real-time clock: until NTP syncs, its wall clock may be years behind or ahead,
and it may jump when it syncs; a clock that says it is synchronised may still be wrong (a bad
time server, a hand-set date). A segment is therefore deleted only on evidence of its age:

- recorded in the current boot: CLOCK_BOOTTIME now minus its ``monotonic_s`` (exact, whatever
  the wall clock says);
- recorded with a synchronised clock, the clock synchronised now and consistent with the
  evidence (below): wall time now minus its ``start``;
- recorded with an unsynchronised clock in a boot where another segment had a synchronised
  one: that segment's time plus the difference of their ``monotonic_s`` (same boot, same
  CLOCK_BOOTTIME), when the clock is synchronised now and consistent. Boots whose id was
  unknown cannot be told apart, so a segment of such a boot has no anchor but its own stamp.

A segment is also at least as old as any segment recorded after it (sequence numbers only
grow), so an unknown age takes the largest known age of a later segment. A segment whose age
stays unknown (recorded unsynchronised, with nothing recorded after it whose age is known) is
kept: retention waits for evidence rather than deleting on a guess.

The synchronised wall clock is consistent when it agrees (within ``CLOCK_TOLERANCE_S``) with
boot time for every segment of this boot stamped with a synchronised clock, and puts the start
of this boot after every segment stamped with a synchronised clock in an earlier boot. When the
evidence disagrees, the sweep deletes nothing at all, logs why (once, when the reason changes)
and keeps the reason in ``SegmentRetention.paused`` for `edge status`.

Deleted files are logged and a tombstone line is appended to the manifest:
``{"deleted": FILE, "seq": N, "reason": ..., "at": ISO}``.

A sweep works on whole day folders in the order they were begun and stops at the first day
with a segment it proves young (ages only shrink as ``seq`` grows): what it reads is that day
and the folder written last (the newest segments: the evidence of later ones, and what the
wall clock is checked against), whatever the card's history, and the next day too when a
segment of that day has no age of its own and the next day's may (the wall clock is trusted,
or its last line was recorded in this boot). A day whose segments are all gone is retired
(edge.manifest.retire_day), so that no later sweep reads it again. Less evidence can only make
an age smaller, never larger: a sweep may delete later than one that read everything, never
more. With ``keep_days`` null it deletes nothing and reads only up to the oldest segment left.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Optional

from .card import CardState, days_in_order, retire_day
from .manifest import (MANIFEST, append_manifest, day_manifest, fsync_dir, is_tombstone, last_entry, manifest_path,
                       manifest_segments)
from .sync_state import SyncState

log = logging.getLogger(__name__)

DAY_S = 86400.0
CLOCK_TOLERANCE_S = 600.0
"""How far apart wall time and boot time may drift over the same span and still agree, in
seconds: NTP steps and slews, and a segment's stamps are taken a moment apart."""
UNPROVEN_DAYS_READ = 7
"""Day folders of segments of unknown age a sweep reads past, at most."""


@dataclass(frozen=True)
class SegmentAge:
    file: str
    seq: int
    age_s: Optional[float]
    """Seconds since the segment was recorded, at least; None when nothing tells."""
    dated: bool = field(default=True, compare=False)
    """Whether its own stamps tell its age (not only a segment recorded after it)."""


def _seconds(entry: dict, key: str) -> Optional[float]:
    """A number field of a manifest entry, None when it is missing or not a finite number
    (a hand-edited or damaged line is no evidence)."""
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _start(entry: dict) -> Optional[float]:
    """The wall time a segment's ``start`` stamp says, in seconds since the epoch."""
    try:
        return datetime.fromisoformat(entry["start"]).timestamp()
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return None


def _days(seconds: float) -> str:
    return f"{seconds / DAY_S:.2f} days"


def _boot(entry: dict) -> Optional[str]:
    boot = entry.get("boot_id")
    return boot if isinstance(boot, str) and boot != "unknown" else None


def _stamped(entry: dict) -> bool:
    """Whether a segment's ``start`` was stamped by a synchronised clock, with its boot time."""
    return (entry.get("clock_synced") is True and _start(entry) is not None
            and _seconds(entry, "monotonic_s") is not None)


def wall_clock_disagreement(entries: list, clock) -> Optional[str]:
    """Why the synchronised wall clock is not evidence of age now (one line), or None when it
    agrees with boot time and the segments on the card."""
    boot_now, boot_id_now = clock.boottime(), clock.boot_id()
    wall_now = clock.wall().timestamp()
    booted_at = wall_now - boot_now  # this boot's start, by the wall clock
    this_boot = boot_id_now if boot_id_now != "unknown" else None
    for entry in entries:
        start, monotonic = _start(entry), _seconds(entry, "monotonic_s")
        if entry.get("clock_synced") is not True or start is None or _boot(entry) is None:
            continue
        if _boot(entry) == this_boot and monotonic is not None:
            by_wall, by_boot = wall_now - start, boot_now - monotonic
            if abs(by_wall - by_boot) > CLOCK_TOLERANCE_S:
                return (f"the synchronised wall clock says {entry['file']} was recorded "
                        f"{_days(by_wall)} ago, boot time says {_days(by_boot)}")
        elif _boot(entry) != this_boot and start > booted_at + CLOCK_TOLERANCE_S:
            return (f"{entry['file']} was recorded in an earlier boot at {entry['start']}, after "
                    f"this boot began by the wall clock ({_days(start - booted_at)} later)")
    return None


def assess_ages(entries: list, clock) -> tuple:
    """How old each listed segment is at least (see the module's docstring), oldest first,
    and why the wall clock was left out (None when it was used or is not synchronised)."""
    entries = sorted(entries, key=lambda e: e["seq"])
    boot_now, boot_id_now = clock.boottime(), clock.boot_id()
    disagreement = wall_clock_disagreement(entries, clock) if clock.synced() else None
    trust_wall = clock.synced() and disagreement is None
    wall_now = clock.wall()
    # One synchronised segment per boot anchors that boot's CLOCK_BOOTTIME to true time.
    anchors = {}
    for entry in entries:
        if _boot(entry) is not None and _boot(entry) not in anchors and _stamped(entry):
            anchors[_boot(entry)] = entry

    def known_age(entry: dict) -> Optional[float]:
        monotonic = _seconds(entry, "monotonic_s")
        if monotonic is None:
            return None
        if _boot(entry) is not None and _boot(entry) == boot_id_now:
            return boot_now - monotonic
        if not trust_wall:
            return None
        # Boots of unknown id cannot be told apart: only a segment's own stamp dates it.
        anchor = anchors.get(_boot(entry)) if _boot(entry) is not None else entry if _stamped(entry) else None
        if anchor is None:
            return None
        recorded = _start(anchor) + monotonic - anchor["monotonic_s"]
        return wall_now.timestamp() - recorded

    ages = []
    later = None  # the largest known age of the segments recorded after this one
    for entry in reversed(entries):
        own = known_age(entry)
        age = max((a for a in (own, later) if a is not None), default=None)
        if age is not None:
            age = max(age, 0.0)
            later = age
        ages.append(SegmentAge(entry["file"], entry["seq"], age, dated=own is not None))
    return ages[::-1], disagreement


def _merged(*readings: list) -> list:
    """The segments of manifests read, each once (the newest day may be one of the others)."""
    return list({entry["file"]: entry for reading in readings for entry in reading}.values())


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
        self.paused: Optional[str] = None
        """Why the last sweep deleted nothing although it might have (the clocks disagree)."""
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
        days = self._days_in_order()
        state = CardState.load(self.root)
        # The folder written last holds the newest segments, whose ages bound every older one's.
        newest = [] if state is None or state.folder is None else manifest_segments(
            self.root / state.folder / MANIFEST, self.root)
        synced = SyncState.load(self.root) if self.sync_remote and self.keep_days is not None else None
        tombstones = []
        self.oldest = None
        unproven = 0
        disagreement = None
        for index, folder in enumerate(days):
            manifest = day_manifest(self.root / folder)
            if not manifest:
                continue  # a day begun whose first segment is still open, or a folder made by hand
            entries = manifest_segments(manifest, self.root)
            own = {entry["file"] for entry in entries if manifest_path(self.root, entry["file"]) == manifest}
            assessed, disagreement = assess_ages(_merged(entries, newest), self.clock)
            if any(not age.dated for age in assessed if age.file in own) and index + 1 < len(days) \
                    and (following := day_manifest(self.root / days[index + 1])) \
                    and self._may_date(following, disagreement):
                # Only a later segment can tell the age of one nothing else dates: the next day's.
                entries += manifest_segments(following, self.root)
                assessed, disagreement = assess_ages(_merged(entries, newest), self.clock)
            ages = [age for age in assessed if age.file in own and (self.root / age.file).exists()]
            if disagreement and self.keep_days is not None:
                self.oldest = self.oldest or next(iter(ages), None)
                break  # the clocks disagree: nothing is deleted, not even what boot time proves old
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
        self._pause(disagreement if self.keep_days is not None else None)
        return sorted(tombstones, key=lambda t: t["seq"])

    def _may_date(self, manifest: Path, disagreement: Optional[str]) -> bool:
        """Whether a day's segments may have an age of their own: the wall clock is trusted, or
        the day was still written in this boot (its last line tells; read when unsure)."""
        if self.clock.synced() and disagreement is None:
            return True
        last = last_entry(manifest)
        return last is None or is_tombstone(last) or (_boot(last) is not None and _boot(last) == self.clock.boot_id())

    def _pause(self, disagreement: Optional[str]) -> None:
        """Keep why retention deletes nothing now, and log it once when it changes."""
        if disagreement != self.paused:
            if disagreement:
                log.warning("retention paused, nothing is deleted: %s", disagreement)
            else:
                log.info("retention resumed: the clocks agree again")
        self.paused = disagreement

    def _rest_until_due(self, manifest: Path, left: list) -> None:
        if left[0].age_s is None:
            return  # what this boot records next may prove it old at any time
        now = self.clock.boottime()
        due = now + (self.keep_days * DAY_S - left[0].age_s if self.keep_days is not None else float("inf"))
        self._rest = (due, self.clock.synced(), manifest, _fingerprint(manifest))
        self._rest_from = now

    def _days_in_order(self) -> list:
        """The card's day folders (names under root) in the order they were begun
        (edge.card.days_in_order: one small file read, not a line of every day); "" for a card
        not yet migrated to day manifests, whose one manifest is at the top."""
        if (self.root / MANIFEST).is_file():
            return [""]
        return days_in_order(self.root)

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
