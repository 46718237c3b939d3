"""A damaged manifest never stops the recorder, and no command that reads one prints a traceback.

The card is a real folder written by the recorder (`edge process`, the daemon's pipeline and
`edge run` itself); the damage is what a lost sector, a power cut mid-append or a hand edit
leaves: bytes that are not JSON, a line cut short, JSON that is not an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import LESSON_WAV, Daemon, PacedSource, StopAfter, make_recorder, wait_until
import edge.manifest as edge_manifest
from edge.cli import main
from edge.config import load_config
from edge.card import CARD_STATE, migrate_card
from edge.manifest import (DAMAGED, LAST_LINE_STEP, MANIFEST, card_manifests, last_entry, manifest_entries, read_deletions,
                           read_manifest)
from edge.storage import SegmentWriter

# What replaces (or, for the torn line, follows) the manifest's second line.
DAMAGE = {
    "garbage": b"\x00\xff\x13 this sector was lost \xfe\n",
    "torn last line": b'{"seq": 41, "file": "2026',  # also: a number seen only in damage
    "a number": b"42\n",
    "a list": b"[1,2]\n",
    "an object without seq": None,  # the second line with its "seq" taken out
    "a file outside the card": None,  # the second line pointing at ../../etc/passwd
}


def record(out: Path, capsys, *options: str) -> list:
    """`edge process` of the lesson into ``out``; returns the segments it added."""
    before = {entry["file"] for entry in read_manifest(out)}
    code = main(["process", str(LESSON_WAV), "--out", str(out), *options])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    return [entry for entry in read_manifest(out) if entry["file"] not in before]


def audio_on_card(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*.wav*")}


def card_bytes(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def as_single_manifest(root: Path) -> Path:
    """The card as the version before day manifests wrote it: one manifest.jsonl, no state."""
    lines = b"".join(path.read_bytes() for path in card_manifests(root))
    for path in card_manifests(root):
        path.unlink()
    (root / CARD_STATE).unlink()
    (root / MANIFEST).write_bytes(lines)
    return root / MANIFEST


def damage(manifest: Path, kind: str) -> tuple[int, bytes]:
    """Damage the second line of ``manifest``; returns the damaged line's number and bytes."""
    lines = manifest.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 3, "the lesson must give a few segments"
    if kind == "torn last line":
        manifest.write_bytes(b"".join(lines) + DAMAGE[kind])
        return len(lines) + 1, DAMAGE[kind]
    if kind == "an object without seq":
        entry = json.loads(lines[1])
        del entry["seq"]
        bad = (json.dumps(entry) + "\n").encode()
    elif kind == "a file outside the card":
        bad = (json.dumps({**json.loads(lines[1]), "file": "../../etc/passwd"}) + "\n").encode()
    else:
        bad = DAMAGE[kind]
    manifest.write_bytes(b"".join([lines[0], bad] + lines[2:]))
    return 2, bad


def all_whole(root: Path) -> bool:
    damaged = []
    for manifest in card_manifests(root):
        damaged += [(manifest, number) for number, _, _ in _damaged_lines(manifest)]
    return not damaged


def _damaged_lines(manifest: Path) -> list:
    found = []
    for _ in manifest_entries(manifest, lambda number, raw, expected: found.append((number, raw, expected))):
        pass
    return found


def seqs_seen(root: Path) -> list:
    return [entry["seq"] for manifest in card_manifests(root) for entry in manifest_entries(manifest)]


@pytest.mark.parametrize("layout", ["day manifest", "single manifest of the version before"])
@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_manifest_is_repaired_and_the_next_lesson_recorded(tmp_path, capsys, kind, layout):
    out = tmp_path / "rec"
    first = record(out, capsys)
    manifest = card_manifests(out)[-1] if layout == "day manifest" else as_single_manifest(out)
    number, bad = damage(manifest, kind)
    highest = max([entry["seq"] for entry in first] + ([41] if kind == "torn last line" else []))
    audio = audio_on_card(out)
    listed = {json.dumps(entry) for entry in read_manifest(out)}

    added = record(out, capsys)

    assert added and min(entry["seq"] for entry in added) == highest + 1
    assert {k: v for k, v in audio_on_card(out).items() if k in audio} == audio  # nothing deleted or renamed
    assert listed <= {json.dumps(entry) for entry in read_manifest(out)}  # every whole line kept
    assert all_whole(out)
    aside = [json.loads(line) for line in (manifest.parent / DAMAGED).read_text().splitlines()]
    assert [line["line"] for line in aside] == [number]
    assert aside[0]["text"] == bad.rstrip(b"\n").decode("utf-8", "backslashreplace")
    assert not (out / MANIFEST).exists() and (out / CARD_STATE).exists()


