"""A full or failing card on a real small tmpfs: the recorder stops writing, keeps
listening, says so (STATUS, status file, log, LED) and resumes when it can write again."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
import struct
import subprocess
import threading

import pytest
from gpiozero.pins.mock import MockFactory

from cardcheck import assert_card_consistent
from conftest import PacedSource, make_recorder, pin_time_tolerance_s, wait_until
from edge.config import settings_from_dict
from edge.indicator import LedIndicator, LedPattern
from edge.notify import ServiceNotifier
from edge.supervisor import SPACE_CHECK_S, STORAGE_RETRY_S
from edge.status import RecorderState, read_status
from edge.storage import MANIFEST, read_manifest

PIN = 17
OPERATING = (os.path.dirname(__file__) or ".") + "/../docs/operating.md"


class AudioClockSource(PacedSource):
    """Looping speech at 20 times real time whose audio timeline is also the recorder's clock
    (``monotonic``), so every interval of the recorder is measured in audio, as on a Pi
    whatever its speed. ``hooks`` run in the recorder's thread after each frame."""

    def __init__(self, samples):
        super().__init__(samples, speed=20, loop=True)
        self.hooks = []

    def audio_time(self) -> float:
        return self.delivered * 512 / 16000

    def read(self, timeout):
        frame = super().read(timeout)
        for hook in self.hooks:
            hook()
        return frame


def can_mount_tmpfs(path) -> bool:
    if os.geteuid() != 0:
        return False
    path.mkdir(exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)],
                        capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(path)], check=True)
    return ok


@pytest.fixture
def card(tmp_path):
    mount = tmp_path / "card"
    if not can_mount_tmpfs(mount):
        pytest.skip("needs root and tmpfs mounts to make a real small card")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


class RunningRecorder:
    def __init__(self, tmp_path, card, lesson, detector, **storage):
        self.root = card / "rec"
        settings = settings_from_dict({
            "storage": {"recordings_dir": str(self.root), "fsync_interval_s": 0.1, **storage},
            "led": {"pin": PIN, "heartbeat": False}})
        self.factory = MockFactory()
        self.led = LedIndicator(PIN, heartbeat=False, pin_factory=self.factory)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(tmp_path / "notify.sock"))
        self.notify.settimeout(0.1)
        self.received: list[str] = []
        # Read as systemd does, all the time: a socket nobody reads blocks the sender.
        self.listening = threading.Thread(target=self._listen, daemon=True)
        self.listening.start()
        self.status_path = tmp_path / "status.json"
        self.source = AudioClockSource(lesson)
        self.recorder = make_recorder(settings, detector, self.root, indicator=self.led,
                                      notifier=ServiceNotifier(str(tmp_path / "notify.sock")),
                                      status_path=self.status_path, monotonic=self.source.audio_time)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.recorder.run, args=(self.source, self.stop))
        self.thread.start()

    def segments(self) -> int:
        return len(read_manifest(self.root / MANIFEST))

    def _listen(self) -> None:
        while self.notify.fileno() != -1:
            try:
                self.received.append(self.notify.recv(4096).decode())
            except (socket.timeout, OSError):
                continue

    def status_lines(self) -> list[str]:
        """What the recorder told systemd since the last call."""
        lines, self.received = self.received, []
        return lines

    def keeps_listening(self) -> None:
        before = self.source.delivered
        wait_until(lambda: self.source.delivered > before + 200, "frames to keep flowing")
        assert self.thread.is_alive()

    def finish(self):
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        self.led.close()
        self.factory.reset()
        self.notify.close()


def fill(card, leave_bytes: int):
    """A ballast file that leaves about ``leave_bytes`` free (0: until the card is full)."""
    stat = os.statvfs(card)
    size = max(stat.f_bavail * stat.f_frsize - leave_bytes, 0)
    ballast = card / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        try:
            f.write(b"\0" * size)
            while leave_bytes == 0:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return ballast


def test_free_space_floor_stops_writing_keeps_listening_and_resumes(tmp_path, card, lesson, detector):
    running = RunningRecorder(tmp_path, card, lesson, detector, min_free_mb=1)
    try:
        wait_until(lambda: running.segments() >= 2, "the first segments")
        ballast = fill(card, leave_bytes=500_000)
        wait_until(lambda: running.recorder.state() is RecorderState.DISK_FULL, "disk full")
        stored = running.segments()
        running.keeps_listening()
        assert running.segments() == stored
        assert read_status(running.status_path)["state"] == "disk full"
        assert any("STATUS=disk full" in line for line in running.status_lines())
        assert running.led._pattern is LedPattern.DISK_FULL
        on_time = LedPattern.DISK_FULL.value[0]
        tolerance = pin_time_tolerance_s()
        pin = running.factory.pin(PIN)
        wait_until(lambda: len(pin.states) >= 2 and not pin.states[-1].state
                   and abs(pin.states[-1].timestamp - on_time) < tolerance, "a disk-full blink")
        ballast.unlink()
        wait_until(lambda: running.segments() > stored, "recording to resume")
        assert any(line.startswith("STATUS=listening") or line.startswith("STATUS=speech")
                   for line in running.status_lines())
    finally:
        running.finish()
    assert_card_consistent(card / "rec")


