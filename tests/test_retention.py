"""Retention (storage.keep_days): old segments go, by when they were recorded, never because
the clock jumped. The clock is a fake one the tests set; the segments are real files."""

from __future__ import annotations

import errno
import json
import os
import threading
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from conftest import T0, FakeClock, PacedSource, make_recorder
from edge.cli import main
from edge.config import load_config, settings_from_dict
from edge.errors import EdgeError
from edge.export import SegmentExporter
import edge.card
import edge.retention
from edge.card import DAYS_BEGUN
from edge.manifest import append_manifest, manifest_path
from edge.retention import (CLOCK_TOLERANCE_S, UNPROVEN_DAYS_READ, SegmentAge, SegmentRetention,
                            assess_ages)
from edge.sync_state import SyncState
from edge.storage import (MANIFEST, SegmentEnd, SegmentStart, SegmentWriter, iter_segments,
                          read_deletions, read_manifest)

DAY = 86400.0
END = SegmentEnd(prob_mean=0.8, prob_max=0.9, overflows=0, dropped_frames=0)


def record(root, clock, seconds=0.2):
    """One segment recorded now, as the recorder stamps it."""
    writer = SegmentWriter(root, "room1", "m", "v")
    writer.prepare()
    writer.open(SegmentStart(source="mic", start_s=0.0, start=clock.wall().isoformat(timespec="milliseconds"),
                             monotonic_s=clock.boottime(), boot_id=clock.boot_id(),
                             clock_synced=clock.synced()))
    writer.append(np.ones(int(16000 * seconds), np.int16))
    return writer.close(END)["file"]


def on_card(root):
    return [entry["file"] for entry in iter_segments(root)]


def test_segments_older_than_keep_days_are_deleted_and_tombstoned(tmp_path):
    clock = FakeClock()
    files = []
    for _ in range(6):  # one a day
        files.append(record(tmp_path, clock))
        clock.advance(DAY)
    retention = SegmentRetention(tmp_path, keep_days=3.5, clock=clock)  # now: day 6
    tombstones = retention.sweep()
    assert [t["deleted"] for t in tombstones] == files[:3]  # 6, 5 and 4 days old
    assert on_card(tmp_path) == files[3:]
    assert not any((tmp_path / f).exists() for f in files[:3])
    assert tombstones[0]["reason"] == "retention: recorded 6.00 days ago, storage.keep_days is 3.5"
    assert read_deletions(tmp_path / MANIFEST) == tombstones
    assert (retention.oldest.file, round(retention.oldest.age_s / DAY, 3)) == (files[3], 3.0)
    assert retention.sweep() == []  # nothing more is old enough
    # The commands that read the manifest still understand it.
    dest = tmp_path / "stick"
    dest.mkdir()
    report = SegmentExporter(tmp_path, dest, "room1").run()
    assert report.ok and report.copied == 3
    assert [e["file"] for e in read_manifest(dest / "room1" / MANIFEST)] == files[3:]
    # A new segment after a restart does not reuse a deleted one's number.
    assert record(tmp_path, clock).startswith("20261107/000007_")


def test_deleting_a_segment_never_copied_off_is_said_in_the_log(tmp_path, caplog):
    clock = FakeClock()
    synced_file, unsynced_file = record(tmp_path, clock), record(tmp_path, clock)
    clock.advance(5 * DAY)
    state = SyncState(remote="nas:room1")
    state.synced[synced_file] = {"sha256": "x", "size": 1, "modtime": "t", "listed": True}
    state.save(tmp_path)
    with caplog.at_level("WARNING", logger="edge.retention"):
        SegmentRetention(tmp_path, keep_days=2, clock=clock, sync_remote="nas:room1").sweep()
    assert on_card(tmp_path) == []
    never = [r.getMessage() for r in caplog.records if "before it was copied" in r.getMessage()]
    assert never == [f"deleted {unsynced_file} before it was copied to nas:room1"]


def test_without_keep_days_nothing_is_deleted(tmp_path):
    clock = FakeClock()
    first = record(tmp_path, clock)
    clock.advance(400 * DAY)
    retention = SegmentRetention(tmp_path, keep_days=None, clock=clock)
    assert retention.sweep() == [] and on_card(tmp_path) == [first]
    assert retention.oldest.age_s == 400 * DAY


def test_a_clock_that_jumps_deletes_nothing(tmp_path):
    clock = FakeClock()
    first = record(tmp_path, clock)
    clock.advance(DAY)
    second = record(tmp_path, clock)
    # Reboot without network: the wall clock says 2036, then 1970; it is one hour later.
    clock.reboot("boot-b", datetime(2036, 1, 1, tzinfo=timezone.utc), synced=False)
    retention = SegmentRetention(tmp_path, keep_days=2, clock=clock)
    assert retention.sweep() == []
    clock.now = datetime(1970, 1, 1, tzinfo=timezone.utc)
    third = record(tmp_path, clock)  # stamped 1970 in this boot
    assert retention.sweep() == []
    assert on_card(tmp_path) == [first, second, third]
    # In this boot CLOCK_BOOTTIME counts, whatever the wall clock says: three days later the
    # 1970 segment is three days old, and so (at least) are the two recorded before it.
    clock.advance(3 * DAY)
    clock.now = datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert [t["deleted"] for t in retention.sweep()] == [first, second, third]


