"""`edge export` and `edge list` on recordings made by the real SegmentWriter.

The bad cases are produced for real and from outside the export: a small tmpfs fills up, a
read-only mount refuses writes, a byte of a file on disk is flipped, and an export is killed
with SIGKILL at a point the test holds it at (a segment on the card that is a FIFO the test
feeds: no sleeps). Tests that need mounts run as root only.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from conftest import wait_until
from edge import config
from edge import export as export_module
from edge.cli import main
from edge.config import ExportSettings
from edge.export import CHUNK, SegmentExporter
from edge import export_state
from edge.export_state import (RESULT_SHOWN_S, STATE_STALE_S, STATE_UPDATE_INTERVAL_S, ExportStatePublisher,
                               export_led_pattern)
from edge.indicator import LedPattern
from edge.manifest import manifest_path
from edge.storage import SegmentEnd, SegmentStart, SegmentWriter, read_deletions, read_manifest

REPO = Path(__file__).resolve().parent.parent
DEVICE = "classroom-pi"
# Two segments on each of three days, 0.5 s to 1.75 s of audio (16 to 56 kB).
DAYS = ("2026-11-23", "2026-11-24", "2026-11-25")
SECONDS = (0.5, 1.0, 1.25, 1.5, 1.75, 0.75)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def recordings(tmp_path) -> Path:
    root = tmp_path / "card" / "recordings"
    writer = SegmentWriter(root, DEVICE, model_sha256="0" * 64, version="test")
    writer.prepare()
    rng = np.random.default_rng(5)
    for number, seconds in enumerate(SECONDS):
        day = DAYS[number // 2]
        start = f"{day}T09:{10 + number:02d}:00.000+01:00"
        writer.open(SegmentStart(source="mic", start_s=60.0 * number, start=start,
                                 monotonic_s=100.0 + 60 * number, boot_id="boot-1", clock_synced=True))
        writer.append(rng.integers(-3000, 3000, int(16000 * seconds), dtype=np.int16))
        writer.close(SegmentEnd(prob_mean=0.5 + number / 20, prob_max=0.9, overflows=0, dropped_frames=0))
    return root


@pytest.fixture
def config_file(tmp_path, recordings) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(json.dumps({  # JSON is YAML
        "storage": {"recordings_dir": str(recordings), "device_name": DEVICE},
        "service": {"status_file": str(tmp_path / "state" / "status.json")},
        "led": {"pin": None},
    }))
    (tmp_path / "state").mkdir()
    return path


def entries(root: Path) -> list[dict]:
    return read_manifest(root / "manifest.jsonl")


def edge(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def edge_process(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", *argv], capture_output=True, text=True, timeout=60)


def sha256sum_check(target: Path) -> list[str]:
    """Files `sha256sum -c` confirmed, after asserting that it accepted the whole list."""
    result = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=target, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return sorted(line.rsplit(": ", 1)[0] for line in result.stdout.splitlines() if line.endswith(": OK"))


def exported_files(target: Path) -> list[str]:
    return sorted(p.relative_to(target).as_posix() for p in target.glob("*/*"))


@contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_export_copies_everything_verified(tmp_path, recordings, config_file, capsys):
    dest = tmp_path / "stick"
    dest.mkdir()
    code, out, err = edge(capsys, "export", str(dest), "--config", str(config_file))
    assert code == 0, err
    target = dest / DEVICE
    source = entries(recordings)
    assert sha256sum_check(target) == sorted(e["file"] for e in source)
    assert exported_files(target) == sorted(e["file"] for e in source)
    assert entries(target) == source
    assert "6 of 6 files" in out and "6 copied now" in out
    # Without --move the card keeps everything.
    assert all((recordings / e["file"]).exists() for e in source)
    assert entries(recordings) == source
    # Not a terminal: one plain line per file for the journal, no carriage returns.
    assert "\r" not in err and err.count("\n") == 6
    state = json.loads((tmp_path / "state" / "export.json").read_text())
    assert (state["state"], state["copied"], state["total"]) == ("done", 6, 6)


def test_second_run_copies_nothing_and_changes_nothing(tmp_path, recordings, config_file, capsys):
    dest = tmp_path / "stick"
    dest.mkdir()
    assert edge(capsys, "export", str(dest), "--config", str(config_file))[0] == 0
    target = dest / DEVICE
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in target.glob("*/*.wav")}
    manifest_before = (target / "manifest.jsonl").read_bytes()
    code, out, _ = edge(capsys, "export", str(dest), "--config", str(config_file))
    assert code == 0
    assert "0 copied now" in out and "6 already there" in out
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in target.glob("*/*.wav")} == before
    assert (target / "manifest.jsonl").read_bytes() == manifest_before


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])  # same size: only the re-hash can tell


def cut_short(data: bytes) -> bytes:
    return data[:-2]  # one sample gone: the size tells


@pytest.mark.parametrize("damage", [flip_last_byte, cut_short])
def test_damaged_copy_on_the_destination_is_copied_again(tmp_path, recordings, config_file, capsys, damage):
    dest = tmp_path / "stick"
    dest.mkdir()
    assert edge(capsys, "export", str(dest), "--config", str(config_file))[0] == 0
    target = dest / DEVICE
    damaged = target / entries(recordings)[4]["file"]
    damaged.write_bytes(damage(damaged.read_bytes()))
    code, out, _ = edge(capsys, "export", str(dest), "--config", str(config_file))
    assert code == 0
    assert out == f"6 of 6 files on {target} (1 copied now, 0.1 MB; 5 already there)\n"
    assert damaged.read_bytes() == (recordings / entries(recordings)[4]["file"]).read_bytes()
    assert len(sha256sum_check(target)) == 6


def test_move_keeps_originals_when_the_destination_manifest_cannot_be_written(
        tmp_path, recordings, config_file, capsys):
    dest = tmp_path / "stick"
    (dest / DEVICE / "manifest.jsonl.tmp").mkdir(parents=True)  # its temporary name is taken
    code, _, err = edge(capsys, "export", str(dest), "--move", "--config", str(config_file))
    assert code == 1
    assert f"cannot write {dest / DEVICE / 'manifest.jsonl'}" in err
    source = entries(recordings)
    assert len(source) == 6 and all((recordings / e["file"]).exists() for e in source)


def test_since_and_until_select_whole_days(tmp_path, recordings, config_file, capsys):
    dest = tmp_path / "stick"
    dest.mkdir()
    code, _, err = edge(capsys, "export", str(dest), "--since", "2026-11-24", "--until", "2026-11-24",
                        "--config", str(config_file))
    assert code == 0, err
    wanted = sorted(e["file"] for e in entries(recordings) if e["start"].startswith("2026-11-24"))
    assert len(wanted) == 2
    assert exported_files(dest / DEVICE) == wanted
    assert sha256sum_check(dest / DEVICE) == wanted
    code, _, err = edge(capsys, "export", str(dest), "--since", "2026-11-25", "--config", str(config_file))
    assert code == 0
    assert len(exported_files(dest / DEVICE)) == 4


def test_bad_date_is_refused(tmp_path, config_file, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path), "--since", "24.11.2026", "--config", str(config_file)])
    assert exit_info.value.code == 2
    assert "not a date (YYYY-MM-DD)" in capsys.readouterr().err


@needs_root
def test_full_destination_stops_keeps_originals_and_resumes(tmp_path, recordings, config_file, capsys):
    source = entries(recordings)
    with tmpfs(tmp_path / "stick", "128k") as dest:
        code, out, err = edge(capsys, "export", str(dest), "--config", str(config_file))
        assert code == 1
        stopped = [line for line in err.splitlines() if "export stopped" in line]
        assert len(stopped) == 1 and f"{dest} is full" in stopped[0], err
        target = dest / DEVICE
        copied = sha256sum_check(target)
        assert 0 < len(copied) < len(source)
        assert f"copied {len(copied)} of {len(source)} files" in stopped[0]
        assert exported_files(target) == copied  # no temporary file left behind
        assert [e["file"] for e in entries(target)] == copied
        assert all((recordings / e["file"]).exists() for e in source)
        assert entries(recordings) == source

        subprocess.run(["mount", "-o", "remount,size=1m", str(dest)], check=True)
        code, out, err = edge(capsys, "export", str(dest), "--move", "--config", str(config_file))
        assert code == 0, err
        assert f"{len(source) - len(copied)} copied now" in out
        assert sha256sum_check(target) == sorted(e["file"] for e in source)
        assert entries(target) == source
        # --move: every original went, and its manifest line with it.
        assert not list(recordings.glob("*/*.wav"))
        assert entries(recordings) == []


def test_killed_export_resumes_without_duplicates(tmp_path, recordings, config_file):
    dest = tmp_path / "stick"
    dest.mkdir()
    target = dest / DEVICE
    third = recordings / entries(recordings)[2]["file"]
    data = third.read_bytes()
    third.unlink()
    os.mkfifo(third)  # the export blocks on it after copying two segments, until fed
    export = subprocess.Popen([sys.executable, "-m", "edge", "export", str(dest), "--config", str(config_file)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        feed = None
        while feed is None:  # until the export opens it for reading
            assert export.poll() is None, export.stderr.read()
            try:
                feed = os.open(third, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                assert exc.errno == errno.ENXIO
                time.sleep(0.005)
        # One whole read's worth (the export reads 1 MB at a time), then the FIFO stays open
        # and silent: the export holds mid-copy, its first chunk written, not yet fsynced.
        os.set_blocking(feed, True)
        os.write(feed, data.ljust(CHUNK, b"\0"))
        temporary = target / (entries(recordings)[2]["file"] + ".exporting")
        wait_until(lambda: temporary.exists() and temporary.stat().st_size == CHUNK,
                   "the third segment's first chunk written to its temporary file")
        export.kill()  # the power goes: written, not yet fsynced nor verified
        assert export.wait(timeout=30) == -9
        os.close(feed)
    finally:
        if export.poll() is None:
            export.kill()
            export.wait()
    third.unlink()
    third.write_bytes(data)
    assert len(list(target.glob("*/*.wav"))) == 2
    assert len(list(target.glob("*/*.exporting"))) == 1
    assert not (target / "manifest.jsonl").exists()

    resumed = edge_process("export", str(dest), "--config", str(config_file))
    assert resumed.returncode == 0, resumed.stderr
    assert "4 copied now" in resumed.stdout and "2 already there" in resumed.stdout
    source = entries(recordings)
    assert sha256sum_check(target) == sorted(e["file"] for e in source)
    assert exported_files(target) == sorted(e["file"] for e in source)
    assert entries(target) == source

    again = edge_process("export", str(dest), "--config", str(config_file))
    assert again.returncode == 0
    assert entries(target) == source  # merged by file + sha256: no duplicates


def test_move_keeps_the_original_of_a_copy_that_does_not_verify(tmp_path, recordings, config_file,
                                                                 capsys, monkeypatch):
    source = entries(recordings)
    bad = source[2]["file"]
    dest = tmp_path / "stick"
    dest.mkdir()
    read_back = export_module.file_sha256

    def failing_medium(path, from_medium=False):
        # The stick returns something else than what was written and fsynced: one byte.
        if path.name == Path(bad).name + ".exporting":
            with open(path, "r+b") as f:
                f.seek(path.stat().st_size // 2)
                byte = f.read(1)
                f.seek(-1, os.SEEK_CUR)
                f.write(bytes([byte[0] ^ 0xFF]))
        return read_back(path, from_medium)

    monkeypatch.setattr(export_module, "file_sha256", failing_medium)
    code, out, err = edge(capsys, "export", str(dest), "--move", "--config", str(config_file))
    assert code == 1
    assert f"edge: {bad}: the copy on {dest} does not match after writing (failing medium?), original kept\n" \
        in err
    assert (recordings / bad).exists()
    assert [e["file"] for e in entries(recordings)] == [bad]
    remaining = [e for e in source if e["file"] != bad]
    assert not any((recordings / e["file"]).exists() for e in remaining)
    target = dest / DEVICE
    assert exported_files(target) == sorted(e["file"] for e in remaining)
    assert sha256sum_check(target) == sorted(e["file"] for e in remaining)
    assert json.loads((tmp_path / "state" / "export.json").read_text())["state"] == "failed"

    monkeypatch.setattr(export_module, "file_sha256", read_back)
    code, out, err = edge(capsys, "export", str(dest), "--move", "--config", str(config_file))
    assert code == 0, err
    assert entries(target) == remaining + [source[2]]
    assert entries(recordings) == []


def test_corrupted_source_is_reported_and_not_copied(tmp_path, recordings, config_file, capsys):
    source = entries(recordings)
    bad = source[3]["file"]
    with open(recordings / bad, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    dest = tmp_path / "stick"
    dest.mkdir()
    code, out, err = edge(capsys, "export", str(dest), "--move", "--config", str(config_file))
    assert code == 1
    assert [line for line in err.splitlines() if "corrupted" in line] == [
        f"edge: {bad}: corrupted on the card (its SHA-256 does not match the manifest), not exported"]
    target = dest / DEVICE
    good = sorted(e["file"] for e in source if e["file"] != bad)
    assert exported_files(target) == good
    assert sha256sum_check(target) == good
    assert bad not in {e["file"] for e in entries(target)}
    assert (recordings / bad).exists() and [e["file"] for e in entries(recordings)] == [bad]


def test_second_export_at_the_same_time_is_refused(tmp_path, recordings, config_file, capsys):
    import fcntl

    dest = tmp_path / "stick"
    dest.mkdir()
    fd = os.open(recordings, os.O_RDONLY | os.O_DIRECTORY)  # what a running export holds
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        code, _, err = edge(capsys, "export", str(dest), "--move", "--config", str(config_file))
    finally:
        os.close(fd)
    assert code == 2
    assert err == f"edge: {recordings}: another export is running\n"
    assert exported_files(dest / DEVICE) == []


def test_missing_destination_is_one_line(tmp_path, recordings, config_file, capsys):
    dest = tmp_path / "not-mounted"
    code, out, err = edge(capsys, "export", str(dest), "--config", str(config_file))
    assert code == 2
    assert err == f"edge: {dest}: destination folder does not exist (is the stick mounted?)\n"
    assert not dest.exists()


def test_a_file_with_the_device_folder_name_on_the_destination_is_one_line(tmp_path, recordings, config_file,
                                                                            capsys):
    dest = tmp_path / "stick"
    dest.mkdir()
    (dest / DEVICE).write_text("not a folder\n")
    code, out, err = edge(capsys, "export", str(dest), "--config", str(config_file))
    assert (code, err) == (2, f"edge: {dest}: cannot write to the destination (File exists)\n")
    assert (dest / DEVICE).read_text() == "not a folder\n"
    assert all((recordings / e["file"]).exists() for e in entries(recordings))


@needs_root
def test_read_only_destination_is_one_line(tmp_path, recordings, config_file, capsys):
    with tmpfs(tmp_path / "stick", "1m", read_only=True) as dest:
        code, out, err = edge(capsys, "export", str(dest), "--move", "--config", str(config_file))
    assert code == 2
    assert err == f"edge: {dest}: destination is read-only\n"
    assert entries(recordings) and all((recordings / e["file"]).exists() for e in entries(recordings))


@needs_root
def test_move_keeps_the_manifest_owner_and_mode(tmp_path, recordings, config_file, capsys):
    # The export runs as root, the recorder as its own user: it must still own its manifest.
    # (The day written last: a day folder emptied by --move is retired unless it is that one.)
    manifest = sorted(recordings.glob("*/manifest.jsonl"))[-1]
    os.chown(manifest, 4321, 4321)
    os.chmod(manifest, 0o600)
    dest = tmp_path / "stick"
    dest.mkdir()
    code, _, err = edge(capsys, "export", str(dest), "--move", "--since", manifest.parent.name[:4] + "-"
                        + manifest.parent.name[4:6] + "-" + manifest.parent.name[6:], "--config", str(config_file))
    assert code == 0, err
    status = manifest.stat()
    assert (status.st_uid, status.st_gid, status.st_mode & 0o777) == (4321, 4321, 0o600)
    assert len(entries(recordings)) == 4 and len(read_deletions(manifest)) == 2


class Terminal(io.StringIO):
    """Where the progress goes when someone runs the export by hand."""

    def isatty(self):
        return True


def one_day_card(root: Path, lengths: list) -> list[dict]:
    """A card with one segment of each length (in samples: 44 + 2 bytes a sample), one day."""
    writer = SegmentWriter(root, DEVICE, model_sha256="0" * 64, version="test")
    writer.prepare()
    for number, samples in enumerate(lengths):
        start = f"{DAYS[0]}T09:{10 + number:02d}:00.000+01:00"
        writer.open(SegmentStart(source="mic", start_s=60.0 * number, start=start, monotonic_s=100.0 + 60 * number,
                                 boot_id="boot-1", clock_synced=True))
        writer.append(np.full(samples, 1000, np.int16))
        writer.close(SegmentEnd(prob_mean=0.5, prob_max=0.9, overflows=0, dropped_frames=0))
    return entries(root)


def deleted(path: Path) -> None:
    """A segment deleted after the export listed the card (the recorder makes room on a full
    card): its name still in the folder, no file behind it."""
    path.unlink()
    path.symlink_to(path.name + ".deleted")


def a_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def failing_reads(path: Path) -> None:
    """A file that opens but whose reads fail with EIO, as over a bad sector of the card:
    /proc/self/mem, where nothing is mapped at offset 0."""
    path.unlink()
    path.symlink_to("/proc/self/mem")


BAR = "\r[{}] {} files, 0.0 MB of 0.0 MB\x1b[K"


@pytest.mark.parametrize("lengths, gone, expected", [
    # 16044 of 32090 bytes after the first: just short of half, 11 marks of 24.
    ([8000, 8001], [], [BAR.format("#" * 11 + "-" * 13, "1/2"), BAR.format("#" * 24, "2/2"), "\n"]),
    # 16044 of 32088 bytes: half exactly, as a deleted segment counts no bytes. Its line
    # replaces the bar, which is drawn again below it.
    ([8000, 8000, 8000], [2], [BAR.format("#" * 12 + "-" * 12, "1/3"), BAR.format("#" * 24, "2/3"),
                               "\r\x1b[Kedge: {2}: deleted from the card during the export\n",
                               BAR.format("#" * 24, "2/3"), "\n"]),
    # 0 bytes of 0: a full bar; nothing was drawn before the line.
    ([8000], [0], ["edge: {0}: deleted from the card during the export\n", BAR.format("#" * 24, "0/1"), "\n"]),
], ids=["short of half", "half, then a deleted segment", "no bytes at all"])
def test_progress_bar_on_a_terminal_fills_with_the_bytes_done(tmp_path, lengths, gone, expected):
    card = tmp_path / "card"
    source = one_day_card(card, lengths)
    names = [e["file"] for e in source]
    for number in gone:
        deleted(card / names[number])
    stream = Terminal()
    dest = tmp_path / "stick"
    dest.mkdir()
    report = SegmentExporter(card, dest, DEVICE, progress_stream=stream).run()
    assert stream.getvalue() == "".join(expected).format(*names)
    kept = [name for number, name in enumerate(names) if number not in gone]
    assert (report.copied, report.problems) == (
        len(kept), [f"{names[number]}: deleted from the card during the export" for number in gone])
    assert exported_files(dest / DEVICE) == kept
    assert entries(card) == source and all((card / name).is_file() for name in kept)  # not a move


def test_the_journal_has_a_line_per_file_and_the_summary_counts_each_kind(
        tmp_path, recordings, config_file, capsys):
    dest = tmp_path / "stick"
    dest.mkdir()
    assert edge(capsys, "export", str(dest), "--until", DAYS[0], "--config", str(config_file))[0] == 0
    names = [e["file"] for e in entries(recordings)]
    corrupted = recordings / names[3]
    corrupted.write_bytes(flip_last_byte(corrupted.read_bytes()))
    code, out, err = edge(capsys, "export", str(dest), "--config", str(config_file))
    assert code == 1
    # Segments of 16044, 32044, 40044, 48044, 56044 and 24044 bytes, 216264 in all.
    assert err == "".join([
        f"already there {names[0]} (1/6 files, 0.0 MB of 0.2 MB)\n",
        f"already there {names[1]} (2/6 files, 0.0 MB of 0.2 MB)\n",
        f"copied {names[2]} (3/6 files, 0.1 MB of 0.2 MB)\n",
        f"edge: {names[3]}: corrupted on the card (its SHA-256 does not match the manifest), not exported\n",
        f"not exported {names[3]} (3/6 files, 0.1 MB of 0.2 MB)\n",
        f"copied {names[4]} (4/6 files, 0.2 MB of 0.2 MB)\n",
        f"copied {names[5]} (5/6 files, 0.2 MB of 0.2 MB)\n",
    ])
    assert out == (f"5 of 6 files on {dest / DEVICE} (3 copied now, 0.1 MB; 2 already there); "
                   "1 not exported (see above)\n")
    state = json.loads((tmp_path / "state" / "export.json").read_text())
    assert (state["state"], state["copied"], state["total"]) == ("failed", 5, 6)


@pytest.mark.parametrize("spoil, problem", [
    (deleted, "deleted from the card during the export"),
    (a_folder, "cannot read it on the card (Is a directory), not exported"),
    (failing_reads, "cannot read it on the card (Input/output error), not exported"),
])
def test_a_segment_the_card_cannot_give_is_named_and_the_rest_exported(
        tmp_path, recordings, config_file, capsys, spoil, problem):
    source = entries(recordings)
    bad = source[3]["file"]
    spoil(recordings / bad)
    dest = tmp_path / "stick"
    dest.mkdir()
    code, out, err = edge(capsys, "export", str(dest), "--config", str(config_file))
    assert code == 1
    assert [line for line in err.splitlines() if line.startswith("edge: ")] == [f"edge: {bad}: {problem}"]
    assert out == (f"5 of 6 files on {dest / DEVICE} (5 copied now, 0.2 MB; 0 already there); "
                   "1 not exported (see above)\n")
    good = sorted(e["file"] for e in source if e["file"] != bad)
    assert exported_files(dest / DEVICE) == good  # and no temporary file
    assert sha256sum_check(dest / DEVICE) == good


def read_back_fails(monkeypatch, target: Path, names: list) -> None:
    """The stick stops answering when the third copy is read back."""
    read_back = export_module.file_sha256

    def failing_medium(path, from_medium=False):
        if path.name == Path(names[2]).name + ".exporting":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return read_back(path, from_medium)

    monkeypatch.setattr(export_module, "file_sha256", failing_medium)


def folder_at_the_third_name(monkeypatch, target: Path, names: list) -> None:
    (target / names[2]).mkdir(parents=True)  # the third copy cannot be renamed into place


def file_at_the_first_day(monkeypatch, target: Path, names: list) -> None:
    target.mkdir()
    (target / names[0]).parent.write_text("")  # not a folder: nothing can be looked up in it


@pytest.mark.parametrize("failure, reason, copied, left", [
    (read_back_fails, "Input/output error", 2, [0, 1, "20261124"]),
    (folder_at_the_third_name, "Is a directory", 2, [0, 1, "20261124", 2]),
    (file_at_the_first_day, "Not a directory", 0, []),
])
def test_a_failing_destination_stops_the_export_and_leaves_no_temporary_file(
        tmp_path, recordings, config_file, capsys, monkeypatch, failure, reason, copied, left):
    source = entries(recordings)
    names = [e["file"] for e in source]
    dest = tmp_path / "stick"
    target = dest / DEVICE
    target.parent.mkdir()
    failure(monkeypatch, target, names)
    code, out, err = edge(capsys, "export", str(dest), "--config", str(config_file))
    assert code == 1
    assert [line for line in err.splitlines() if line.startswith("edge: ")] == [
        f"edge: export stopped: writing to {dest} failed ({reason}); copied {copied} of 6 files "
        "(0.0 MB this run); originals of the rest kept"]
    assert out == f"{copied} of 6 files on {target} ({copied} copied now, 0.0 MB; 0 already there)\n"
    index = ["SHA256SUMS", "manifest.jsonl"] if copied else []
    expected = {"20261123"} | {names[n] if isinstance(n, int) else n for n in left} | set(index)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == sorted(expected)
    assert entries(recordings) == source and all((recordings / name).is_file() for name in names)
    state = json.loads((tmp_path / "state" / "export.json").read_text())
    assert (state["state"], state["copied"], state["total"]) == ("failed", copied, 6)


def test_a_temporary_file_left_by_a_stopped_export_is_removed(tmp_path, recordings, config_file, capsys):
    # A run stopped mid-copy (power cut, stick pulled) leaves its temporary file; the next
    # run removes it, even one that exports other days.
    names = [e["file"] for e in entries(recordings)]
    dest = tmp_path / "stick"
    leftover = dest / DEVICE / (names[5] + ".exporting")
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes((recordings / names[5]).read_bytes()[:4096])
    code, out, err = edge(capsys, "export", str(dest), "--until", DAYS[0], "--config", str(config_file))
    assert code == 0, err
    assert sorted(p.relative_to(dest / DEVICE).as_posix() for p in (dest / DEVICE).rglob("*")) == [
        "20261123", names[0], names[1], "20261125", "SHA256SUMS", "manifest.jsonl"]


def run_held(exporter: SegmentExporter, held: dict, while_held) -> export_module.ExportReport:
    """``exporter.run()`` in a thread, held at each FIFO of ``held`` (segments on the card the
    test feeds, in the order the export reaches them): ``while_held(fifo)`` runs while the
    export waits there, then the segment's bytes go in."""
    ended, outcome, readers = threading.Event(), [], []

    def run():
        try:
            outcome.append(exporter.run())
        except BaseException as exc:
            outcome.append(exc)
        finally:
            ended.set()
            # An export that ended before a FIFO must not leave the test waiting at it.
            readers.extend(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK) for fifo in held)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    for fifo, data in held.items():
        with open(fifo, "wb") as feed:  # opens when the export opens it: it waits there
            if ended.is_set():
                break
            while_held(fifo)
            feed.write(data)
    thread.join()
    for fd in readers:
        os.close(fd)
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def test_the_led_state_while_copying_counts_the_files_exported(tmp_path, recordings, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(export_state.time, "monotonic", lambda: clock[0])
    names = [e["file"] for e in entries(recordings)]
    held = {}
    for number in (1, 3):  # the export waits at the second and at the fourth segment
        fifo = recordings / names[number]
        held[fifo] = fifo.read_bytes()
        fifo.unlink()
        os.mkfifo(fifo)
    state_file = tmp_path / "export.json"
    seen = []

    def led_state(fifo: Path) -> None:
        state = json.loads(state_file.read_text())
        seen.append((state["state"], state["copied"], state["total"]))
        clock[0] += STATE_UPDATE_INTERVAL_S  # the state after the next file is due

    dest = tmp_path / "stick"
    dest.mkdir()
    exporter = SegmentExporter(recordings, dest, DEVICE, progress_stream=io.StringIO(), state_file=state_file)
    report = run_held(exporter, held, led_state)
    assert report.ok and report.copied == 6
    # At the second segment, the state of the start (the one after the first file was not
    # due); at the fourth, the one written after the second file, an interval later.
    assert seen == [("copying", 0, 6), ("copying", 2, 6)]
    state = json.loads(state_file.read_text())
    assert (state["state"], state["copied"], state["total"]) == ("done", 6, 6)


def test_progress_bar_on_a_terminal(tmp_path, recordings):
    stream = Terminal()
    dest = tmp_path / "stick"
    dest.mkdir()
    report = SegmentExporter(recordings, dest, DEVICE, progress_stream=stream).run()
    assert report.ok and report.copied == 6
    text = stream.getvalue()
    assert text.count("\r") == 6 and text.count("\n") == 1 and text.endswith("\n")
    assert "[########################] 6/6 files" in text


def test_list_csv_opens_as_rows(recordings, config_file, capsys):
    code, out, _ = edge(capsys, "list", "--csv", "--config", str(config_file))
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    source = entries(recordings)
    assert [row["file"] for row in rows] == [e["file"] for e in source]
    assert [float(row["duration_s"]) for row in rows] == list(SECONDS)
    assert [float(row["prob_mean"]) for row in rows] == pytest.approx([e["prob_mean"] for e in source])
    assert rows[0]["start"] == "2026-11-23 09:10:00"


def test_list_table_for_people(recordings, config_file, capsys):
    code, out, _ = edge(capsys, "list", "--config", str(config_file))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["file", "start", "duration_s", "prob_mean", "prob_max", "recovered"]
    assert len(lines) == 1 + len(SECONDS) + 1
    assert lines[-1] == "6 segments, 0:00:07 of speech"


def test_list_one_day_of_the_card(recordings, config_file, capsys):
    code, out, _ = edge(capsys, "list", "--csv", "--since", DAYS[1], "--until", DAYS[1], "--config", str(config_file))
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["file"] for row in rows] == [e["file"] for e in entries(recordings) if e["start"].startswith(DAYS[1])]
    assert len(rows) == 2 and {row["start"][:10] for row in rows} == {DAYS[1]}