def test_a_day_manifest_that_is_not_a_file_is_one_warning_not_silence(tmp_path, capsys):
    out = tmp_path / "rec"
    record(out, capsys)
    day = card_manifests(out)[-1]
    day.unlink()
    day.mkdir()  # made by hand, or by a tool that got the path wrong
    edge_manifest._warned.clear()
    assert main(["list", str(out)]) == 2  # nothing else on the card to list
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if str(day) in line] == [
        f"warning: {day}: not a file (expected that day's manifest): its segments are not listed"], err


@pytest.mark.parametrize("layout", ["day manifest", "single manifest of the version before"])
def test_office_commands_skip_damaged_lines_with_one_line_each_and_change_nothing(tmp_path, capsys, layout):
    out = tmp_path / "rec"
    key = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True).stdout
    config = tmp_path / "edge.yaml"
    config.write_text(json.dumps({"storage": {"recordings_dir": str(out)}, "led": {"pin": None},
                                  "privacy": {"recipients": [public.strip()]},
                                  "service": {"status_file": str(tmp_path / "status.json")}}))
    first = record(out, capsys, "--config", str(config))
    manifest = card_manifests(out)[-1] if layout == "day manifest" else as_single_manifest(out)
    damaged = [damage(manifest, "a number")[0]]
    with open(manifest, "ab") as f:
        f.write(b'{"file": "x.wav", "seq": "seven"}\n')
    damaged.append(len(manifest.read_bytes().splitlines()))
    before = card_bytes(out)
    (tmp_path / "stick").mkdir()
    (tmp_path / "plain").mkdir()
    capsys.readouterr()
    for argv in (["list", str(out)], ["list", "--config", str(config)],
                 ["export", str(tmp_path / "stick"), "--config", str(config)],
                 ["decrypt", "--identity", str(key), str(out), str(tmp_path / "plain")]):
        edge_manifest._warned.clear()  # each command is a process of its own
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 0, (argv, err)
        assert "Traceback" not in err
        warnings = [line for line in err.splitlines() if f"{manifest}:" in line]
        assert [line.split(f"{manifest}:")[1].split(":")[0] for line in warnings] == [str(n) for n in damaged], err
        assert card_bytes(out) == before, argv
    exported = read_manifest(next((tmp_path / "stick").iterdir()) / MANIFEST)
    assert sorted(e["seq"] for e in exported) == sorted(e["seq"] for e in first if e["seq"] != first[1]["seq"])