def test_the_floor_reached_while_a_segment_is_open_closes_it_keeping_its_audio(tmp_path, card, lesson, detector):
    running = RunningRecorder(tmp_path, card, lesson, detector, min_free_mb=1)
    times = {}

    def fill_mid_segment():
        # In the recorder's thread, between two frames of an open segment (someone is talking).
        if "filled" not in times and running.recorder.entries and running.recorder.writer.is_open:
            times["listed"] = running.segments()
            times["ballast"] = fill(card, leave_bytes=500_000)
            times["filled"] = running.source.audio_time()
        elif "filled" in times and "noticed" not in times and running.recorder.storage.unavailable:
            times["noticed"] = running.source.audio_time()
            times["still_open"] = running.recorder.writer.is_open

    try:
        running.source.hooks.append(fill_mid_segment)
        wait_until(lambda: "noticed" in times, "the floor to be noticed")
        running.keeps_listening()
        closed = read_manifest(running.root / MANIFEST)
        assert running.segments() == times["listed"] + 1  # the open one, closed and listed; no other
        times["ballast"].unlink()
        wait_until(lambda: running.segments() > times["listed"] + 1, "recording to resume")
    finally:
        running.finish()
    # Checked under the open segment once a second of audio, not when the segment ends.
    assert times["noticed"] - times["filled"] <= SPACE_CHECK_S + 2 * 512 / 16000
    assert not times["still_open"]
    cut = closed[-1]
    # Closed by the card, not by a pause: no probabilities, its audio up to the cut kept.
    assert cut["prob_mean"] is None and cut["samples"] > 0
    assert_card_consistent(card / "rec")


def test_resumes_within_the_readme_s_bound_once_space_comes_back(tmp_path, card, lesson, detector):
    promised = re.search(r"resumes by itself within (\d+) s\s+of space coming back", open(OPERATING).read())
    assert promised, "docs/operating.md no longer says how soon recording resumes"
    assert STORAGE_RETRY_S <= float(promised.group(1))
    running = RunningRecorder(tmp_path, card, lesson, detector, min_free_mb=1)
    times = {}

    def space_comes_back_when_full():
        # In the recorder's thread, at the first frame after it declared the card full.
        state = running.recorder.state()
        if state is RecorderState.DISK_FULL and "back" not in times:
            ballast.unlink()
            times["back"] = running.source.audio_time()
        elif state is not RecorderState.DISK_FULL and "back" in times and "resumed" not in times:
            times["resumed"] = running.source.audio_time()

    try:
        wait_until(lambda: running.segments() >= 1, "the first segment")
        ballast = fill(card, leave_bytes=500_000)
        running.source.hooks.append(space_comes_back_when_full)
        wait_until(lambda: "resumed" in times, "recording to resume", timeout=120)
    finally:
        running.finish()
    # Seen at the first frame after it happened: one window late at most.
    waited = times["resumed"] - times["back"] - 512 / 16000
    assert waited <= float(promised.group(1)), f"resumed {waited:.2f} s of audio after space came back"
    assert_card_consistent(card / "rec")


def test_write_errors_of_a_full_card_are_survived(tmp_path, card, lesson, detector):
    running = RunningRecorder(tmp_path, card, lesson, detector, min_free_mb=0)
    filled = {}

    def fill_while_recording():
        # In the recorder's thread, between two frames of an open segment: the write that
        # fails is the open segment's.
        if not filled and running.recorder.entries and running.recorder.writer.is_open:
            filled["ballast"] = fill(card, leave_bytes=0)

    try:
        running.source.hooks.append(fill_while_recording)
        wait_until(lambda: filled, "the card to fill while a segment is open")
        ballast = filled["ballast"]
        wait_until(lambda: running.recorder.state() is RecorderState.DISK_FULL, "ENOSPC to be noticed")
        running.keeps_listening()
        errors = read_status(running.status_path)["errors"]
        assert any("No space left on device" in e for e in errors)
        stored = running.segments()
        ballast.unlink()
        wait_until(lambda: running.segments() > stored + 1, "recording to resume")
    finally:
        running.finish()
    assert_card_consistent(card / "rec")


