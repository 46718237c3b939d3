"""Forgetting the last minutes (edge.forget): what goes, what stays, what the manifest says,
and a power cut at every step of it, below the page cache (LazyFS), never bringing the
forgotten audio back. The segments are real files; the clock is one the tests set."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

import edge.forget
import lazyfs
from conftest import T0, FakeClock
from edge.export_state import ExportStatePublisher
from edge.forget import INTENT, forget_recent
from edge.storage import (MANIFEST, SegmentEnd, SegmentStart, SegmentWriter, file_sha256,
                          iter_segments, read_deletions, read_manifest)
from edge.sync_state import SyncState

END = SegmentEnd(prob_mean=0.8, prob_max=0.9, overflows=0, dropped_frames=0)
NOW_BOOT = 5000.0
WINDOW_MIN = 5


def start(clock: FakeClock, boot: str, boot_s: float, wall_ago_s: float) -> SegmentStart:
    return SegmentStart(source="mic", start_s=0.0,
                        start=(clock.now - timedelta(seconds=wall_ago_s)).isoformat(timespec="milliseconds"),
                        monotonic_s=boot_s, boot_id=boot, clock_synced=True)


def record(writer: SegmentWriter, at: SegmentStart, seconds: float = 1.0) -> str:
    final = writer.open(at)
    writer.append(np.full(int(seconds * 16000), 1000, np.int16))
    writer.close(END)
    return final.relative_to(writer.root).as_posix()


def build_card(root: Path, clock: FakeClock) -> tuple[SegmentWriter, dict]:
    """Segments on either side of a 5-minute window, and one open with synced audio.

    Inside this boot CLOCK_BOOTTIME decides, whatever the wall time says; a segment of an
    earlier boot has only its wall time."""
    writer = SegmentWriter(root, "test", "sha", "test", fsync_interval_s=0.5)
    writer.prepare()
    now = clock.boot_s
    names = {
        "old, wall says recent": record(writer, start(clock, "boot-b", now - 600, 60)),
        "recent, wall says old": record(writer, start(clock, "boot-b", now - 240, 1800)),
        "earlier boot, recent": record(writer, start(clock, "boot-a", 20.0, 180)),
        "earlier boot, old": record(writer, start(clock, "boot-a", 10.0, 1200)),
    }
    final = writer.open(start(clock, "boot-b", now - 2, 2))
    writer.append(np.full(24000, 2000, np.int16))  # 1.5 s: synced once at least
    names["open"] = final.relative_to(root).as_posix()
    return writer, names


FORGOTTEN = ("recent, wall says old", "earlier boot, recent", "open")
KEPT = ("old, wall says recent", "earlier boot, old")


def segment_files(root: Path, name: str) -> list[Path]:
    """Every file of a segment on the card: the finished one, its .part, its sidecar."""
    return [path for path in (root / name).parent.glob(Path(name).name + "*")]


def assert_forgotten(root: Path, names: dict, kept_hashes: dict) -> None:
    """After a forget (and after recovery): the window's audio is gone for good, each with
    one tombstone; what is older is there as it was; the intent is gone."""
    for what in FORGOTTEN:
        assert segment_files(root, names[what]) == [], f"{what}: {segment_files(root, names[what])}"
    assert sorted(e["file"] for e in iter_segments(root)) == sorted(names[what] for what in KEPT)
    for what in KEPT:
        assert file_sha256(root / names[what]) == kept_hashes[what], what
    tombstones = [t["deleted"] for t in read_deletions(root / MANIFEST)]
    assert sorted(tombstones) == sorted(names[what] for what in FORGOTTEN)
    assert not (root / INTENT).exists()


def test_forget_removes_what_began_inside_the_window_and_nothing_older(tmp_path, caplog):
    clock = FakeClock(wall=T0, boottime=NOW_BOOT, boot="boot-b")
    root = tmp_path / "rec"
    writer, names = build_card(root, clock)
    kept = {what: file_sha256(root / names[what]) for what in KEPT}
    with caplog.at_level(logging.WARNING):
        forgotten = forget_recent(root, WINDOW_MIN, "button", clock, writer.discard())
    assert sorted(item["file"] for item in forgotten) == sorted(names[what] for what in FORGOTTEN)
    assert_forgotten(root, names, kept)
    assert {t["reason"] for t in read_deletions(root / MANIFEST)} == {"forgotten by button at 09:00:00"}
    assert all(f"{names[what]}: forgotten by button at 09:00:00" in caplog.text for what in FORGOTTEN)
    # The open segment never became one, not even when the recorder starts again.
    restarted = SegmentWriter(root, "test", "sha", "test")
    assert restarted.prepare() == []
    assert names["open"] not in {e["file"] for e in read_manifest(root / MANIFEST)}
    # Its number is not taken again: the tombstone keeps the sequence growing.
    later = record(restarted, start(clock, "boot-b", NOW_BOOT, 0))
    assert later.split("/")[1][:6] > names["open"].split("/")[1][:6]


def test_a_forgotten_segment_copied_elsewhere_is_deleted_all_the_same_and_says_so(tmp_path, caplog):
    clock = FakeClock(wall=T0, boottime=NOW_BOOT, boot="boot-b")
    root = tmp_path / "rec"
    writer, names = build_card(root, clock)
    synced, later = names["recent, wall says old"], names["earlier boot, recent"]
    SyncState(remote="school-nas:rec/test", synced={synced: {"listed": True}}).save(root)
    export_state = tmp_path / "export.json"
    clock.now += timedelta(seconds=1)
    ExportStatePublisher(export_state).publish("done", 4, 4)  # a real export's file, now
    state = json.loads(export_state.read_text())
    # The export ran after the first began (08:30), before the second (08:57).
    state["updated"] = (clock.now - timedelta(minutes=15)).isoformat(timespec="seconds")
    export_state.write_text(json.dumps(state))
    with caplog.at_level(logging.WARNING):
        forget_recent(root, WINDOW_MIN, "button", clock, writer.discard(), export_state)
    reasons = {t["deleted"]: t["reason"] for t in read_deletions(root / MANIFEST)}
    assert reasons[synced] == ("forgotten by button at 09:00:01; a copy exists elsewhere: "
                               "copied to school-nas:rec/test by edge sync; "
                               "maybe on the USB stick of the export at 08:45")
    assert reasons[later] == reasons[names["open"]] == "forgotten by button at 09:00:01"
    assert f"{synced}: {reasons[synced]}" in caplog.text
    assert not (root / synced).exists() and not (root / later).exists()


class PowerCut(Exception):
    """The power went right after the step that just became durable."""


def cut_after(step: int, monkeypatch) -> list:
    """Count the durable steps of a forget (the intent written, each file deleted with its
    folder fsynced, each tombstone appended, the intent removed); cut after ``step``."""
    done = []

    def durable(function):
        def step_then_maybe_cut(*args, **kwargs):
            function(*args, **kwargs)
            done.append(function.__name__)
            if len(done) == step:
                raise PowerCut(step)
        return step_then_maybe_cut

    for name in ("write_json_atomically", "fsync_dir", "append_manifest"):
        monkeypatch.setattr(edge.forget, name, durable(getattr(edge.forget, name)))
    return done


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    """A LazyFS mount: clear_cache drops every write not fsynced, as a pulled plug does."""
    if lazyfs.unavailable() is not None:
        pytest.skip(lazyfs.unavailable())
    fs = lazyfs.LazyFs(tmp_path_factory.mktemp("card"))
    yield fs
    fs.close()


def test_a_power_cut_at_any_step_of_a_forget_never_brings_the_audio_back(card, monkeypatch):
    clock = FakeClock(wall=T0, boottime=NOW_BOOT, boot="boot-b")
    with monkeypatch.context() as counting:
        steps = cut_after(0, counting)
        writer, _ = build_card(card.mount / "count", clock)
        forget_recent(card.mount / "count", WINDOW_MIN, "button", clock, writer.discard())
    assert steps[0] == "write_json_atomically" and len(steps) >= 8, steps  # intent first
    for step in range(1, len(steps) + 1):
        root = card.mount / f"cut-{step}"
        writer, names = build_card(root, clock)
        kept = {what: file_sha256(root / names[what]) for what in KEPT}
        with monkeypatch.context() as cutting:
            cut_after(step, cutting)
            with pytest.raises(PowerCut):
                forget_recent(root, WINDOW_MIN, "button", clock, writer.discard())
        card.clear_cache()
        # Power back: the recorder starts and recovers what the cut interrupted.
        assert SegmentWriter(root, "test", "sha", "test").prepare() == [], f"cut after step {step}"
        assert_forgotten(root, names, kept)