def test_the_daemon_says_what_it_repaired_in_edge_status(tmp_path, lesson, detector, capsys):
    out = tmp_path / "rec"
    record(out, capsys)
    number, _ = damage(card_manifests(out)[-1], "a list")
    config = tmp_path / "edge.yaml"
    config.write_text(json.dumps({"storage": {"recordings_dir": str(out), "min_free_mb": 1},
                                  "led": {"pin": None}, "service": {"status_file": str(tmp_path / "status.json")}}))
    settings = load_config(config)
    recorder = make_recorder(settings, detector, out, status_path=tmp_path / "status.json")
    stop = threading.Event()
    recorder.run(StopAfter(PacedSource(lesson, speed=1000), len(lesson) // 512, stop), stop)
    assert recorder.entries  # it recorded
    capsys.readouterr()
    main(["status", "--config", str(config)])
    out_text = capsys.readouterr().out
    assert f"manifest.jsonl: damaged line {number} moved to {DAMAGED}" in out_text
    assert json.loads((tmp_path / "status.json").read_text())["manifest_repairs"] == [
        f"{card_manifests(out)[-1]}: damaged line {number} moved to {DAMAGED}"]


def test_edge_run_records_on_a_card_whose_manifest_is_damaged(alsa, lesson, tmp_path, capsys):
    out = tmp_path / "rec"
    first = record(out, capsys)
    damage(as_single_manifest(out), "garbage")
    alsa.add("testmic", lesson)
    config = tmp_path / "edge.yaml"
    config.write_text(f"audio: {{device: testmic, buffer_s: 120}}\n"
                      f"storage: {{recordings_dir: {out}, min_free_mb: 1}}\n"
                      f"led: {{pin: null}}\nservice: {{status_file: {tmp_path / 'status.json'}}}\n")
    daemon = Daemon(tmp_path, config)
    try:
        top = max(entry["seq"] for entry in first)
        wait_until(lambda: any(entry["seq"] > top for entry in read_manifest(out)), "a segment after the repair",
                   timeout=60)
    finally:
        daemon.close()
    assert daemon.logged(f"damaged line 2 moved to {DAMAGED}") == 1, daemon.log
    assert (out / DAMAGED).exists() and not (out / MANIFEST).exists()


class Cut(Exception):
    """The power went here."""


def card_before_day_manifests(tmp_path: Path, capsys, monkeypatch) -> tuple[Path, list, dict]:
    """A card as the version before wrote it: two day folders, the older with a deleted
    segment (a tombstone), line 2 damaged; returns it, the seqs it lists and the deleted entry."""
    template = tmp_path / "template"
    for day in ("2026-11-23", "2026-11-24"):
        config = tmp_path / f"{day}.yaml"
        config.write_text(json.dumps({"led": {"pin": None}}))
        from edge import clock as edge_clock  # the wall clock names the day folder
        from datetime import datetime
        monkeypatch.setattr(edge_clock.SystemClock, "wall",
                            lambda self, d=day: datetime.fromisoformat(f"{d}T09:00:00+01:00"))
        record(template, capsys)
    monkeypatch.undo()
    single = as_single_manifest(template)
    entries = read_manifest(single)
    gone = entries[0]
    (template / gone["file"]).unlink()
    with open(single, "a") as f:
        f.write(json.dumps({"deleted": gone["file"], "seq": gone["seq"], "reason": "test"}) + "\n")
    damage(single, "garbage")
    return template, sorted(e["seq"] for e in read_manifest(single)), gone


def assert_migrated_whole(card: Path, expected: list, gone: dict) -> None:
    """What the next start leaves: every segment, the tombstone and the damaged line, once."""
    writer = SegmentWriter(card, "room1", "m", "v")
    writer.prepare()
    assert sorted(e["seq"] for e in read_manifest(card)) == expected
    assert [t["seq"] for t in read_deletions(card)] == [gone["seq"]]
    assert not (card / MANIFEST).exists() and all_whole(card)
    assert [json.loads(line)["line"] for line in (card / DAMAGED).read_text().splitlines()] == [2]
    assert max(seqs_seen(card)) == max(expected)
    assert writer._take_seq() == max(expected) + 1


def test_a_migration_cut_at_any_step_loses_nothing_and_finishes_at_the_next_start(tmp_path, capsys, monkeypatch):
    template, expected, gone = card_before_day_manifests(tmp_path, capsys, monkeypatch)
    writes = {"os.replace": os.replace, "os.unlink": os.unlink}

    cut_at = 0
    while True:
        card = tmp_path / f"card{cut_at}"
        shutil.copytree(template, card)
        calls = []

        def counted(name):
            real = writes[name]

            def call(*args, **kwargs):
                calls.append(name)
                if len(calls) > cut_at:
                    raise Cut(name)
                return real(*args, **kwargs)
            return call

        monkeypatch.setattr(os, "replace", counted("os.replace"))
        monkeypatch.setattr(os, "unlink", counted("os.unlink"))
        try:
            migrate_card(card)
            finished = True
        except Cut:
            finished = False
        finally:
            monkeypatch.undo()
        # Between the cut and the next start, every reader sees each segment exactly once.
        assert sorted(e["seq"] for e in read_manifest(card)) == expected, cut_at
        assert_migrated_whole(card, expected, gone)
        if finished:
            break
        cut_at += 1
    assert cut_at >= 4  # two day manifests, the lines moved aside, the state, the old manifest


@pytest.mark.parametrize("state", [b"", b"{\"seq\": \"x\"}", b"\x00\x00\x00", None])
def test_a_lost_or_damaged_card_state_is_rebuilt_from_every_day_folder(tmp_path, capsys, state):
    out = tmp_path / "rec"
    first = record(out, capsys)
    newest = out / first[-1]["file"]
    newest.rename(newest.with_name(f"{first[-1]['seq'] + 5:06d}_000000_room1.wav"))  # a number only a name shows
    if state is None:
        (out / CARD_STATE).unlink()
    else:
        (out / CARD_STATE).write_bytes(state)
    writer = SegmentWriter(out, "room1", "m", "v")
    writer.prepare()
    assert writer._take_seq() == first[-1]["seq"] + 6
    assert writer.repairs == ([] if state is None else [f"{out / CARD_STATE}: damaged, rebuilt from every day folder"])


# `migrate_card` in a child that dies (the power goes) just before its Nth rename or unlink.
MIGRATE_UNTIL_CUT = r"""
import os, sys
from pathlib import Path
from edge.card import migrate_card
left = int(sys.argv[2])
def cut_before(real):
    def call(*args, **kwargs):
        global left
        if left == 0:
            os._exit(9)
        left -= 1
        return real(*args, **kwargs)
    return call
os.replace, os.unlink = cut_before(os.replace), cut_before(os.unlink)
migrate_card(Path(sys.argv[1]))
"""


def copy_durably(source: Path, target: Path) -> None:
    shutil.copytree(source, target)
    for path in sorted(target.rglob("*"), reverse=True) + [target, target.parent]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def test_a_migration_cut_below_the_page_cache_loses_nothing(tmp_path, capsys, monkeypatch):
    """On LazyFS, whose clear-cache drops every write not fsynced as a pulled plug does: the
    migration dies before each of its renames and unlinks in turn, the unsynced writes go,
    and the card still lists every segment once, then migrates whole at the next start."""
    lazyfs = pytest.importorskip("lazyfs", reason="tests/lazyfs.py (LazyFS power cuts) not present")
    if lazyfs.unavailable():
        pytest.skip(lazyfs.unavailable())
    template, expected, gone = card_before_day_manifests(tmp_path, capsys, monkeypatch)
    fs = lazyfs.LazyFs(tmp_path / "lazyfs")
    try:
        cut_at = 0
        while True:
            card = fs.mount / f"card{cut_at}"
            copy_durably(template, card)
            child = subprocess.run([sys.executable, "-c", MIGRATE_UNTIL_CUT, str(card), str(cut_at)],
                                   capture_output=True, text=True)
            assert child.returncode in (0, 9), child.stderr
            fs.clear_cache()
            assert sorted(e["seq"] for e in read_manifest(card)) == expected, cut_at
            assert_migrated_whole(card, expected, gone)
            if child.returncode == 0:
                break
            cut_at += 1
    finally:
        fs.close()
    assert cut_at >= 4


@given(pads=st.lists(st.integers(0, 3 * LAST_LINE_STEP), max_size=4),
       ending=st.sampled_from(["", '{"file": "torn', "{damaged\n"]))
@settings(max_examples=40, deadline=None)
def test_the_last_entry_is_the_last_whole_line_read_from_the_end(tmp_path_factory, pads, ending):
    # Lines shorter and longer than one read from the end, a torn or damaged line after them.
    manifest = tmp_path_factory.mktemp("day") / MANIFEST
    entries = [{"file": f"d/{seq}.wav", "seq": seq, "start": "2026-01-01T00:00:00", "duration_s": 1.0,
                "sha256": "x", "pad": "p" * pad} for seq, pad in enumerate(pads, 1)]
    manifest.write_text("".join(json.dumps(entry) + "\n" for entry in entries) + ending)
    expected = entries[-1] if entries and not ending.endswith("\n") else None
    assert last_entry(manifest) == expected
