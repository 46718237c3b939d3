"""`edge sync` against real servers on 127.0.0.1: OpenSSH's sshd (SFTP) and `rclone serve
webdav`, started and stopped by the fixtures here.

The bad cases are real too: the server is SIGKILLed in the middle of an upload (found by
polling the staging folder on its disk, not by sleeping), `edge sync` itself is SIGKILLed
mid-transfer, a byte of a copy is flipped on the server's disk, the server's folder is a
small tmpfs that fills up, and the password or host is wrong.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from edge import doctor
from edge.cli import main
from edge.config import load_config
from edge.status import RecorderStatus, publish_status
from edge.storage import SegmentEnd, SegmentStart, SegmentWriter, read_manifest
from edge.rclone import rclone_error
from edge.sync_card import CardCheck
from edge.sync_state import STAGING, SYNC_STATE, SyncState, is_synced
from tests.servers import SftpServer, WebdavServer, descendants, missing_server_binaries, wait_gone

DEVICE = "room-12"
SECONDS = (0.5, 1.0, 1.25, 1.5, 1.75, 0.75)
BIG_SECONDS = 60.0  # 1.9 MB: at a low bandwidth limit, long enough to be caught mid-transfer
SLOW_MIB_S = 0.25
RUN_TIMEOUT_S = 120

# Only what runs rclone or a server needs them (the `remote` fixture skips by itself); the
# checks of configs, messages and listings run everywhere.
needs_servers = pytest.mark.skipif(missing_server_binaries() is not None,
                                   reason=missing_server_binaries() or "")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def record(root: Path, seconds: tuple, first_day: str = "2026-11-23", device: str = DEVICE) -> list[dict]:
    """Segments written by the real SegmentWriter, dated an hour ago as on a real card."""
    writer = SegmentWriter(root, device, model_sha256="0" * 64, version="test")
    writer.prepare()
    rng = np.random.default_rng(len(seconds))
    for number, length in enumerate(seconds):
        start = f"{first_day}T09:{10 + number:02d}:00.000+01:00"
        writer.open(SegmentStart(source="mic", start_s=60.0 * number, start=start,
                                 monotonic_s=100.0 + 60 * number, boot_id="boot-1", clock_synced=True))
        writer.append(rng.integers(-3000, 3000, int(16000 * length), dtype=np.int16))
        writer.close(SegmentEnd(prob_mean=0.6, prob_max=0.9, overflows=0, dropped_frames=0))
    hour_ago = time.time() - 3600
    for path in root.glob("*/*.wav"):
        os.utime(path, (hour_ago, hour_ago))
    return read_manifest(root / "manifest.jsonl")


@dataclass
class Remote:
    kind: str
    server: SftpServer | WebdavServer | None
    rclone_config: Path
    remote: str
    """sync.remote as configured, with {device}."""
    disk: Path
    """The device's folder as it lies on the server's disk."""

    @property
    def staging(self) -> Path:
        return self.disk.parent / STAGING / self.disk.name

    @property
    def device_remote(self) -> str:
        """sync.remote with the device's name in it, as `edge sync` says it."""
        return self.remote.replace("{device}", DEVICE)


@pytest.fixture(params=["sftp", "webdav"])
def remote(request, tmp_path):
    """An SFTP or WebDAV server on 127.0.0.1, or (asked for by name) a "local" remote: rclone's
    own backend for a folder on this machine, no server."""
    if missing_server_binaries() is not None:
        pytest.skip(missing_server_binaries())
    served = tmp_path / "server"
    served.mkdir()
    folder = tmp_path / request.param
    folder.mkdir()
    if request.param == "local":
        (folder / "rclone.conf").write_text("[disk]\ntype = local\n")
        yield Remote("local", None, folder / "rclone.conf", f"disk:{served}/recordings/{{device}}",
                     served / "recordings" / DEVICE)
        return
    if request.param == "sftp":
        server = SftpServer(folder)
        section, remote = server.rclone_section("nas"), f"nas:{served}/recordings/{{device}}"
    else:
        server = WebdavServer(folder, served)
        section, remote = server.rclone_section("dav"), "dav:recordings/{device}"
    config = folder / "rclone.conf"
    config.write_text(section)
    config.chmod(0o600)
    server.start()
    try:
        yield Remote(request.param, server, config, remote, served / "recordings" / DEVICE)
    finally:
        server.kill()


@pytest.fixture
def recordings(tmp_path) -> Path:
    root = tmp_path / "card" / "recordings"
    record(root, SECONDS)
    return root


def write_config(tmp_path: Path, recordings: Path, remote: Remote, device: str = DEVICE, **sync) -> Path:
    path = tmp_path / f"{device}.yaml"
    path.write_text(json.dumps({
        "storage": {"recordings_dir": str(recordings), "device_name": device},
        "service": {"status_file": str(tmp_path / "status.json")},
        "led": {"pin": None},
        "sync": {"remote": remote.remote, "rclone_config": str(remote.rclone_config), "bwlimit": None,
                 "timeout_s": 5, **sync},
    }))
    return path


def edge(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def edge_process(*argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[str, str]:
    """Wait (bounded) for ``process``; one that hangs is killed and fails the test."""
    try:
        return process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise


def flip_a_byte(path: Path) -> None:
    """One byte of ``path`` inverted, past the WAV header: the file keeps its size."""
    with open(path, "r+b") as f:
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 0xFF]))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*.wav"))


def assert_remote_matches(remote: Remote, entries: list[dict]) -> None:
    """Every segment on the server's disk, whole, listed once in its manifest and SHA256SUMS."""
    assert files_under(remote.disk) == sorted(e["file"] for e in entries)
    for entry in entries:
        assert sha256(remote.disk / entry["file"]) == entry["sha256"], entry["file"]
    # Lines arrive as their segments do (a full server lets the small ones through first).
    by_file = sorted(read_manifest(remote.disk), key=lambda e: e["file"])
    assert by_file == sorted(entries, key=lambda e: e["file"])
    # As on the card: an index per day folder, none at the top (readers would look nowhere else).
    assert not (remote.disk / "manifest.jsonl").exists() and not (remote.disk / "SHA256SUMS").exists()
    for day in sorted({Path(e["file"]).parent.name for e in entries}):
        check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=remote.disk / day, capture_output=True, text=True)
        listed_there = [e for e in entries if Path(e["file"]).parent.name == day]
        assert check.returncode == 0 and check.stdout.count(": OK") == len(listed_there), check.stdout


def assert_final_names_whole(remote: Remote, local: dict) -> None:
    """No half-written file under a final name: whatever is there is the card's segment."""
    for name in files_under(remote.disk):
        assert sha256(remote.disk / name) == local[name], f"{name} is incomplete on the remote"


def assert_state_consistent(recordings: Path, remote: Remote) -> None:
    state = SyncState.load(recordings)
    for name, record in state.synced.items():
        assert (recordings / name).exists()
        assert sha256(remote.disk / name) == record["sha256"], name


def wait_for_partial_upload(remote: Remote, process: subprocess.Popen, total: int) -> Path:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        for path in remote.staging.glob("*/*.wav"):
            if 0 < path.stat().st_size < total:
                return path
        assert process.poll() is None, process.communicate()
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"no upload started in {RUN_TIMEOUT_S} s: {finish(process)}")
        time.sleep(0.01)


def test_the_card_check_passes_only_segments_read_back_whole_and_says_why_each_other_stays(tmp_path):
    """Before a copy counts, each segment is read back from the card: one that rotted or cannot
    be read is a problem line and stays; one deleted under the sync (a full card's rotation)
    has nothing left to send and is no problem."""
    root = tmp_path / "recordings"
    root.mkdir()
    for name in ("whole.wav", "rotted.wav"):
        (root / name).write_bytes(b"RIFF" + bytes(range(200)))
    local = {name: {"sha256": sha256(root / "whole.wav")}
             for name in ("whole.wav", "rotted.wav", "deleted.wav", "unreadable.wav")}
    (root / "rotted.wav").write_bytes(b"RIFF" + bytes(range(199)) + b"!")
    (root / "unreadable.wav").mkdir()  # opening it fails as a card's read error would
    problems: list = []
    card = CardCheck(root, local, problems)
    assert card.sound(list(local)) == ["whole.wav"]
    assert problems == [
        "rotted.wav: corrupted on the card (its SHA-256 does not match the manifest), not synced",
        "unreadable.wav: cannot read it on the card (Is a directory), not synced"]