def test_unsynchronised_segments_are_aged_by_evidence_or_kept(tmp_path):
    clock = FakeClock(synced=False, wall=datetime(1970, 1, 1, tzinfo=timezone.utc))
    early = record(tmp_path, clock)  # before NTP, in boot a
    clock.advance(60)
    clock.now, clock.is_synced = T0, True  # NTP sets the clock
    anchored = record(tmp_path, clock)
    clock.reboot("boot-b", datetime(1970, 1, 1, tzinfo=timezone.utc), synced=False)
    orphan = record(tmp_path, clock)  # boot b never synced
    clock.reboot("boot-c", T0 + timedelta(days=10), synced=True)
    ages = {a.file: a.age_s for a in assess_ages(list(iter_segments(tmp_path)), clock)[0]}
    # The early one is 60 s older than the synchronised one of its boot.
    assert ages[anchored] == 10 * DAY and ages[early] == 10 * DAY + 60
    # Boot b never knew the time and nothing was recorded after it: unknown, kept.
    assert ages[orphan] is None
    retention = SegmentRetention(tmp_path, keep_days=5, clock=clock)
    assert [t["deleted"] for t in retention.sweep()] == [early, anchored]
    assert on_card(tmp_path) == [orphan] and retention.oldest.age_s is None
    # Something recorded now proves the orphan is older than that, never younger.
    clock.advance(6 * DAY)
    latest = record(tmp_path, clock)
    clock.advance(6 * DAY)
    assert [t["deleted"] for t in retention.sweep()] == [orphan, latest]


def test_daemon_deletes_old_segments_says_which_never_reached_the_remote_and_edge_status_shows_the_oldest(
        tmp_path, detector, capsys, caplog):
    clock = FakeClock()
    recordings = tmp_path / "rec"
    old = record(recordings, clock)
    clock.advance(2 * DAY)
    kept = record(recordings, clock)
    clock.advance(DAY)
    SyncState(remote="nas:room1").save(recordings)  # edge sync ran, and copied neither
    config = tmp_path / "edge.yaml"
    config.write_text(json.dumps({"storage": {"recordings_dir": str(recordings), "keep_days": 2.5},
                                  "service": {"status_file": str(tmp_path / "status.json")},
                                  "sync": {"remote": "nas:room1"}, "led": {"pin": None}}))
    settings = load_config(config)
    recorder = make_recorder(settings, detector, recordings, clock=clock,
                             status_path=tmp_path / "status.json")
    with caplog.at_level("WARNING", logger="edge.retention"):
        recorder.run(PacedSource(np.zeros(16000, np.int16), speed=50), threading.Event())
    assert on_card(recordings) == [kept]
    assert [t["deleted"] for t in read_deletions(recordings / MANIFEST)] == [old]
    assert [r.getMessage() for r in caplog.records if "before it was copied" in r.getMessage()] == [
        f"deleted {old} before it was copied to nas:room1"]
    main(["status", "--config", str(config)])  # exit 1: the fake clock's status is weeks old
    out = capsys.readouterr().out
    assert f"oldest segment: {kept}, recorded 1.0 days ago; deleted after 2.5 days" in out


def test_the_daemon_gives_the_oldest_segment_s_age_in_days_to_a_thousandth(tmp_path, detector):
    clock = FakeClock()
    recordings = tmp_path / "rec"
    oldest = record(recordings, clock)
    record(recordings, clock)
    clock.advance(1.23551 * DAY)  # rounds up to 1.236 days; 1.2355 (4 decimals) and 1.235 (one day of 86401 s) are wrong
    settings = settings_from_dict({"storage": {"keep_days": 30}, "led": {"pin": None}})
    recorder = make_recorder(settings, detector, recordings, clock=clock)
    recorder.run(PacedSource(np.zeros(16000, np.int16), speed=50), threading.Event())
    status = recorder.status
    assert (status.oldest_segment, status.oldest_segment_days, status.retention_paused) == (oldest, 1.236, None)


def test_a_card_that_refuses_deletions_is_a_warning_and_recording_goes_on(tmp_path, detector, lesson, caplog):
    def refused():
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    settings = settings_from_dict({"storage": {"keep_days": 1}, "led": {"pin": None}})
    recorder = make_recorder(settings, detector, tmp_path / "rec", clock=FakeClock())
    recorder.retention.sweep = refused
    recorder.run(PacedSource(lesson, speed=50), threading.Event())
    assert "cannot delete old segments now (Read-only file system)" in caplog.messages
    assert recorder.entries


def test_keep_days_is_checked_like_every_setting():
    assert settings_from_dict({"storage": {"keep_days": 30}}).storage.keep_days == 30.0
    with pytest.raises(EdgeError, match=r"storage\.keep_days must be a number or null, got 'a month'"):
        settings_from_dict({"storage": {"keep_days": "a month"}})