def test_list_days_of_the_card(recordings, config_file, capsys):
    code, out, _ = edge(capsys, "list", "--days", "--config", str(config_file))
    assert code == 0
    lines = [line.split() for line in out.splitlines()]
    # Two segments a day: (0.5 + 1.0), (1.25 + 1.5), (1.75 + 0.75) seconds.
    assert lines == [["day", "segments", "speech"], [DAYS[0], "2", "0:00:02"], [DAYS[1], "2", "0:00:03"],
                     [DAYS[2], "2", "0:00:02"], ["6", "segments,", "0:00:07", "of", "speech"]]
    code, out, _ = edge(capsys, "list", "--days", "--csv", "--since", DAYS[1], "--config", str(config_file))
    assert (code, out) == (0, f"day,segments,speech\r\n{DAYS[1]},2,0:00:03\r\n{DAYS[2]},2,0:00:02\r\n")


def test_led_pattern_follows_the_export_state(tmp_path):
    path = tmp_path / "export.json"
    now = datetime.now().astimezone()
    assert export_led_pattern(path, now) is None  # no export ever ran

    def at(state: str, age_s: float):
        updated = (now - timedelta(seconds=age_s)).isoformat()
        path.write_text(json.dumps({"state": state, "updated": updated, "copied": 1, "total": 2}))
        return export_led_pattern(path, now)

    assert at("copying", 30) is LedPattern.EXPORTING
    assert at("copying", 90) is None  # the export died without saying so
    assert at("done", 60) is LedPattern.EXPORT_DONE
    assert at("failed", 299) is LedPattern.EXPORT_FAILED
    assert at("done", 301) is None
    # The bounds themselves: a state written this very second, a copy last heard of exactly
    # a minute ago, a result shown for exactly five minutes, all still count.
    assert at("copying", 0) is LedPattern.EXPORTING
    assert at("copying", STATE_STALE_S) is LedPattern.EXPORTING
    assert at("done", RESULT_SHOWN_S) is LedPattern.EXPORT_DONE
    assert at("done", -1) is None  # from the future: a clock that went back
    path.write_text("{")
    assert export_led_pattern(path, now) is None