def test_copies_verifies_and_a_rerun_copies_nothing(tmp_path, recordings, remote, capsys, monkeypatch):
    config = write_config(tmp_path, recordings, remote)
    scratch = tmp_path / "tmp"  # where the run's lists and staged manifest go, and must go from
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    entries = read_manifest(recordings / "manifest.jsonl")
    code, out, err = edge(capsys, "sync", "--once", "--config", str(config))
    assert code == 0, err
    sent = sum((recordings / e["file"]).stat().st_size for e in entries)
    where = remote.device_remote
    assert out == f"6 segments verified on {where} now (6 uploaded, {sent / 1e6:.1f} MB); 0 waiting (0.0 MB)\n"
    assert_remote_matches(remote, entries)
    # Nothing deleted from the card unless asked.
    assert read_manifest(recordings / "manifest.jsonl") == entries
    assert all((recordings / e["file"]).exists() for e in entries)
    assert all(is_synced(recordings, e["file"]) for e in entries)
    assert not list(remote.staging.glob("*/*"))

    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in remote.disk.rglob("*") if p.is_file()}
    code, out, err = edge(capsys, "sync", "--once", "--config", str(config))
    assert code == 0, err
    assert out.startswith(f"0 segments verified on {where} now (0 uploaded, "), out
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in remote.disk.rglob("*") if p.is_file()} == before
    assert list(scratch.iterdir()) == []


def test_a_new_remote_gets_every_segment_whatever_went_to_the_old_one(tmp_path, recordings, remote, capsys):
    assert edge(capsys, "sync", "--once", "--config", str(write_config(tmp_path, recordings, remote)))[0] == 0
    moved = replace(remote, remote=remote.remote.replace("recordings/", "moved/"),
                    disk=remote.disk.parent.parent / "moved" / DEVICE)
    code, out, err = edge(capsys, "sync", "--once", "--config", str(write_config(tmp_path, recordings, moved)))
    assert code == 0, err
    where = moved.device_remote
    assert out.startswith(f"6 segments verified on {where} now (6 uploaded, "), out
    assert_remote_matches(moved, read_manifest(recordings / "manifest.jsonl"))
    # The state names the remote its copies are on: what forget and retention tell.
    assert SyncState.load(recordings).remote == where


def test_new_segments_are_added_to_the_remote_manifest(tmp_path, recordings, remote, capsys):
    config = write_config(tmp_path, recordings, remote)
    assert edge(capsys, "sync", "--config", str(config))[0] == 0
    record(recordings, (0.5, 0.5), first_day="2026-11-26")
    entries = read_manifest(recordings / "manifest.jsonl")
    assert len(entries) == 8
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 0, err
    assert "2 uploaded" in out
    assert_remote_matches(remote, entries)


def test_dry_run_lists_and_copies_nothing(tmp_path, recordings, remote, capsys):
    config = write_config(tmp_path, recordings, remote)
    code, out, err = edge(capsys, "sync", "--dry-run", "--config", str(config))
    assert code == 0, err
    assert out.count("would copy ") == 6 and not err
    assert not remote.disk.exists()
    assert not (recordings / SYNC_STATE).exists()
    # After a sync, a dry run names what went missing from the remote since, and changes nothing.
    assert edge(capsys, "sync", "--once", "--config", str(config))[0] == 0
    gone = read_manifest(recordings / "manifest.jsonl")[2]["file"]
    (remote.disk / gone).unlink()
    state = (recordings / SYNC_STATE).read_bytes()
    code, out, err = edge(capsys, "sync", "--dry-run", "--config", str(config))
    assert code == 0, err
    assert [line.split(" (")[0] for line in out.splitlines()] == [f"would copy {gone}"]
    assert (recordings / SYNC_STATE).read_bytes() == state and not (remote.disk / gone).exists()


def test_an_open_part_is_never_sent(tmp_path, recordings, remote, capsys):
    writer = SegmentWriter(recordings, DEVICE, model_sha256="0" * 64, version="test")
    part = writer.open(SegmentStart(source="mic", start_s=0.0, start="2026-11-27T09:00:00.000+01:00",
                                    monotonic_s=1.0, boot_id="boot-2", clock_synced=True))
    writer.append(np.zeros(16000, np.int16))
    config = write_config(tmp_path, recordings, remote)
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 0, err
    assert not list(remote.disk.rglob(part.name + "*"))
    assert len(files_under(remote.disk)) == 6


def test_a_byte_flipped_on_the_server_is_found_and_copied_again(tmp_path, recordings, remote, capsys, caplog):
    config = write_config(tmp_path, recordings, remote)
    assert edge(capsys, "sync", "--config", str(config))[0] == 0
    entries = read_manifest(recordings / "manifest.jsonl")
    damaged = remote.disk / entries[3]["file"]
    flip_a_byte(damaged)  # same size: only a comparison of the bytes can tell
    # Written a minute after the upload (within the same second the server's clock, which
    # WebDAV reports to the second, could not tell the two apart).
    later = damaged.stat().st_mtime + 60
    os.utime(damaged, (later, later))
    assert sha256(damaged) != entries[3]["sha256"]
    (remote.disk / entries[1]["file"]).unlink()  # and one deleted there
    entries = record(recordings, (1.0,), first_day="2026-11-24")  # and a new one on the card
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 0, err
    assert "3 uploaded" in out
    where = remote.device_remote
    said = [r.getMessage() for r in caplog.records if r.name == "edge.sync"]
    assert f"{entries[1]['file']}: gone from {where}, copying it again" in said
    assert f"{entries[3]['file']}: changed on {where} since it was verified, verifying it again" in said
    assert_remote_matches(remote, entries)


def test_a_segment_rotted_on_the_card_is_reported_and_never_placed(tmp_path, recordings, remote, capsys):
    entries = read_manifest(recordings / "manifest.jsonl")
    flip_a_byte(recordings / entries[2]["file"])  # the manifest still has the SHA-256 of what was recorded
    config = write_config(tmp_path, recordings, remote)
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 1
    problem = f"{entries[2]['file']}: corrupted on the card (its SHA-256 does not match the manifest), not synced"
    assert err == f"edge: {problem}\n"
    assert "5 uploaded" in out
    publish_status(tmp_path / "status.json", RecorderStatus(since="2026-11-24T09:00:00+01:00", pid=os.getpid(),
                                                            updated=datetime.now().astimezone().isoformat()))
    assert f"sync problem:   {problem}\n" in edge(capsys, "status", "--config", str(config))[1]
    assert_remote_matches(remote, entries[:2] + entries[3:])
    assert not list(remote.staging.glob("*/*"))
    assert not is_synced(recordings, entries[2]["file"])


@needs_servers
def test_a_copy_whose_remote_hash_differs_is_never_placed(tmp_path, recordings, capsys):
    # The server's md5sum answers a hash that is not the file's: what a copy damaged on its
    # way looks like to rclone's check after the upload.
    served = tmp_path / "server"
    served.mkdir()
    server = SftpServer(tmp_path)
    (tmp_path / "rclone.conf").write_text(server.rclone_section("nas") + "md5sum_command = echo " + "0" * 32 + "\n")
    server.start()
    try:
        remote = Remote("sftp", server, tmp_path / "rclone.conf", f"nas:{served}/recordings/{{device}}",
                        served / "recordings" / DEVICE)
        code, out, err = edge(capsys, "sync", "--config", str(write_config(tmp_path, recordings, remote)))
    finally:
        server.kill()
    entries = read_manifest(recordings / "manifest.jsonl")
    assert code == 1
    assert err.splitlines() == [f"edge: {e['file']}: the copy on the remote does not match the card, sent again "
                                "next run" for e in entries]
    assert files_under(remote.disk) == [] and not list(remote.staging.glob("*/*"))
    assert not any(is_synced(recordings, e["file"]) for e in entries)