def test_the_first_segment_on_an_empty_card_is_the_oldest_at_once(tmp_path, detector, lesson):
    settings = settings_from_dict({"storage": {"keep_days": 1}, "led": {"pin": None}})
    recorder = make_recorder(settings, detector, tmp_path / "rec", clock=FakeClock())
    assert recorder.status.oldest_segment is None
    recorder.run(PacedSource(lesson, speed=50), threading.Event())
    first = read_manifest(tmp_path / "rec" / MANIFEST)[0]["file"]
    assert (recorder.status.oldest_segment, recorder.status.oldest_segment_days) == (first, 0.0)


def test_export_move_keeps_the_deletion_lines(tmp_path):
    clock = FakeClock()
    old = record(tmp_path / "card", clock)
    clock.advance(3 * DAY)
    new = record(tmp_path / "card", clock)
    [tombstone] = SegmentRetention(tmp_path / "card", keep_days=2, clock=clock).sweep()
    (tmp_path / "stick").mkdir()
    report = SegmentExporter(tmp_path / "card", tmp_path / "stick", "room1", move=True).run()
    assert report.ok and report.moved == 1
    assert on_card(tmp_path / "card") == [] and (tmp_path / "stick" / "room1" / new).exists()
    retained, moved = sorted(read_deletions(tmp_path / "card" / MANIFEST), key=lambda d: d["seq"])
    assert retained == tombstone and tombstone["deleted"] == old
    assert moved["deleted"] == new and moved["reason"].startswith("moved: copy verified in ")


def lessons_over_two_boots(root, clock):
    """Seven segments as the issue found them: five in a first boot (days 0, 5, 10, 15, 20),
    two in the current one (days 25 and 28), every one stamped with a synchronised clock."""
    first_boot = []
    for _ in range(5):
        first_boot.append(record(root, clock))
        clock.advance(5 * DAY)
    clock.reboot("boot-b", T0 + timedelta(days=25), synced=True)
    this_boot = [record(root, clock)]
    clock.advance(3 * DAY)
    this_boot.append(record(root, clock))
    clock.advance(4 * DAY)  # now: day 32
    return first_boot, this_boot


def paused_by_a_clock_400_days_ahead(this_boot) -> dict:
    """The reasons a sweep may give on day 32 with the clock 400 days ahead (a segment of this
    boot, days 25 and 28: its age by the wall clock against its age by boot time), each with
    that age by boot time in days."""
    return {f"the synchronised wall clock says {file} was recorded {days + 400:.2f} days ago, "
            f"boot time says {days:.2f} days": days for file, days in zip(this_boot, (7, 4))}


def test_a_synchronised_clock_400_days_ahead_deletes_nothing_and_says_why(tmp_path, caplog):
    clock = FakeClock()
    first_boot, this_boot = lessons_over_two_boots(tmp_path, clock)
    honest_now = clock.now
    clock.now = honest_now + timedelta(days=400)  # a bad time server; the flag says synchronised
    retention = SegmentRetention(tmp_path, keep_days=30, clock=clock)
    caplog.set_level("INFO", logger="edge.retention")
    assert retention.sweep() == []
    # The sweep reads a window of day folders: the reason may name either segment of this boot.
    assert retention.paused in paused_by_a_clock_400_days_ahead(this_boot)
    said = [f"retention paused, nothing is deleted: {retention.paused}"]
    assert [r.getMessage() for r in caplog.records] == said  # at once
    assert retention.sweep() == []
    assert on_card(tmp_path) == first_boot + this_boot
    assert [r.getMessage() for r in caplog.records] == said  # and once
    # What boot time proves is still reported: the oldest is at least as old as the segment
    # of this boot the reason names (7 or 4 days). Even what boot time alone proves old is
    # kept while the clocks disagree.
    proven_days = paused_by_a_clock_400_days_ahead(this_boot)[retention.paused]
    assert (retention.oldest.file, retention.oldest.age_s) == (first_boot[0], proven_days * DAY)
    assert SegmentRetention(tmp_path, keep_days=proven_days - 1, clock=clock).sweep() == []
    # The clock put right, the evidence agrees again: the one 32-day-old segment goes.
    # With nothing to delete, nothing is paused.
    unbounded = SegmentRetention(tmp_path, keep_days=None, clock=clock)
    assert unbounded.sweep() == [] and unbounded.paused is None
    clock.now = honest_now
    caplog.clear()
    assert [t["deleted"] for t in retention.sweep()] == [first_boot[0]]
    assert retention.paused is None
    assert [r.getMessage() for r in caplog.records][-1] == "retention resumed: the clocks agree again"


def test_clocks_that_disagree_read_no_day_that_cannot_help(tmp_path, monkeypatch):
    # The wall clock is not trusted and the next day is of an earlier boot: nothing there has
    # an age of its own, and reading it would only cost.
    clock = FakeClock()
    lessons_over_two_boots(tmp_path, clock)
    clock.now += timedelta(days=400)
    days = [p.name for p in sorted(tmp_path.iterdir()) if p.is_dir()]
    read = days_read(monkeypatch)
    assert SegmentRetention(tmp_path, keep_days=30, clock=clock).sweep() == []
    assert sorted(read) == [days[0], days[-1]]