def test_read_only_card_is_survived(tmp_path, card, lesson, detector):
    running = RunningRecorder(tmp_path, card, lesson, detector, min_free_mb=0)
    try:
        wait_until(lambda: running.segments() >= 1, "the first segment")
        # A card the kernel turned read-only; remounting waits for a moment no file is open.
        wait_until(lambda: subprocess.run(["mount", "-o", "remount,ro", str(card)],
                                          capture_output=True).returncode == 0, "a read-only remount")
        wait_until(lambda: running.recorder.state() is RecorderState.DISK_FULL, "EROFS to be noticed")
        running.keeps_listening()
        assert any("Read-only file system" in e for e in read_status(running.status_path)["errors"])
        stored = running.segments()
        subprocess.run(["mount", "-o", "remount,rw", str(card)], check=True)
        wait_until(lambda: running.segments() > stored, "recording to resume")
    finally:
        running.finish()
    assert_card_consistent(card / "rec")


def test_delete_oldest_makes_room_and_keeps_recording(tmp_path, card, lesson, detector):
    running = RunningRecorder(tmp_path, card, lesson, detector, min_free_mb=1, when_full="delete_oldest")
    try:
        wait_until(lambda: running.segments() >= 6, "six segments")
        first = read_manifest(running.root / MANIFEST)[0]
        fill(card, leave_bytes=900_000)
        wait_until(lambda: not (running.root / first["file"]).exists(), "the oldest to be deleted")
        newest = read_manifest(running.root / MANIFEST)[-1]["seq"]
        wait_until(lambda: read_manifest(running.root / MANIFEST)[-1]["seq"] > newest, "new segments")
        assert running.recorder.state() is not RecorderState.DISK_FULL
    finally:
        running.finish()
    entries = assert_card_consistent(card / "rec")
    assert first["file"] not in {e["file"] for e in entries}


def test_read_only_card_at_start_is_reported_not_a_crash(tmp_path, card, lesson, detector, caplog):
    from edge.recorder import make_writer
    from edge.storage import SegmentStart

    root = card / "rec"
    writer = make_writer(settings_from_dict({}), root, detector)
    writer.open(SegmentStart("mic:x", 0.0, "2026-11-24T09:00:00+00:00", 1.0, "b", False))
    writer.append(lesson[:16000])
    writer._file.close()  # the power went here: the kernel has what was written
    subprocess.run(["mount", "-o", "remount,ro", str(card)], check=True)
    try:
        writer = make_writer(settings_from_dict({}), root, detector)
        assert "cannot finish interrupted segments now (Read-only file system)" in caplog.text
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(card)], check=True)
    assert len(writer.recover()) == 1  # what the recorder does once the card takes writes
    assert_card_consistent(root)


FS_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32): the filesystem fails every operation with EIO
SHUTDOWN_NOLOGFLUSH = 2  # as a card that dies: what the journal had not committed is gone


def test_io_errors_are_survived_and_recording_resumes_on_a_working_card(tmp_path, ext4_card, lesson, detector):
    loop, card = ext4_card
    running = RunningRecorder(tmp_path, card, lesson, detector, min_free_mb=0)
    failed = []

    def fail_while_recording():
        # In the recorder's thread, between two frames of an open segment.
        if not failed and len(running.recorder.entries) >= 2 and running.recorder.writer.is_open:
            fd = os.open(card, os.O_RDONLY)
            try:
                fcntl.ioctl(fd, FS_IOC_SHUTDOWN, struct.pack("I", SHUTDOWN_NOLOGFLUSH))
            finally:
                os.close(fd)
            failed.append(True)

    try:
        running.source.hooks.append(fail_while_recording)
        wait_until(lambda: failed, "the card to fail while a segment is open")
        wait_until(lambda: running.recorder.state() is RecorderState.DISK_FULL, "EIO to be noticed")
        running.keeps_listening()
        assert any("Input/output error" in e for e in read_status(running.status_path)["errors"])
        assert running.led._pattern is LedPattern.DISK_FULL
        # The card is taken out and put back: the same folder, a working filesystem again.
        subprocess.run(["umount", "-l", str(card)], check=True)
        subprocess.run(["mount", loop, str(card)], check=True)
        stored = running.segments()
        wait_until(lambda: running.segments() > stored, "recording to resume", timeout=120)
    finally:
        running.finish()
    assert_card_consistent(card / "rec")