def test_a_lost_state_file_costs_a_verification_not_an_upload(tmp_path, recordings, remote, capsys, monkeypatch):
    from edge.rclone import Rclone

    config = write_config(tmp_path, recordings, remote)
    assert edge(capsys, "sync", "--config", str(config))[0] == 0
    before = {p: p.stat().st_ino for p in remote.disk.rglob("*.wav")}
    (recordings / SYNC_STATE).unlink()
    started = []
    start = Rclone.start
    monkeypatch.setattr(Rclone, "start", lambda self, *args, **kw: started.append(args) or start(self, *args, **kw))
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 0, err
    assert "6 segments verified" in out and "0 uploaded" in out
    # By the remote's own hashes where it keeps them (SFTP: md5sum on the server), else
    # each copy downloaded.
    checks = [args for args in started if args[0] == "check"]
    assert [("--download" in args) for args in checks] == [remote.kind == "webdav"]
    # One copy from the card, which finds them all in place: none is sent again.
    assert len([args for args in started if args[0] == "copy" and str(recordings) in args]) == 1
    assert {p: p.stat().st_ino for p in remote.disk.rglob("*.wav")} == before
    assert all(is_synced(recordings, e["file"]) for e in read_manifest(recordings / "manifest.jsonl"))


def test_delete_after_verified_removes_only_synced_segments(tmp_path, recordings, remote, capsys):
    config = write_config(tmp_path, recordings, remote, delete_after_verified=True)
    entries = read_manifest(recordings / "manifest.jsonl")
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 0, err
    assert "6 deleted from the card" in out
    assert_remote_matches(remote, entries)
    assert not list(recordings.glob("*/*.wav"))
    assert read_manifest(recordings / "manifest.jsonl") == []
    # The remote keeps the whole history when later segments arrive.
    later = record(recordings, (0.5,), first_day="2026-11-28")
    assert edge(capsys, "sync", "--config", str(config))[0] == 0
    assert_remote_matches(remote, entries + later)


def test_server_killed_mid_transfer_then_resumed(tmp_path, remote):
    recordings = tmp_path / "card" / "recordings"
    local = {e["file"]: e["sha256"] for e in record(recordings, (1.0, BIG_SECONDS, 1.0))}
    config = write_config(tmp_path, recordings, remote, bwlimit=SLOW_MIB_S)
    run = edge_process("sync", "--once", "--config", str(config))
    wait_for_partial_upload(remote, run, 2 * 16000 * int(BIG_SECONDS))
    remote.server.kill()
    out, err = finish(run)
    assert run.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge: sync to ") and " failed: " in lines[0], err
    assert "Traceback" not in err
    assert_final_names_whole(remote, local)
    assert all((recordings / name).exists() for name in local)
    assert_state_consistent(recordings, remote)

    remote.server.start()
    write_config(tmp_path, recordings, remote)  # no bandwidth limit from here on
    rerun = edge_process("sync", "--once", "--config", str(config))
    out, err = finish(rerun)
    assert rerun.returncode == 0, err
    assert_remote_matches(remote, read_manifest(recordings / "manifest.jsonl"))


def test_sigkill_of_edge_sync_mid_transfer(tmp_path, remote):
    recordings = tmp_path / "card" / "recordings"
    local = {e["file"]: e["sha256"] for e in record(recordings, (1.0, BIG_SECONDS, 1.0))}
    config = write_config(tmp_path, recordings, remote, bwlimit=SLOW_MIB_S)
    run = edge_process("sync", "--once", "--config", str(config))
    wait_for_partial_upload(remote, run, 2 * 16000 * int(BIG_SECONDS))
    children = descendants(run.pid)
    run.kill()
    finish(run)
    for pid in children:  # rclone dies with its parent, it does not write on alone
        wait_gone(pid)
    assert_final_names_whole(remote, local)
    assert all((recordings / name).exists() for name in local)
    assert_state_consistent(recordings, remote)

    write_config(tmp_path, recordings, remote)  # no bandwidth limit from here on
    rerun = edge_process("sync", "--once", "--config", str(config))
    out, err = finish(rerun)
    assert rerun.returncode == 0, err
    assert_remote_matches(remote, read_manifest(recordings / "manifest.jsonl"))
    assert all(is_synced(recordings, name) for name in local)


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
def test_an_rclone_killed_mid_copy_fails_the_run_and_keeps_what_arrived_whole(tmp_path, remote):
    # The kernel's OOM killer on a small Pi, or an admin's kill: rclone ends without a word.
    recordings, short, long, config, run = sync_caught_with_a_short_segment_in_place(tmp_path, remote)
    try:
        copies = [pid for pid in descendants(run.pid) if segment_copy(pid, recordings)]
        assert len(copies) == 1 and run.poll() is None
        os.kill(copies[0], 9)
    finally:
        out, err = finish(run)
    lines = err.strip().splitlines()
    assert run.returncode == 1 and len(lines) == 1 and lines[0].startswith("edge: sync to ") \
        and lines[0].endswith(" failed: rclone copy exited with -9"), err
    assert is_synced(recordings, short["file"]) and not is_synced(recordings, long["file"])
    assert_final_names_whole(remote, {e["file"]: e["sha256"] for e in (short, long)})
    assert_state_consistent(recordings, remote)

    write_config(tmp_path, recordings, remote)  # no bandwidth limit from here on
    rerun = edge_process("sync", "--once", "--config", str(config))
    out, err = finish(rerun)
    assert rerun.returncode == 0 and "1 uploaded" in out, err
    assert_remote_matches(remote, [short, long])


def sync_caught_with_a_short_segment_in_place(tmp_path: Path, remote: Remote) -> tuple:
    """A slow `edge sync` of a 1-second segment and a long one, caught once the short one is in
    place and the long one is on its way: (recordings, short, long, config, the running sync)."""
    from conftest import wait_until

    recordings = tmp_path / "card" / "recordings"
    short, long = record(recordings, (1.0, BIG_SECONDS))
    config = write_config(tmp_path, recordings, remote, bwlimit=SLOW_MIB_S)
    run = edge_process("sync", "--once", "--config", str(config))
    try:
        wait_for_partial_upload(remote, run, 2 * 16000 * int(BIG_SECONDS))
        wait_until(lambda: (remote.disk / short["file"]).is_file() or run.poll() is not None,
                   "the short segment in place or the run's end", timeout=RUN_TIMEOUT_S)
    except BaseException:
        run.kill()
        finish(run)
        raise
    return recordings, short, long, config, run