def test_an_honest_synchronised_clock_deletes_what_is_old_from_earlier_boots(tmp_path):
    clock = FakeClock()
    first_boot, this_boot = lessons_over_two_boots(tmp_path, clock)
    retention = SegmentRetention(tmp_path, keep_days=14, clock=clock)
    # Day 32: days 0, 5, 10 and 15 are older than 14 days (17 days: wall clock of boot a).
    assert [t["deleted"] for t in retention.sweep()] == first_boot[:4]
    assert on_card(tmp_path) == [first_boot[4]] + this_boot and retention.paused is None
    # A wall clock a few minutes off is no disagreement.
    clock.now += timedelta(minutes=5)
    assert retention.sweep() == [] and retention.paused is None


def test_a_synchronised_clock_behind_deletes_nothing_and_says_why(tmp_path):
    clock = FakeClock()
    earlier = [record(tmp_path, clock)]
    clock.advance(DAY)
    earlier.append(record(tmp_path, clock))
    # Rebooted 40 days later, the clock "synchronised" a year in the past.
    clock.reboot("boot-b", T0 - timedelta(days=365), synced=True)
    retention = SegmentRetention(tmp_path, keep_days=30, clock=clock)
    assert retention.sweep() == [] and on_card(tmp_path) == earlier
    assert retention.paused == (f"{earlier[0]} was recorded in an earlier boot at "
                                f"{T0.isoformat(timespec='milliseconds')}, after this boot began "
                                "by the wall clock (365.00 days later)")
    clock.now = T0 + timedelta(days=40)  # put right
    assert [t["deleted"] for t in retention.sweep()] == earlier


def test_a_damaged_manifest_entry_is_no_evidence_and_stops_nothing(tmp_path):
    clock = FakeClock()
    old = record(tmp_path, clock)
    clock.advance(DAY)
    damaged = record(tmp_path, clock)
    clock.advance(DAY)
    manifest = manifest_path(tmp_path, damaged)  # its day folder's, which lists it alone
    [entry] = [json.loads(line) for line in manifest.read_text().splitlines()]
    entry.update(monotonic_s="soon", boot_id=None, clock_synced="yes")  # still a segment's line
    manifest.write_text(json.dumps(entry) + "\n")
    clock.reboot("boot-b", T0 + timedelta(days=4), synced=True)
    ages = {a.file: a.age_s for a in assess_ages(list(iter_segments(tmp_path)), clock)[0]}
    assert ages == {old: 4 * DAY, damaged: None}
    assert [t["deleted"] for t in SegmentRetention(tmp_path, keep_days=3, clock=clock).sweep()] == [old]
    # A start that is no time makes the line a damaged one, which the reader skips: still no
    # evidence, and nothing stops.
    entry.update(start=7)
    manifest.write_text(json.dumps(entry) + "\n")
    clock.advance(10 * DAY)
    assert SegmentRetention(tmp_path, keep_days=3, clock=clock).sweep() == []
    assert (tmp_path / damaged).exists() and not (tmp_path / old).exists()


def test_edge_status_says_why_retention_is_paused(tmp_path, detector, capsys):
    clock = FakeClock()
    recordings = tmp_path / "rec"
    first_boot, this_boot = lessons_over_two_boots(recordings, clock)
    clock.now += timedelta(days=400)
    config = tmp_path / "edge.yaml"
    config.write_text(json.dumps({"storage": {"recordings_dir": str(recordings), "keep_days": 30},
                                  "service": {"status_file": str(tmp_path / "status.json")},
                                  "led": {"pin": None}}))
    recorder = make_recorder(load_config(config), detector, recordings, clock=clock,
                             status_path=tmp_path / "status.json")
    recorder.run(PacedSource(np.zeros(16000, np.int16), speed=50), threading.Event())
    assert on_card(recordings) == first_boot + this_boot
    main(["status", "--config", str(config)])
    out = capsys.readouterr().out
    assert any(f"retention:      paused, nothing is deleted: {reason}\n" in out
               for reason in paused_by_a_clock_400_days_ahead(this_boot)), out


@pytest.mark.parametrize("damage", [
    {"monotonic_s": "soon", "boot_id": [], "clock_synced": "yes"},  # fields retention reads
    {"start": 7, "monotonic_s": "soon", "boot_id": [], "clock_synced": "yes"},  # a damaged line
])
def test_the_daemon_records_past_damaged_fields_of_the_manifest(tmp_path, detector, lesson, damage):
    clock = FakeClock()
    recordings = tmp_path / "rec"
    old = record(recordings, clock)
    manifest = manifest_path(recordings, old)
    entry = json.loads(manifest.read_text())
    entry.update(damage)
    manifest.write_text(json.dumps(entry) + "\n")
    clock.advance(3 * DAY)
    settings = settings_from_dict({"storage": {"keep_days": 1}, "led": {"pin": None}})
    recorder = make_recorder(settings, detector, recordings, clock=clock)
    recorder.run(PacedSource(lesson, speed=50), threading.Event())
    new = [e for e in read_manifest(recordings) if e["file"] != old]
    assert new and all(e["seq"] > entry["seq"] for e in new)  # recorded after it
    # The damaged one kept (no proof of age): its file, no tombstone, and its line somewhere.
    assert (recordings / old).exists() and old not in [t["deleted"] for t in read_deletions(recordings)]
    if "start" in damage:  # moved aside at start, never dropped
        assert old in (manifest.parent / "manifest.damaged.jsonl").read_text()
    else:
        assert on_card(recordings)[0] == old