def test_the_export_state_is_written_at_most_every_interval_while_copying(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(export_state.time, "monotonic", lambda: clock[0])
    path = tmp_path / "export.json"
    publisher = ExportStatePublisher(path)

    def copied_after(seconds: float, copied: int, force: bool = False) -> int:
        clock[0] += seconds
        publisher.publish("copying", copied, 10, force=force)
        return json.loads(path.read_text())["copied"]

    assert copied_after(0, 1) == 1  # the first state is written at once
    assert copied_after(1, 2) == 1  # the SD card is spared
    assert copied_after(STATE_UPDATE_INTERVAL_S - 1, 3) == 3  # exactly an interval after the last write
    assert copied_after(STATE_UPDATE_INTERVAL_S - 0.5, 4) == 3
    assert copied_after(0, 5, force=True) == 5  # the end of a run is always written


def test_an_export_state_that_cannot_be_written_is_said_once_and_costs_only_the_led(tmp_path, capsys):
    unwritable = tmp_path / "not-a-folder"
    unwritable.write_text("")
    publisher = ExportStatePublisher(unwritable / "export.json")
    publisher.publish("copying", 0, 2)
    publisher.publish("done", 2, 2)
    assert capsys.readouterr().err == f"edge: {unwritable / 'export.json'}: cannot publish export state (Not a directory)\n"


def test_led_pattern_after_a_real_export(tmp_path, recordings, config_file, capsys):
    dest = tmp_path / "stick"
    dest.mkdir()
    assert edge(capsys, "export", str(dest), "--config", str(config_file))[0] == 0
    settings = config.load_config(config_file)
    from edge.export_state import export_state_file

    path = export_state_file(settings)
    assert path == tmp_path / "state" / "export.json"
    now = datetime.now().astimezone()
    assert export_led_pattern(path, now) is LedPattern.EXPORT_DONE
    assert export_led_pattern(path, now + timedelta(minutes=6)) is None


def test_auto_export_does_nothing_unless_enabled(tmp_path, recordings, config_file, capsys):
    dest = tmp_path / "stick"
    dest.mkdir()
    code, out, _ = edge(capsys, "export", "--auto", str(dest), "--config", str(config_file))
    assert (code, out) == (0, "edge: automatic export is off (export.auto: false), nothing done\n")
    assert not (dest / DEVICE).exists()
    settings = json.loads(config_file.read_text())
    settings["export"] = {"auto": True, "move": True}
    config_file.write_text(json.dumps(settings))
    code, out, err = edge(capsys, "export", "--auto", str(dest), "--config", str(config_file))
    assert code == 0, err
    assert len(exported_files(dest / DEVICE)) == 6 and entries(recordings) == []


def test_export_settings_defaults():
    assert ExportSettings() == ExportSettings(usb_label="EDGE-EXPORT", auto=False, move=False)
    udev_rule = (REPO / "systemd" / "99-edge-export.rules").read_text()
    assert f'ENV{{ID_FS_LABEL}}=="{ExportSettings().usb_label}"' in udev_rule
    assert 'ENV{SYSTEMD_WANTS}+="edge-export@%k.service"' in udev_rule
    assert (REPO / "systemd" / "edge-export@.service").exists()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (apt-get install systemd)")
def test_template_unit_verifies(tmp_path):
    installed_edge = "/opt/edge-recorder/venv/bin/edge"
    text = (REPO / "systemd" / "edge-export@.service").read_text()
    assert f"ExecStart={installed_edge} export --auto /run/edge-export/%i " in text
    # The venv exists only on an installed Pi: point ExecStart at this Python instead.
    (tmp_path / "edge-export@.service").write_text(text.replace(installed_edge, sys.executable))
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "edge-export@sda1.service")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if "edge-export@" in line] == []