def segment_copy(pid: int, recordings: Path) -> bool:
    """Whether process ``pid`` is the `rclone copy` of segments from ``recordings``."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return False
    return "rclone" in os.path.basename(words[0]) and "copy" in words and str(recordings) in words


@needs_root
@needs_servers
def test_full_server_is_one_clear_line_and_loses_nothing(tmp_path, recordings, capsys):
    served = tmp_path / "server"
    served.mkdir()
    server = SftpServer(tmp_path)
    (tmp_path / "rclone.conf").write_text(server.rclone_section("nas"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(served)], check=True)
    server.start()
    try:
        remote = Remote("sftp", server, tmp_path / "rclone.conf", f"nas:{served}/recordings/{{device}}",
                        served / "recordings" / DEVICE)
        config = write_config(tmp_path, recordings, remote)
        entries = read_manifest(recordings / "manifest.jsonl")
        code, out, err = edge(capsys, "sync", "--config", str(config))
        assert code == 1
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "the remote is full" in lines[0], err
        assert all((recordings / e["file"]).exists() for e in entries)
        assert read_manifest(recordings / "manifest.jsonl") == entries
        assert_final_names_whole(remote, {e["file"]: e["sha256"] for e in entries})
        assert_state_consistent(recordings, remote)
        assert SyncState.load(recordings).last_error.startswith("the remote is full")

        subprocess.run(["mount", "-o", "remount,size=2m", str(served)], check=True)
        code, out, err = edge(capsys, "sync", "--config", str(config))
        assert code == 0, err
        assert_remote_matches(remote, entries)
        assert SyncState.load(recordings).last_error is None
    finally:
        server.kill()
        subprocess.run(["umount", str(served)], check=True)


@needs_servers
def test_wrong_password_is_one_line(tmp_path, recordings, capsys):
    server = WebdavServer(tmp_path, tmp_path)
    server.start()
    try:
        (tmp_path / "rclone.conf").write_text(server.rclone_section("dav", password="wrong"))
        remote = Remote("webdav", server, tmp_path / "rclone.conf", "dav:recordings/{device}", tmp_path)
        code, out, err = edge(capsys, "sync", "--config", str(write_config(tmp_path, recordings, remote)))
    finally:
        server.kill()
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge: sync to dav:recordings/room-12 failed: "), err
    assert "401" in lines[0] or "Unauthorized" in lines[0]
    assert SyncState.load(recordings).last_error


@needs_servers
def test_wrong_host_is_one_line(tmp_path, recordings, capsys):
    server = SftpServer(tmp_path)  # its port: nothing listens there, the server is not started
    (tmp_path / "rclone.conf").write_text(server.rclone_section("nas"))
    remote = Remote("sftp", server, tmp_path / "rclone.conf", "nas:/srv/{device}", tmp_path)
    code, out, err = edge(capsys, "sync", "--config", str(write_config(tmp_path, recordings, remote)))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "connection refused" in lines[0], err


@needs_servers
def test_missing_rclone_config_is_one_line(tmp_path, recordings, capsys):
    remote = Remote("sftp", None, tmp_path / "nope.conf", "nas:/srv/{device}", tmp_path)
    code, out, err = edge(capsys, "sync", "--config", str(write_config(tmp_path, recordings, remote)))
    assert code == 2
    assert err == f"edge: {tmp_path / 'nope.conf'}: rclone config not found (sync.rclone_config; " \
                  "create it with: rclone config --config FILE)\n"


def test_remote_without_a_folder_is_refused(tmp_path, recordings, capsys):
    remote = Remote("sftp", None, tmp_path / "rclone.conf", "nas:", tmp_path)
    (tmp_path / "rclone.conf").write_text("")
    code, out, err = edge(capsys, "sync", "--config", str(write_config(tmp_path, recordings, remote)))
    assert code == 2
    assert "sync.remote must be an rclone remote and a folder" in err and err.count("\n") == 1


def test_rclone_error_is_its_last_error_line():
    stderr = ("2026/11/24 21:27:43 ERROR : : error listing: directory not found\n"
              "2026/11/24 21:27:43 Failed to lsjson with 2 errors: last error was: directory not found\n")
    assert rclone_error(stderr) == "lsjson with 2 errors: last error was: directory not found"


def test_many_devices_list_as_one_table(tmp_path, remote, capsys):
    rooms = {"room-12": (0.5, 1.0), "room-14": (0.75,)}
    for number, (room, seconds) in enumerate(rooms.items()):
        recordings = tmp_path / room / "recordings"
        record(recordings, seconds, first_day=f"2026-11-2{3 + number}", device=room)
        assert edge(capsys, "sync", "--config", str(write_config(tmp_path, recordings, remote, device=room)))[0] == 0
    office = remote.disk.parent  # what a NAS share or an rclone mount of the remote shows
    code, out, err = edge(capsys, "list", "--csv", str(office))
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(row["device"], row["start"]) for row in rows] == [
        ("room-12", "2026-11-23 09:10:00"), ("room-12", "2026-11-23 09:11:00"), ("room-14", "2026-11-24 09:10:00")]
    assert [float(row["duration_s"]) for row in rows] == [0.5, 1.0, 0.75]
    code, out, _ = edge(capsys, "list", str(office / "room-14"), str(office / "room-12"))
    assert code == 0
    assert out.splitlines()[0].split()[:2] == ["device", "file"]
    assert out.splitlines()[-1] == "3 segments, 0:00:02 of speech"


def test_list_of_a_folder_without_manifests_is_one_line(tmp_path, capsys):
    code, out, err = edge(capsys, "list", str(tmp_path))
    assert code == 2
    assert err == f"edge: {tmp_path}: no manifest.jsonl here nor in a folder one level down\n"


def test_status_shows_last_sync_waiting_and_last_error(tmp_path, recordings, remote, capsys):
    config = write_config(tmp_path, recordings, remote)
    publish_status(tmp_path / "status.json", RecorderStatus(
        since="2026-11-24T09:00:00+01:00", pid=os.getpid(),
        updated=datetime.now().astimezone().isoformat(timespec="seconds")))
    remote.server.kill()
    assert edge(capsys, "sync", "--config", str(config))[0] == 1
    code, out, err = edge(capsys, "status", "--config", str(config))
    assert code == 1, err  # the status names this test's pid, not an `edge run`: not running
    assert "recorder:       not running since " in out
    assert "last sync:      never to " in out
    assert "waiting:        6 segments (0.2 MB)" in out
    problem = next(line for line in out.splitlines() if line.startswith("sync problem:"))
    assert problem != "sync problem:   none"

    remote.server.start()
    assert edge(capsys, "sync", "--config", str(config))[0] == 0
    code, out, err = edge(capsys, "status", "--config", str(config))
    assert "waiting:        0 segments (0.0 MB)" in out
    assert "sync problem:   none" in out
    last = re.search(r"last sync:      (\S+) to ", out).group(1)
    assert abs((datetime.now().astimezone() - datetime.fromisoformat(last)).total_seconds()) < 300


def test_doctor_checks_rclone_and_the_remote(tmp_path, recordings, remote, monkeypatch):
    settings = load_config(write_config(tmp_path, recordings, remote))
    result = doctor.check_sync(settings, None)
    assert result.ok, result.detail
    remote.rclone_config.chmod(0o644)
    assert doctor.check_sync(settings, None).line("sync").endswith(f"-> chmod 600 {remote.rclone_config}")
    remote.rclone_config.chmod(0o600)
    remote.server.kill()
    result = doctor.check_sync(settings, None)
    assert not result.ok and "\n" not in result.line("sync")
    assert result.line("sync").startswith("FAIL sync: ")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = doctor.check_sync(settings, None)
    assert result.detail == "rclone is not installed (apt install rclone)"


def test_the_service_gets_a_one_line_status(tmp_path, recordings, remote, capsys, monkeypatch):
    import socket

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    listener.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    try:
        code, out, err = edge(capsys, "sync", "--once", "--config", str(write_config(tmp_path, recordings, remote)))
        assert code == 0, out + err
        message = listener.recv(4096).decode()
    finally:
        listener.close()
    assert message == "STATUS=sync ok · 6 uploaded · 0 waiting (0.0 MB)"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a command as another user")
def test_list_of_folders_another_user_cannot_read_is_one_line(tmp_path, recordings):
    # The office's user, on a share where the recorder's files are private: one line, no traceback.
    recordings.chmod(0o700)

    def as_nobody(code: str) -> subprocess.CompletedProcess:
        return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                               "-c", code], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})

    if as_nobody("import edge.cli").returncode != 0:
        pytest.skip("this Python and its packages cannot be run by another user here")
    result = as_nobody(f"import sys; from edge.cli import main; sys.exit(main(['list', '{recordings.parent}']))")
    assert result.returncode == 2, result.stderr
    assert re.fullmatch(r"edge: \S+: permission denied\n", result.stderr), result.stderr


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
def test_a_run_reads_and_rewrites_only_the_index_of_the_days_it_sends_into(tmp_path, recordings, remote, capsys):
    """A year on the remote costs a run what a day does: the other days' manifests are
    neither fetched (a damaged line there says nothing) nor written again."""
    config = write_config(tmp_path, recordings, remote)
    assert edge(capsys, "sync", "--config", str(config))[0] == 0
    old_day = remote.disk / "20261123"
    with open(old_day / "manifest.jsonl", "ab") as f:
        f.write(b"[1,2]\n")
    before = {name: (old_day / name).stat() for name in ("manifest.jsonl", "SHA256SUMS")}
    new = record(recordings, (0.5, 0.5), first_day="2026-11-26")
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 0 and "2 uploaded" in out, err
    assert err == ""  # the damaged line of 20261123 was not read
    for name, stat in before.items():
        now = (old_day / name).stat()
        assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns), name
    assert read_manifest(remote.disk / "20261126" / "manifest.jsonl") == [e for e in new if e["file"].startswith("20261126/")]


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
def test_a_run_with_nothing_to_send_logs_in_to_the_server_once(tmp_path, recordings, remote, capsys):
    """A login is an SSH handshake the Pi pays for, in every run every 15 minutes: a run that
    finds everything synced lists the card's day folders over one connection, and that is all."""
    for day in ("2026-11-24", "2026-11-25", "2026-11-26"):
        record(recordings, (0.5,), first_day=day)
    config = write_config(tmp_path, recordings, remote)
    assert edge(capsys, "sync", "--config", str(config))[0] == 0
    heard = remote.server.log.stat().st_size
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 0 and out.startswith("0 segments verified"), out + err
    with open(remote.server.log) as log:
        log.seek(heard)
        logins = [line for line in log if "Accepted publickey" in line]
    assert len(logins) == 1, logins