@pytest.mark.parametrize("state", ["[]", '{"synced": 5}', '{"synced": {"a.wav": 1}}', "{"])
def test_a_damaged_sync_state_never_stops_retention(tmp_path, state):
    clock = FakeClock()
    old = record(tmp_path, clock)
    clock.advance(3 * DAY)
    (tmp_path / "sync-state.json").write_text(state)
    retention = SegmentRetention(tmp_path, keep_days=2, clock=clock, sync_remote="nas:room1")
    assert [t["deleted"] for t in retention.sweep()] == [old]


def days_read(monkeypatch) -> list:
    """The day folders each sweep of SegmentRetention reads segments from, in order (one list
    per call of manifest_segments)."""
    read = []
    real = edge.retention.manifest_segments

    def spy(manifest, root):
        read.append(manifest.parent.name)
        return real(manifest, root)
    monkeypatch.setattr(edge.retention, "manifest_segments", spy)
    return read


def test_a_segment_is_kept_until_exactly_keep_days_and_deleted_after(tmp_path, caplog):
    clock = FakeClock()
    lesson = record(tmp_path, clock)
    assert assess_ages(list(iter_segments(tmp_path)), clock)[0] == [SegmentAge(lesson, 1, 0.0)]
    clock.advance(2 * DAY)
    retention = SegmentRetention(tmp_path, keep_days=2, clock=clock)
    with caplog.at_level("INFO", logger="edge.retention"):
        assert retention.sweep() == [] and on_card(tmp_path) == [lesson]
        assert retention.oldest == SegmentAge(lesson, 1, 2 * DAY) and retention.paused is None
        clock.advance(1)
        [tombstone] = retention.sweep()
    assert tombstone == {"deleted": lesson, "seq": 1,
                         "reason": "retention: recorded 2.00 days ago, storage.keep_days is 2",
                         "at": clock.wall().isoformat(timespec="seconds")}
    assert read_deletions(tmp_path) == [tombstone] and on_card(tmp_path) == []
    # No remote: nothing to say about copies; no clock trouble: nothing about pausing.
    assert [r.getMessage() for r in caplog.records] == [f"deleted {lesson}: {tombstone['reason']}"]


def test_an_empty_card_is_swept_without_a_word(tmp_path, caplog):
    retention = SegmentRetention(tmp_path, keep_days=2, clock=FakeClock())
    with caplog.at_level("INFO", logger="edge.retention"):
        assert retention.sweep() == []
    assert (retention.oldest, retention.paused, caplog.records) == (None, None, [])


def test_within_a_day_the_oldest_go_first_and_the_oldest_left_is_reported(tmp_path):
    clock = FakeClock()
    files = []
    for _ in range(4):  # one an hour, one day folder
        files.append(record(tmp_path, clock))
        clock.advance(3600)
    clock.advance(2 * DAY - 2.5 * 3600)  # ages: 2 days and 1.5 h, 0.5 h; 2 days less 0.5 h, 1.5 h
    assert [a.file for a in assess_ages(list(iter_segments(tmp_path)), clock)[0]] == files
    retention = SegmentRetention(tmp_path, keep_days=2, clock=clock)
    assert [t["deleted"] for t in retention.sweep()] == files[:2]
    assert [t["deleted"] for t in read_deletions(tmp_path)] == files[:2]  # in that order on the card
    assert on_card(tmp_path) == files[2:]
    assert retention.oldest == SegmentAge(files[2], 3, 2 * DAY - 1800)


def test_between_sweeps_retention_only_ages_the_oldest_and_deletes_it_when_due(tmp_path, monkeypatch):
    clock = FakeClock()
    old = record(tmp_path, clock)
    clock.advance(DAY)
    young = record(tmp_path, clock)  # the next day's folder
    clock.advance(DAY / 2)
    retention = SegmentRetention(tmp_path, keep_days=2, clock=clock)
    assert retention.sweep() == [] and retention.oldest == SegmentAge(old, 1, 1.5 * DAY)
    read = days_read(monkeypatch)
    for seconds in (DAY / 4, DAY / 4 - 1):  # nothing can be due before the oldest is: no manifest is read
        clock.advance(seconds)
        assert retention.sweep() == [] and read == []
    assert retention.oldest == SegmentAge(old, 1, 2 * DAY - 1)
    clock.advance(2)
    assert [t["deleted"] for t in retention.sweep()] == [old] and read
    assert on_card(tmp_path) == [young] and retention.oldest == SegmentAge(young, 2, DAY + 1)


def test_a_sweep_reads_the_first_day_it_proves_young_and_the_newest(tmp_path, monkeypatch):
    # Every segment is dated by its own stamps (this boot): the next day could tell nothing more.
    clock = FakeClock()
    for _ in range(4):
        record(tmp_path, clock)
        clock.advance(DAY)
    days = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    read = days_read(monkeypatch)
    assert SegmentRetention(tmp_path, keep_days=10, clock=clock).sweep() == []
    assert sorted(read) == [days[0], days[3]]