def test_a_card_emptied_by_move_keeps_numbering_upward(tmp_path, recordings, config_file, capsys):
    before = entries(recordings)
    dest = tmp_path / "stick"
    dest.mkdir()
    code, _, err = edge(capsys, "export", str(dest), "--config", str(config_file), "--move")
    assert code == 0, err
    assert entries(recordings) == []
    deletions = read_deletions(recordings)
    assert [(d["deleted"], d["seq"]) for d in deletions] == [(e["file"], e["seq"]) for e in before]
    assert all(d["reason"] == f"moved: copy verified in {dest / DEVICE}" for d in deletions)
    # A restart after the export: the next segment still sorts after every exported one.
    writer = SegmentWriter(recordings, DEVICE, model_sha256="0" * 64, version="test")
    writer.prepare()
    writer.open(SegmentStart(source="mic", start_s=0.0, start="2026-11-25T09:00:00.000+01:00",
                             monotonic_s=5.0, boot_id="boot-2", clock_synced=True))
    writer.append(np.zeros(16000, np.int16))
    entry = writer.close(SegmentEnd(prob_mean=0.6, prob_max=0.9, overflows=0, dropped_frames=0))
    assert entry["seq"] == max(e["seq"] for e in before) + 1


def test_list_shows_the_device_the_manifest_names_not_the_folder(tmp_path, recordings, capsys):
    renamed = tmp_path / "copied-off-the-card"  # a folder an office renamed
    shutil.copytree(recordings, renamed)
    code, out, err = edge(capsys, "list", "--csv", str(renamed))
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {row["device"] for row in rows} == {DEVICE} and len(rows) == len(SECONDS)