@pytest.mark.parametrize("remote", ["webdav"], indirect=True)
def test_a_run_lists_only_the_folders_of_the_segments_on_the_card(tmp_path, recordings, remote, capsys):
    """The remote keeps years the card no longer holds: a run lists the folders of the card's
    segments on the remote, never the others (the server's log says which it was asked for)."""
    config = write_config(tmp_path, recordings, remote)
    assert edge(capsys, "sync", "--config", str(config))[0] == 0
    gone = remote.disk / "20250101"  # a day long gone from the card
    gone.mkdir()
    (gone / f"000001_080000_{DEVICE}.wav").write_bytes(b"RIFF")
    heard = remote.server.log.stat().st_size
    record(recordings, (0.5,), first_day="2026-11-26")
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 0 and "1 uploaded" in out, err
    with open(remote.server.log) as log:
        log.seek(heard)
        asked = [line.split(" : ", 1)[1].split(":", 1)[0] for line in log if ": PROPFIND from " in line]
    listed_days = {path.strip("/").split("/")[2] for path in asked if path.count("/") > 3}
    assert "20261123" in listed_days and not any(day.startswith("2025") for day in listed_days), asked


@pytest.mark.parametrize("remote", ["sftp", "webdav"], indirect=True)
def test_a_remote_with_one_manifest_at_its_top_is_split_into_day_folders(tmp_path, recordings, remote, capsys):
    """What an earlier version wrote: one manifest.jsonl and SHA256SUMS at the top of the
    device's folder. The next run that sends puts each day's lines in that day's folder and
    removes the top's files only after."""
    config = write_config(tmp_path, recordings, remote)
    assert edge(capsys, "sync", "--config", str(config))[0] == 0
    earlier = read_manifest(recordings)
    days = sorted({Path(e["file"]).parent.name for e in earlier})
    (remote.disk / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in earlier))
    (remote.disk / "SHA256SUMS").write_text("".join(f"{e['sha256']}  {e['file']}\n" for e in earlier))
    for day in days:
        (remote.disk / day / "manifest.jsonl").unlink()
        (remote.disk / day / "SHA256SUMS").unlink()
    record(recordings, (0.5,), first_day="2026-11-27")
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 0 and "1 uploaded" in out, err
    assert_remote_matches(remote, read_manifest(recordings))


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
def test_what_else_a_remote_manifest_holds_is_kept_or_passed_over(tmp_path, recordings, remote, capsys):
    """A tombstone in a day's remote manifest (a card's day folder copied there by hand) is
    passed over, not the lines after it; a day whose remote manifest has no line left still
    takes the run's; a top manifest that lists a file of its own (no day folder) is kept."""
    config = write_config(tmp_path, recordings, remote)
    assert edge(capsys, "sync", "--config", str(config))[0] == 0
    entries = read_manifest(recordings)
    day = remote.disk / "20261123"
    lines = (day / "manifest.jsonl").read_text()
    tombstone = json.dumps({"deleted": entries[0]["file"], "seq": entries[0]["seq"], "reason": "by hand"})
    (day / "manifest.jsonl").write_text(tombstone + "\n" + lines)
    (remote.disk / entries[1]["file"]).unlink()  # so the run sends into that day again
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 0 and "1 uploaded" in out, err
    assert_remote_matches(remote, entries)

    (day / "manifest.jsonl").write_text("")  # nothing left there (a hand edit)
    (remote.disk / entries[1]["file"]).unlink()
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 0 and "1 uploaded" in out, err
    assert [e["file"] for e in read_manifest(day / "manifest.jsonl")] == [entries[1]["file"]]

    # The top manifest of an earlier version, listing a file at the top as well.
    top_file = {**entries[1], "file": "loose.wav"}
    (remote.disk / "loose.wav").write_bytes((recordings / entries[1]["file"]).read_bytes())
    (remote.disk / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries + [top_file]))
    (remote.disk / entries[2]["file"]).unlink()
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 0 and "1 uploaded" in out, err
    assert (remote.disk / "manifest.jsonl").exists(), "a top manifest with a file of its own was removed"


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
def test_damaged_manifest_lines_on_the_card_and_the_remote_are_one_line_each(tmp_path, recordings, remote, capsys):
    config = write_config(tmp_path, recordings, remote)
    assert edge(capsys, "sync", "--config", str(config))[0] == 0
    record(recordings, (0.5, 0.5), first_day="2026-11-26")
    entries = read_manifest(recordings)
    # An older day's manifest (the writer repairs only the day it writes) and the remote's.
    card_manifest = recordings / "20261123" / "manifest.jsonl"
    with open(card_manifest, "ab") as f:
        f.write(b'{"file": "x.wav", "seq": "seven"}\n')
    damaged_line = len(card_manifest.read_bytes().splitlines())
    # The remote's manifest of a day this run sends into again (a copy gone from there).
    remote_manifest = remote.disk / "20261123" / "manifest.jsonl"
    with open(remote_manifest, "ab") as f:
        f.write(b"[1,2]\n")
    (remote.disk / entries[0]["file"]).unlink()
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 0, err
    assert "Traceback" not in err
    assert f"{card_manifest}:{damaged_line}: skipped, expected \"seq\" to be an integer" in err
    assert f"/20261123/manifest.jsonl:{len(SECONDS) + 1}: skipped, expected a JSON object, got list" in err
    assert "3 uploaded" in out
    assert_remote_matches(remote, entries)


@pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone is not installed")
def test_an_idle_run_writes_nothing_to_the_card_and_status_still_shows_it(tmp_path, recordings, capsys):
    """The timer's run every 15 minutes with nothing new to send: sync-state.json keeps its
    inode and time; the run's time reaches `edge status` from memory (sync-run.json), and after
    a reboot (that file gone) the card's time of the last run that changed something."""
    (tmp_path / "rclone.conf").write_text("[disk]\ntype = local\n")
    remote = Remote("local", None, tmp_path / "rclone.conf", f"disk:{tmp_path}/nas/recordings/{{device}}",
                    tmp_path / "nas" / "recordings" / DEVICE)
    config = write_config(tmp_path, recordings, remote)
    publish_status(tmp_path / "status.json", RecorderStatus(since="2026-11-24T09:00:00+01:00", pid=os.getpid(),
                                                            updated=datetime.now().astimezone().isoformat()))
    assert edge(capsys, "sync", "--once", "--config", str(config))[0] == 0
    assert_remote_matches(remote, read_manifest(recordings / "manifest.jsonl"))
    state = recordings / SYNC_STATE
    card = json.loads(state.read_text())
    card["last_success"] = card["last_attempt"] = card_success = "2026-11-23T15:00:00+01:00"  # a day before
    state.write_text(json.dumps(card))
    written = state.stat()
    run_record = tmp_path / "sync-run.json"
    run_record.unlink()

    code, out, err = edge(capsys, "sync", "--once", "--config", str(config))
    assert code == 0 and "0 uploaded" in out, err
    assert (state.stat().st_ino, state.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    run = json.loads(run_record.read_text())
    assert run["last_error"] is None and run["last_success"] == run["last_attempt"]
    out = edge(capsys, "status", "--config", str(config))[1]
    assert f"last sync:      {run['last_success']} to " in out and "sync problem:   none" in out

    run_record.unlink()  # a reboot empties /run
    out = edge(capsys, "status", "--config", str(config))[1]
    assert f"last sync:      {card_success} to " in out


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
def test_a_manifest_that_cannot_be_staged_fails_the_run_and_is_sent_next_time(tmp_path, recordings, remote, capsys):
    config = write_config(tmp_path, recordings, remote)
    entries = read_manifest(recordings / "manifest.jsonl")
    day = Path(entries[0]["file"]).parent.name
    blocker = remote.staging / day / "manifest.jsonl"
    blocker.mkdir(parents=True)  # where the manifest's copy must go, a folder of the same name
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"{day}/manifest.jsonl: is a directory" in err  # which file, and why in rclone's words
    assert not (remote.disk / day / "manifest.jsonl").exists()
    # The segments went into place, verified, but nothing lists them there yet.
    assert files_under(remote.disk) == sorted(e["file"] for e in entries)
    state = SyncState.load(recordings)
    assert sorted(state.synced) == sorted(e["file"] for e in entries)
    assert not any(record["listed"] for record in state.synced.values())
    assert state.last_error == err.strip().split(" failed: ", 1)[1]

    blocker.rmdir()
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 0, err
    assert "0 uploaded" in out
    assert_remote_matches(remote, entries)
    assert all(record["listed"] for record in SyncState.load(recordings).synced.values())


def md5sum_of_the_index(tmp_path: Path, remote: Remote, answer: str) -> None:
    """The SFTP server's md5sum runs the shell lines ``answer`` for the index files (the day
    manifests and SHA256SUMS, the path in $1) and hashes everything else as it should."""
    command = tmp_path / "md5sum-of-the-index"
    command.write_text(f'#!/bin/sh\ncase "$1" in *manifest.jsonl|*SHA256SUMS) {answer};; esac\nexec md5sum "$@"\n')
    command.chmod(0o755)
    with open(remote.rclone_config, "a") as conf:
        conf.write(f"md5sum_command = {command}\n")


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
@pytest.mark.parametrize("honest_calls", [0, 1], ids=["as it arrives", "once it arrived"])
def test_a_manifest_copy_the_remote_cannot_prove_is_never_placed(tmp_path, recordings, remote, capsys, honest_calls):
    # The server's md5sum lies about the index files it holds, from the first time it is
    # asked (rclone's own check as the copy ends) or only after that (the copy changed once
    # it arrived): what proves a copy is its hash when it is about to be placed.
    seen = tmp_path / "hashed"
    seen.mkdir()
    honest = remote.rclone_config.read_text()
    md5sum_of_the_index(tmp_path, remote, f"""
  asked=$(ls {seen} | grep -c "^$(echo "$1" | md5sum | cut -c1-32)")
  touch {seen}/$(echo "$1" | md5sum | cut -c1-32).$asked
  [ "$asked" -ge {honest_calls} ] && echo "0123456789abcdef0123456789abcdef  $1" && exit 0""")
    config = write_config(tmp_path, recordings, remote)
    entries = read_manifest(recordings / "manifest.jsonl")
    code, out, err = edge(capsys, "sync", "--once", "--config", str(config))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "manifest.jsonl" in err, err
    assert not list(remote.disk.rglob("manifest.jsonl")) and not list(remote.disk.rglob("SHA256SUMS"))
    assert files_under(remote.disk) == sorted(e["file"] for e in entries)  # the segments' proof held
    assert not any(record["listed"] for record in SyncState.load(recordings).synced.values())

    remote.rclone_config.write_text(honest)
    code, out, err = edge(capsys, "sync", "--once", "--config", str(config))
    assert code == 0 and "0 uploaded" in out, out + err
    assert_remote_matches(remote, entries)


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
def test_a_manifest_copy_the_remote_cannot_hash_is_proven_by_downloading_it(tmp_path, recordings, remote, capsys):
    # The server's md5sum answers nothing for the index files (a hash it cannot give): their
    # copies are downloaded and compared, and placed when they match.
    md5sum_of_the_index(tmp_path, remote, "exit 0")
    config = write_config(tmp_path, recordings, remote)
    code, out, err = edge(capsys, "sync", "--once", "--config", str(config))
    assert code == 0 and "(6 uploaded, " in out, out + err
    assert_remote_matches(remote, read_manifest(recordings / "manifest.jsonl"))


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
def test_a_remote_manifest_that_cannot_be_fetched_fails_the_run_naming_it(tmp_path, recordings, remote, capsys):
    # Its lines would be lost if the day's index were written without them: the run stops.
    config = write_config(tmp_path, recordings, remote)
    day = Path(read_manifest(recordings / "manifest.jsonl")[0]["file"]).parent.name
    (remote.disk / day / "manifest.jsonl").mkdir(parents=True)  # where the day's manifest is read, a folder
    code, out, err = edge(capsys, "sync", "--once", "--config", str(config))
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert f"failed: {day}/manifest.jsonl: " in err, err
    assert not any(is_synced(recordings, e["file"]) for e in read_manifest(recordings / "manifest.jsonl"))


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
def test_a_mover_that_fails_unexpectedly_fails_the_run_in_one_line_and_records_nothing(
        tmp_path, recordings, remote, capsys, monkeypatch):
    # A bug in the mover's thread (here: an answer to the index's proof that nobody expected)
    # must not leave the run waiting for a thread that is gone: the run fails, one line,
    # nothing counts as synced, and the next run sends everything.
    from edge.rclone_rc import Daemon

    answer = Daemon.call

    def call(self, method, **params):
        if method == "operations/stat":
            raise ValueError("an answer nobody expected")
        return answer(self, method, **params)

    monkeypatch.setattr(Daemon, "call", call)
    config = write_config(tmp_path, recordings, remote)
    outcome = []
    runner = threading.Thread(target=lambda: outcome.append(edge(capsys, "sync", "--once", "--config", str(config))),
                              daemon=True)
    runner.start()
    runner.join(RUN_TIMEOUT_S)
    assert outcome, f"the run still waits after {RUN_TIMEOUT_S} s"
    code, out, err = outcome[0]
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert err.strip().endswith("the mover failed: ValueError('an answer nobody expected')"), err
    assert not list(remote.disk.rglob("manifest.jsonl"))
    assert not any(record["listed"] for record in SyncState.load(recordings).synced.values())

    monkeypatch.undo()
    code, out, err = edge(capsys, "sync", "--once", "--config", str(config))
    assert code == 0, err
    assert_remote_matches(remote, read_manifest(recordings / "manifest.jsonl"))


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("chattr") is None,
                    reason="needs root and chattr to make a file the card cannot delete")