def test_a_sweep_reads_a_bounded_number_of_days_of_unknown_age(tmp_path, monkeypatch):
    # Twelve days of a boot that never knew the time; nothing recorded in this one yet.
    clock = FakeClock(boot="boot-b", synced=False, wall=datetime(1970, 1, 1, tzinfo=timezone.utc))
    files = []
    for _ in range(12):
        files.append(record(tmp_path, clock))
        clock.advance(DAY)
    clock.reboot("boot-c", datetime(1970, 2, 1, tzinfo=timezone.utc), synced=False)
    days = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    read = days_read(monkeypatch)
    retention = SegmentRetention(tmp_path, keep_days=1, clock=clock)
    assert retention.sweep() == [] and on_card(tmp_path) == files
    # It passes over UNPROVEN_DAYS_READ days and stops at the next, and reads the newest day
    # as evidence; no day is read as the next one's: the last line of each says it was
    # recorded in another boot, and no clock dates that boot.
    assert sorted(read) == sorted(days[:UNPROVEN_DAYS_READ + 1] + days[-1:])
    assert retention.oldest == SegmentAge(files[0], 1, None)


@pytest.mark.parametrize("layout", ["a day folder made by hand", "one manifest at the top"])
def test_old_segments_go_whatever_else_the_card_holds(tmp_path, layout):
    clock = FakeClock()
    old = record(tmp_path, clock)
    clock.advance(3 * DAY)
    young = record(tmp_path, clock)
    if layout == "a day folder made by hand":  # no manifest, not in days.jsonl: ordered first
        (tmp_path / "20000101").mkdir()
    else:  # a card not migrated to day manifests (its lines in one manifest.jsonl)
        days = sorted(tmp_path.glob(f"*/{MANIFEST}"))
        (tmp_path / MANIFEST).write_text("".join(day.read_text() for day in days))
        for day in days:
            day.unlink()
    assert [t["deleted"] for t in SegmentRetention(tmp_path, keep_days=2, clock=clock).sweep()] == [old]
    assert on_card(tmp_path) == [young]


@pytest.mark.parametrize("last_line", ["a segment", "a tombstone", "torn", "damaged"])
def test_the_next_day_dates_an_older_boot_whatever_its_last_line(tmp_path, last_line):
    # No clock to trust: only this boot's segments have an age of their own. The next day was
    # begun in the last boot and went on in this one; its last line may say so, or not.
    clock = FakeClock(boot="boot-a", synced=False, wall=datetime(1970, 1, 1, tzinfo=timezone.utc))
    first = record(tmp_path, clock)
    clock.advance(DAY)
    second = record(tmp_path, clock)
    clock.reboot("boot-b", datetime(1970, 1, 2, 12, tzinfo=timezone.utc), synced=False)
    third = record(tmp_path, clock)  # the same day's folder, in this boot
    last = record(tmp_path, clock)
    manifest = manifest_path(tmp_path, last)
    assert manifest == manifest_path(tmp_path, second) != manifest_path(tmp_path, first)
    clock.advance(3 * DAY)
    newest = record(tmp_path, clock)  # a new day's folder: the writer will not repair the last one
    if last_line == "a tombstone":  # a button's forget, an export --move
        (tmp_path / last).unlink()
        append_manifest(manifest, {"deleted": last, "seq": 4, "reason": "forgotten", "at": "x"})
    elif last_line in ("torn", "damaged"):  # a power cut mid-append; a bad sector
        with open(manifest, "a") as f:
            f.write('{"file": "torn by a power cut' + ("\n" if last_line == "damaged" else ""))
    retention = SegmentRetention(tmp_path, keep_days=2, clock=clock)
    # The first two are at least as old as the third, 3 days old by this boot's time.
    old = [first, second, third] + ([last] if last_line != "a tombstone" else [])
    assert [t["deleted"] for t in retention.sweep()] == old
    assert on_card(tmp_path) == [newest]


def test_the_newest_day_dates_the_oldest_when_the_next_day_cannot(tmp_path):
    clock = FakeClock(boot="boot-a", synced=False, wall=datetime(1970, 1, 1, tzinfo=timezone.utc))
    first = record(tmp_path, clock)
    clock.advance(DAY)
    second = record(tmp_path, clock)
    clock.reboot("boot-b", datetime(1970, 1, 5, tzinfo=timezone.utc), synced=False)
    newest = record(tmp_path, clock)
    clock.advance(3 * DAY)
    # The next day's last line says nothing of its boot: it is read, and dates nothing.
    (tmp_path / second).unlink()
    append_manifest(manifest_path(tmp_path, second), {"deleted": second, "seq": 2, "reason": "forgotten", "at": "x"})
    retention = SegmentRetention(tmp_path, keep_days=2, clock=clock)
    assert [t["deleted"] for t in retention.sweep()] == [first, newest]