def test_list_stops_at_a_damaged_manifest_field_naming_it(tmp_path, recordings, config_file, capsys):
    # A line the manifest reader accepts (a whole segment entry) with a field the office
    # commands cannot use; a line the reader rejects is skipped with a warning (test_manifest).
    third = next(e for e in read_manifest(recordings) if e["seq"] == 3)
    manifest = manifest_path(recordings, third["file"])  # its day folder's manifest
    lines = manifest.read_text().splitlines()
    number = next(n for n, line in enumerate(lines) if json.loads(line).get("seq") == 3)
    entry = json.loads(lines[number])
    entry["duration_s"] = -4.5
    lines[number] = json.dumps(entry)
    manifest.write_text("\n".join(lines) + "\n")
    before = {p: p.read_bytes() for p in recordings.rglob("*") if p.is_file()}
    for argv in (("list", "--config", str(config_file)), ("export", str(tmp_path), "--config", str(config_file))):
        code, out, err = edge(capsys, *argv)
        assert (code, err) == (2, f"edge: {manifest}: the line of segment 3 'duration_s' must "
                                  "be a number of seconds, 0 or more, got -4.5; "
                                  "the manifest is damaged or was edited, nothing done\n")
    assert {p: p.read_bytes() for p in recordings.rglob("*") if p.is_file()} == before