@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
def test_a_synced_segment_the_card_cannot_delete_stays_listed_and_is_said(tmp_path, recordings, remote, capsys):
    config = write_config(tmp_path, recordings, remote, delete_after_verified=True)
    entries = read_manifest(recordings / "manifest.jsonl")
    stuck = recordings / entries[2]["file"]
    subprocess.run(["chattr", "+i", str(stuck)], check=True)
    try:
        code, out, err = edge(capsys, "sync", "--config", str(config))
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert code == 1 and "5 deleted from the card" in out
    assert err == f"edge: {entries[2]['file']}: copied, but cannot remove it from the card (Operation not permitted)\n"
    assert_remote_matches(remote, entries)
    assert [p.relative_to(recordings).as_posix() for p in recordings.glob("*/*.wav")] == [entries[2]["file"]]
    assert read_manifest(recordings / "manifest.jsonl") == [entries[2]]
    # What left the card says why, and is no longer counted as on it.
    raw = [json.loads(line) for day in recordings.glob("*/manifest.jsonl") for line in day.read_text().splitlines()]
    assert {t["deleted"]: t["reason"] for t in raw if "deleted" in t} == {
        e["file"]: f"synced: copy verified on {remote.device_remote}"
        for e in entries if e is not entries[2]}
    assert list(SyncState.load(recordings).synced) == [entries[2]["file"]]


class FreeSpace:
    """rclone as far as a failed copy's explanation asks it: the remote has ``free`` bytes
    (None: its backend does not say)."""

    def __init__(self, free):
        self.free = free

    def free_bytes(self, remote):
        return self.free


@pytest.mark.parametrize("free, full", [(None, False), (1_000_000, False), (999_999, True)])
def test_a_failed_copy_is_put_down_to_a_full_remote_only_when_it_needed_more_than_was_free(free, full):
    from edge.sync_staging import Staging

    staging = Staging(FreeSpace(free), Path("/card"), "nas:recordings/room-12", "nas:recordings/.incoming/room-12",
                      card=None)
    sizes = {"a.wav": 600_000, "b.wav": 400_000, "sent-before.wav": 5_000_000}
    reason = staging._explain_copy_failure("rclone copy exited with 7", ["a.wav", "b.wav"], sizes)
    assert reason == ("the remote is full (1.0 MB free, 1.0 MB to copy): rclone copy exited with 7" if full
                      else "rclone copy exited with 7")


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
def test_a_segment_that_cannot_be_moved_into_place_is_not_counted_as_synced(tmp_path, recordings, remote, capsys):
    config = write_config(tmp_path, recordings, remote)
    entries = read_manifest(recordings / "manifest.jsonl")
    taken = remote.disk / entries[3]["file"]
    (taken / "in-the-way").mkdir(parents=True)  # its final name on the remote, a folder that is not empty
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    # The mover stops at the failure: what it placed before is synced (not yet listed), the
    # rest waits in the staging folder for the next run.
    state = SyncState.load(recordings)
    placed = [e["file"] for e in entries if (remote.disk / e["file"]).is_file()]
    assert sorted(state.synced) == placed and entries[3]["file"] not in placed
    assert all(sha256(remote.disk / name) == record["sha256"] and not record["listed"]
               for name, record in state.synced.items())

    shutil.rmtree(taken)
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 0, err
    assert f"{len(entries) - len(placed)} uploaded" in out
    assert_remote_matches(remote, entries)


@pytest.mark.parametrize("remote", ["sftp", "local"], indirect=True)
def test_a_run_that_sends_segments_lists_the_remote_once_and_a_first_sync_not_at_all(tmp_path, recordings, remote,
                                                                                     capsys, monkeypatch):
    # Listing a device folder of a school year is thousands of entries over the network: the
    # segments just moved into place are known by their card times at the remote's precision
    # (a second for SFTP, a nanosecond for a local disk). A first sync has nothing verified
    # to forget, and each rclone started costs the small Pi CPU and a handshake.
    from edge.rclone import Rclone

    commands = []
    start = Rclone.start
    monkeypatch.setattr(Rclone, "start", lambda self, *args, **kw: commands.append(args[0]) or start(self, *args, **kw))
    config = write_config(tmp_path, recordings, remote)
    code, out, err = edge(capsys, "sync", "--once", "--config", str(config))
    assert code == 0 and "6 uploaded" in out, err
    assert "lsjson" not in commands
    assert_remote_matches(remote, read_manifest(recordings / "manifest.jsonl"))
    record(recordings, (0.5,), first_day="2026-11-26")
    commands.clear()
    code, out, err = edge(capsys, "sync", "--once", "--config", str(config))
    assert code == 0 and "1 uploaded" in out, err
    assert commands.count("lsjson") == 1
    commands.clear()
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 0 and "0 uploaded" in out  # and the times recorded were the remote's own
    assert commands == ["lsjson"]  # a run with nothing to send only looks (every 15 minutes)


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
def test_every_upload_of_a_segment_goes_at_the_bandwidth_limit_and_nothing_else_waits_for_it(
        tmp_path, recordings, remote, capsys, monkeypatch):
    # sync.bwlimit spares the school's network during lessons: it holds the segments' upload,
    # whichever way they go up (new, gone from the remote, found in place but damaged), and
    # not the listing, the manifest or the moves into place.
    from edge.rclone import Job

    commands = []
    init = Job.__init__
    monkeypatch.setattr(Job, "__init__", lambda self, command, *a, **kw: commands.append(command) or
                        init(self, command, *a, **kw))
    config = write_config(tmp_path, recordings, remote, bwlimit=8.0)
    where = remote.device_remote
    code, out, err = edge(capsys, "sync", "--once", "--config", str(config))
    assert code == 0 and out.startswith(f"6 segments verified on {where} now (6 uploaded, "), out + err
    entries = read_manifest(recordings / "manifest.jsonl")
    (remote.disk / entries[1]["file"]).unlink()  # gone from the remote: copied again
    code, out, err = edge(capsys, "sync", "--once", "--config", str(config))
    assert code == 0 and "(1 uploaded, " in out, out + err
    # A lost state file, and a copy damaged on the remote with its size and time unchanged:
    # found in place, it fails its verification and is sent again.
    (recordings / SYNC_STATE).unlink()
    damage_keeping_size_and_time(remote.disk / entries[2]["file"])
    kept = {path: path.stat().st_mtime_ns for path in recordings.glob("*/*.wav")}
    entries = record(recordings, (1.0,), first_day="2026-11-24")  # and a new one, sent beside it
    for path, mtime in kept.items():  # (record dates every segment; the others keep their time)
        os.utime(path, ns=(mtime, mtime))
    code, out, err = edge(capsys, "sync", "--once", "--config", str(config))
    assert code == 0 and "(2 uploaded, " in out, out + err
    assert_remote_matches(remote, entries)
    segments = [c for c in commands if "copy" in c and str(recordings) in c]
    assert len(segments) >= 4 and all(c[c.index("--bwlimit") + 1] == "8M" for c in segments)
    assert len(commands) > len(segments) and not any("--bwlimit" in c for c in commands if c not in segments)