@pytest.mark.parametrize("days_begun", ["kept", "lost", "damaged"])
def test_days_are_swept_in_the_order_they_were_begun_whatever_their_names(tmp_path, days_begun):
    clock = FakeClock()
    first = record(tmp_path, clock)  # 20261101
    clock.reboot("boot-b", datetime(1970, 1, 1, tzinfo=timezone.utc), synced=False)
    second = record(tmp_path, clock)  # 19700101
    clock.advance(3 * DAY)
    third = record(tmp_path, clock)  # 19700104
    # A card written before days.jsonl, or one whose lines a power cut or a bad sector took:
    # those days' first manifest lines tell their order.
    if days_begun == "lost":
        (tmp_path / DAYS_BEGUN).unlink()
    elif days_begun == "damaged":
        lines = (tmp_path / DAYS_BEGUN).read_text().splitlines()
        (tmp_path / DAYS_BEGUN).write_text("\n".join(["{not json", '{"folder": "19700101", "seq": "x"}'] + lines[2:])
                                           + "\n" + '{"folder": "2026')
    retention = SegmentRetention(tmp_path, keep_days=2, clock=clock)
    # The first is at least as old as the second, recorded after it in a boot that counts.
    assert [t["deleted"] for t in retention.sweep()] == [first, second]
    assert on_card(tmp_path) == [third]
    fourth = record(tmp_path, clock)  # its day's manifest changes: the next sweep reads again
    clock.advance(2 * DAY + 1)
    assert [t["deleted"] for t in retention.sweep()] == [third, fourth]


def test_a_sweep_reads_no_days_first_line_that_days_jsonl_gives(tmp_path, monkeypatch):
    clock = FakeClock()
    for _ in range(4):
        record(tmp_path, clock)
        clock.advance(DAY)
    first_lines = []
    real_first_seq = edge.card.first_seq
    monkeypatch.setattr(edge.card, "first_seq",
                        lambda manifest: first_lines.append(manifest.parent.name) or real_first_seq(manifest))
    SegmentRetention(tmp_path, keep_days=None, clock=clock).sweep()
    assert first_lines == []
    # A card without it (written by an earlier version): each day's first line is read once,
    # at the first start, and noted; the next start reads none.
    (tmp_path / DAYS_BEGUN).unlink()
    SegmentRetention(tmp_path, keep_days=None, clock=clock).sweep()
    assert sorted(first_lines) == ["20261101", "20261102", "20261103", "20261104"]
    SegmentRetention(tmp_path, keep_days=None, clock=clock).sweep()
    assert len(first_lines) == 4


def test_a_day_gone_while_the_sweep_lists_the_card_stops_nothing(tmp_path, monkeypatch):
    clock = FakeClock()
    old = record(tmp_path, clock)
    clock.advance(3 * DAY)
    real = edge.retention.days_in_order
    monkeypatch.setattr(edge.retention, "days_in_order", lambda root: ["20261030"] + real(root))  # retired since
    assert [t["deleted"] for t in SegmentRetention(tmp_path, keep_days=2, clock=clock).sweep()] == [old]


def test_days_left_empty_are_retired_days_with_segments_stay(tmp_path):
    clock = FakeClock()
    files = []
    for _ in range(3):
        files.append(record(tmp_path, clock))
        clock.advance(DAY)
    SegmentRetention(tmp_path, keep_days=2.5, clock=clock).sweep()
    assert on_card(tmp_path) == files[1:]
    # The first day's tombstone joined the card's deletions and its folder went.
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [f.split("/")[0] for f in files[1:]]
    assert [t["deleted"] for t in read_deletions(tmp_path)] == files[:1]


def test_without_keep_days_the_card_is_left_as_it_is(tmp_path):
    clock = FakeClock()
    gone = record(tmp_path, clock)
    clock.advance(DAY)
    kept = record(tmp_path, clock)
    (tmp_path / gone).unlink()  # taken off by hand: its day lists nothing left
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    clock.advance(400 * DAY)
    retention = SegmentRetention(tmp_path, keep_days=None, clock=clock)
    assert retention.sweep() == [] and retention.oldest == SegmentAge(kept, 2, 400 * DAY)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_boots_of_unknown_id_are_never_taken_for_one_another(tmp_path):
    # /proc gave no boot id: "unknown" in one boot may be any other boot.
    clock = FakeClock(boot="unknown", synced=False, wall=datetime(1970, 1, 1, tzinfo=timezone.utc))
    stray = record(tmp_path, clock)  # at 100 s of its boot, the time unknown
    clock.reboot("unknown", datetime(1970, 1, 1, tzinfo=timezone.utc), synced=False)
    clock.advance(30 * DAY)
    clock.now, clock.is_synced = T0, True  # a month into this boot, NTP sets the clock
    stamped = record(tmp_path, clock)
    clock.advance(DAY)
    # Neither this boot's clock nor the stamp of another segment of an "unknown" boot dates
    # the stray one: only that it was recorded before the stamped one.
    ages = {a.file: a.age_s for a in assess_ages(list(iter_segments(tmp_path)), clock)[0]}
    assert ages == {stray: DAY, stamped: DAY}
    assert SegmentRetention(tmp_path, keep_days=10, clock=clock).sweep() == []
    # Rebooted again, the clock synchronised: the stamped one is dated by its own stamp, and
    # its boot time (of another boot) is no disagreement.
    clock.reboot("unknown", T0 + timedelta(days=40), synced=True)
    retention = SegmentRetention(tmp_path, keep_days=10, clock=clock)
    assert [t["deleted"] for t in retention.sweep()] == [stray, stamped] and retention.paused is None