def test_a_damaged_manifest_on_the_destination_stops_the_export_before_it_copies(
        tmp_path, recordings, config_file, capsys):
    stick = tmp_path / "stick"
    stick.mkdir()
    assert edge(capsys, "export", str(stick), "--since", DAYS[0], "--until", DAYS[0],
                "--config", str(config_file))[0] == 0
    copied = stick / DEVICE / "manifest.jsonl"
    entry = json.loads(copied.read_text().splitlines()[0])
    # A field the manifest reader does not need (a line without 'sha256' it skips, warning).
    del entry["samples"]
    copied.write_text(json.dumps(entry) + "\n")
    before = sorted(stick.rglob("*"))
    code, _, err = edge(capsys, "export", str(stick), "--config", str(config_file))
    assert (code, err) == (2, f"edge: {copied}: the line of segment 1 has no 'samples' "
                              "(a whole number, 0 or more); "
                              "the manifest is damaged or was edited, nothing done\n")
    assert sorted(stick.rglob("*")) == before


@pytest.mark.parametrize("damage, expected", [
    ("not json at all", "a JSON object, one per line"),
    ("[1, 2]", "a JSON object, got list"),
    ('{"seq": 9}', 'a segment entry with "file"'),
])
def test_an_unreadable_line_on_the_destination_stops_the_export_and_is_kept(
        tmp_path, recordings, config_file, capsys, damage, expected):
    # The destination's manifest is rewritten at the end of an export: a line it cannot read
    # would be dropped from the stick without a word.
    stick = tmp_path / "stick"
    stick.mkdir()
    assert edge(capsys, "export", str(stick), "--since", DAYS[0], "--until", DAYS[0],
                "--config", str(config_file))[0] == 0
    copied = stick / DEVICE / "manifest.jsonl"
    with open(copied, "a") as f:
        f.write(damage + "\n")
    number = len(copied.read_text().splitlines())
    before = {p: p.read_bytes() for p in stick.rglob("*") if p.is_file()}
    code, _, err = edge(capsys, "export", str(stick), "--config", str(config_file))
    assert (code, err) == (2, f"edge: {copied}:{number}: expected {expected}; "
                              "the manifest is damaged or was edited, nothing done\n")
    assert {p: p.read_bytes() for p in stick.rglob("*") if p.is_file()} == before


def test_a_file_that_is_not_what_its_name_says_is_one_line(tmp_path, capsys):
    card = tmp_path / "card"
    card.write_text("not a folder\n")  # recordings_dir naming a file
    config = tmp_path / "edge.yaml"
    config.write_text(json.dumps({"storage": {"recordings_dir": str(card)}}))
    code, _, err = edge(capsys, "list", "--config", str(config))
    assert (code, err) == (2, f"edge: {card}: Not a directory\n")