def test_a_run_without_a_place_for_its_record_says_why_at_debug_level_and_syncs_all_the_same(
        tmp_path, recordings, remote, capsys, caplog):
    # An office machine, or a Pi whose recorder has not run since boot: no runtime folder.
    config = write_config(tmp_path, recordings, remote)
    settings = json.loads(config.read_text())
    settings["service"]["status_file"] = str(tmp_path / "no-runtime-folder" / "status.json")
    config.write_text(json.dumps(settings))
    with caplog.at_level("DEBUG", logger="edge.sync"):
        code, out, err = edge(capsys, "sync", "--once", "--config", str(config))
    assert code == 0 and "(6 uploaded, " in out, err
    record = tmp_path / "no-runtime-folder" / "sync-run.json"
    assert [r.getMessage() for r in caplog.records if r.name == "edge.sync" and r.levelname == "DEBUG"] == [
        f"{record}: cannot publish the run (No such file or directory)"]


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
def test_a_remote_that_fails_while_verifying_fails_the_run_with_its_reason_and_trusts_nothing(
        tmp_path, recordings, remote, capsys):
    config = write_config(tmp_path, recordings, remote)
    assert edge(capsys, "sync", "--once", "--config", str(config))[0] == 0
    before = {p: p.stat().st_ino for p in remote.disk.rglob("*.wav")}
    (recordings / SYNC_STATE).unlink()  # so every copy is found in place and checked there
    with open(remote.rclone_config, "a") as conf:
        conf.write("md5sum_command = false\n")  # the server cannot hash what it holds
    code, out, err = edge(capsys, "sync", "--once", "--config", str(config))
    where = remote.device_remote
    assert code == 1 and len(err.splitlines()) == 1, err
    assert err.startswith(f"edge: sync to {where} failed: check with 6 errors: last error was: "
                          "failed to calculate md5 hash: "), err  # rclone's own words
    assert not any(is_synced(recordings, e["file"]) for e in read_manifest(recordings / "manifest.jsonl"))
    assert {p: p.stat().st_ino for p in remote.disk.rglob("*.wav")} == before
    # A failed run ends what it started: no rclone (its rcd included), no mover thread.
    assert not [pid for pid in descendants(os.getpid()) if "rclone" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert "edge-sync-mover" not in {thread.name for thread in threading.enumerate()}


def damage_keeping_size_and_time(path: Path) -> None:
    """A byte flipped in ``path``, its size and time as they were: only its hash can tell."""
    times = path.stat()
    flip_a_byte(path)
    os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
def test_a_damaged_copy_found_in_place_that_cannot_be_sent_again_fails_the_run_with_the_remotes_reason(
        tmp_path, recordings, remote, capsys):
    config = write_config(tmp_path, recordings, remote)
    assert edge(capsys, "sync", "--once", "--config", str(config))[0] == 0
    entries = read_manifest(recordings / "manifest.jsonl")
    (recordings / SYNC_STATE).unlink()  # so every copy is found in place and verified there
    damage_keeping_size_and_time(remote.disk / entries[1]["file"])
    (remote.staging / entries[1]["file"] / "in-the-way").mkdir(parents=True)  # and its new copy refused
    code, out, err = edge(capsys, "sync", "--once", "--config", str(config))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "SSH_FX_FAILURE" in err, err
    assert sorted(SyncState.load(recordings).synced) == sorted(e["file"] for e in entries if e is not entries[1])


def test_segments_finished_during_a_pass_go_up_in_the_next(tmp_path, recordings, remote, capsys, monkeypatch):
    from edge.sync import RemoteSync

    passes = []
    record_pass = RemoteSync._record

    def recorded(self, *args):
        record_pass(self, *args)
        passes.append(len(passes) + 1)
        if passes == [1]:
            record(recordings, (1.0,), first_day="2026-11-24")  # the recorder finished one meanwhile

    monkeypatch.setattr(RemoteSync, "_record", recorded)
    code, out, err = edge(capsys, "sync", "--config", str(write_config(tmp_path, recordings, remote)))
    entries = read_manifest(recordings / "manifest.jsonl")
    where = remote.device_remote
    assert code == 0 and len(entries) == 7, err
    assert out.startswith(f"7 segments verified on {where} now (7 uploaded, ") and "; 0 waiting" in out, out
    assert passes == [1, 2, 3]  # the third finds nothing to send, and the run ends
    assert_remote_matches(remote, entries)


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
def test_a_segment_the_remote_refuses_fails_the_run_with_the_remotes_reason_and_goes_next_time(
        tmp_path, recordings, remote, capsys):
    config = write_config(tmp_path, recordings, remote)
    entries = read_manifest(recordings / "manifest.jsonl")
    refused = remote.staging / entries[1]["file"]
    (refused / "in-the-way").mkdir(parents=True)  # where its copy must be written, a folder
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "SSH_FX_FAILURE" in err and "remote is full" not in err  # the server's reason, not a guess
    assert sorted(SyncState.load(recordings).synced) == sorted(e["file"] for e in entries if e is not entries[1])
    assert not (remote.disk / entries[1]["file"]).exists()
    # The remote manifest lists what arrived, not what the run meant to send.
    assert [e["file"] for e in read_manifest(remote.disk)] == [
        e["file"] for e in entries if e is not entries[1]]
    # Refused again with nothing else to send: the same reason.
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "SSH_FX_FAILURE" in err, err

    shutil.rmtree(refused)
    code, out, err = edge(capsys, "sync", "--config", str(config))
    assert code == 0 and "1 uploaded" in out, err
    assert_remote_matches(remote, entries)


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
def test_what_is_proven_goes_into_place_while_a_long_copy_goes_on(tmp_path, remote):
    # Then a run cut short keeps, in place, everything that had arrived whole.
    recordings, short, long, config, run = sync_caught_with_a_short_segment_in_place(tmp_path, remote)
    try:
        arriving = remote.staging / long["file"]  # not begun yet, or on its way
        assert run.poll() is None and not (remote.disk / long["file"]).exists()
        assert (arriving.stat().st_size if arriving.exists() else 0) < (recordings / long["file"]).stat().st_size
        assert sha256(remote.disk / short["file"]) == short["sha256"]
    finally:
        out, err = finish(run)
    assert run.returncode == 0, err
    assert_remote_matches(remote, [short, long])


def hold_the_first_segment_copy_and_watch_the_staging_folder(monkeypatch, tmp_path, remote) -> list:
    """Hold back the first copy of segments until `edge sync` waits for it (it then has made no
    folder yet), and note each copy into the staging folder that starts while another runs
    and a folder it copies into is missing: both would make it. Returns those starts."""
    from edge.rclone import Job

    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    copies, clashes, held = [], [], []
    init, wait_at_most, result = Job.__init__, Job.wait_at_most, Job.result

    def starting(self, command, *args, **kwargs):
        if "copy" in command and command[-1] == remote.device_remote.replace(DEVICE, f"{STAGING}/{DEVICE}"):
            names = Path(command[command.index("--files-from") + 1]).read_text().split()
            folders = {str(Path(name).parent) for name in names} | {"."}
            if any(not job.done() for job in copies) and not all((remote.staging / f).is_dir() for f in folders):
                clashes.append(names)
            if not copies and "--compare-dest" in command:
                command = ["sh", "-c", 'read go < "$0" && exec "$@"', str(fifo), *command]
                held.append(self)
            copies.append(self)
        init(self, command, *args, **kwargs)

    def releasing(method):
        def call(self, *args, **kwargs):
            if self in held:
                held.remove(self)
                fifo.write_text("go\n")  # opening it waits for the held shell to read
            return method(self, *args, **kwargs)
        return call

    monkeypatch.setattr(Job, "__init__", starting)
    monkeypatch.setattr(Job, "wait_at_most", releasing(wait_at_most))
    monkeypatch.setattr(Job, "result", releasing(result))
    return clashes


@pytest.mark.parametrize("remote", ["sftp"], indirect=True)
@pytest.mark.parametrize("case", ["first sync", "all found in place", "copied again"])
def test_no_two_copies_can_make_a_folder_of_the_staging_folder_at_once(tmp_path, recordings, remote, capsys,
                                                                       monkeypatch, case):
    # Two rclone processes that both make a new folder fail one of them: an SFTP server
    # answers the second mkdir with a bare "Failure" (rclone 1.60). The segments, the manifest
    # and segments gone from the remote go up side by side, into a staging folder that may not
    # exist (a first sync, or someone removed it), nor its day folders (emptied ones are removed).
    config = write_config(tmp_path, recordings, remote)
    if case != "first sync":
        assert edge(capsys, "sync", "--once", "--config", str(config))[0] == 0
        shutil.rmtree(remote.staging.parent)
    if case == "all found in place":  # nothing copied: the manifest waits for the copy's end
        (recordings / SYNC_STATE).unlink()
    if case == "copied again":  # gone from the remote: sent beside a new one of the same day
        gone = read_manifest(recordings / "manifest.jsonl")[0]["file"]
        (remote.disk / gone).unlink()
        record(recordings, (0.5,))
    clashes = hold_the_first_segment_copy_and_watch_the_staging_folder(monkeypatch, tmp_path, remote)
    code, out, err = edge(capsys, "sync", "--once", "--config", str(config))
    assert code == 0, err
    assert clashes == []
    assert_remote_matches(remote, read_manifest(recordings / "manifest.jsonl"))