def test_the_clocks_agree_within_the_tolerance_and_not_a_second_beyond(tmp_path):
    clock = FakeClock()
    lesson = record(tmp_path, clock)
    clock.advance(DAY)
    honest = clock.now
    # A segment of this boot: wall time against boot time.
    clock.now = honest + timedelta(seconds=CLOCK_TOLERANCE_S)
    retention = SegmentRetention(tmp_path, keep_days=30, clock=clock)
    assert retention.sweep() == [] and retention.paused is None
    clock.now = honest + timedelta(seconds=CLOCK_TOLERANCE_S + 1)
    retention = SegmentRetention(tmp_path, keep_days=30, clock=clock)
    assert retention.sweep() == [] and retention.paused == (
        f"the synchronised wall clock says {lesson} was recorded 1.01 days ago, boot time says 1.00 days")
    # A segment of an earlier boot: the wall clock may put this boot's start up to the
    # tolerance before it (a reboot minutes after a lesson, stamps a moment apart), no more.
    for seconds_before, paused in ((CLOCK_TOLERANCE_S, False), (CLOCK_TOLERANCE_S + 1, True)):
        clock.reboot("boot-b", T0, synced=True)
        clock.now = T0 - timedelta(seconds=seconds_before - clock.boottime())  # began then
        retention = SegmentRetention(tmp_path, keep_days=30, clock=clock)
        assert retention.sweep() == [] and on_card(tmp_path) == [lesson]
        assert (retention.paused or "").startswith(f"{lesson} was recorded in an earlier boot") is paused


def test_segments_recorded_before_ntp_in_this_boot_neither_fake_nor_hide_a_wrong_clock(tmp_path):
    clock = FakeClock(synced=False, wall=datetime(1970, 1, 1, tzinfo=timezone.utc))
    early = record(tmp_path, clock)
    clock.advance(60)
    clock.now, clock.is_synced = T0, True  # NTP sets the clock
    stamped = record(tmp_path, clock)
    clock.advance(3 * DAY)
    retention = SegmentRetention(tmp_path, keep_days=2, clock=clock)
    # The 1970 stamp is no evidence against the clock: boot time ages both.
    assert [t["deleted"] for t in retention.sweep()] == [early, stamped] and retention.paused is None
    # The same again in a new boot, then a bad time server: the stamped segment shows it,
    # whatever comes before it.
    clock.reboot("boot-b", datetime(1970, 1, 1, tzinfo=timezone.utc), synced=False)
    early = record(tmp_path, clock)
    clock.advance(60)
    clock.now, clock.is_synced = T0 + timedelta(days=10), True
    stamped = record(tmp_path, clock)
    clock.advance(DAY)
    clock.now += timedelta(days=400)
    retention = SegmentRetention(tmp_path, keep_days=30, clock=clock)
    assert retention.sweep() == [] and on_card(tmp_path) == [early, stamped]
    assert retention.paused == (f"the synchronised wall clock says {stamped} was recorded 401.00 days "
                                "ago, boot time says 1.00 days")


def test_a_pause_over_a_day_whose_files_are_gone_is_still_a_pause(tmp_path):
    clock = FakeClock()
    first_boot, this_boot = lessons_over_two_boots(tmp_path, clock)
    (tmp_path / first_boot[0]).unlink()  # taken off by hand; its day lists nothing left
    clock.now += timedelta(days=400)
    retention = SegmentRetention(tmp_path, keep_days=30, clock=clock)
    assert retention.sweep() == [] and retention.paused is not None
    assert on_card(tmp_path) == first_boot[1:] + this_boot


def test_an_oldest_of_unknown_age_stays_unknown_while_retention_rests(tmp_path):
    # Boot b: two days before NTP, then a synchronised segment that dates them, on a third
    # day the first day's window does not hold; boot d never knew the time.
    clock = FakeClock(boot="boot-b", synced=False, wall=datetime(1970, 1, 1, tzinfo=timezone.utc))
    first = record(tmp_path, clock)
    clock.advance(DAY)
    record(tmp_path, clock)
    clock.advance(DAY)
    clock.now, clock.is_synced = T0, True
    record(tmp_path, clock)
    clock.reboot("boot-d", datetime(1970, 1, 10, tzinfo=timezone.utc), synced=False)
    record(tmp_path, clock)
    clock.reboot("boot-e", T0 + timedelta(days=1), synced=True)
    retention = SegmentRetention(tmp_path, keep_days=30, clock=clock)
    assert retention.sweep() == [] and retention.oldest == SegmentAge(first, 1, None)
    clock.advance(3600)  # the second day proved young: retention rests, and ages nothing unknown
    assert retention.sweep() == [] and retention.oldest == SegmentAge(first, 1, None)
