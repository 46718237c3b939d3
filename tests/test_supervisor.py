"""The supervisors alone, on a fake clock: what they do, when, and what they report."""

from __future__ import annotations

import logging
import os
import re
import socket
from dataclasses import asdict
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from edge.audio import CaptureError
from edge.config import AudioSettings
from edge.status import RecorderStatus, publish_status, read_status
from edge.supervisor import (READ_TIMEOUT_S, STATUS_EVERY_S, CaptureSupervisor, StatusPublisher,
                             StorageSupervisor, Watchdog, publish_start_failure)

FRAME = np.zeros(512, np.int16)


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.start = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return self.start + timedelta(seconds=self.now)

    def wait(self, seconds: float) -> bool:
        self.now += seconds
        return False


class FakeNotifier:
    def __init__(self, clock):
        self.clock, self.pings, self.statuses = clock, [], []

    def watchdog(self):
        self.pings.append(self.clock.now)

    def status(self, text):
        self.statuses.append(text)


class ScriptedMicrophone:
    """Reads follow ``reads`` (a frame, None for silence, an exception), then frames;
    the first ``failing_opens`` opens fail. A silent read takes its whole timeout."""

    name, overflows, dropped_frames = "mic:fake", 0, 0

    def __init__(self, clock, reads, failing_opens=0):
        self.clock, self.reads, self.failing_opens = clock, list(reads), failing_opens
        self.opened_at, self.closes = [], 0

    def open(self):
        self.opened_at.append(self.clock.now)
        if len(self.opened_at) <= self.failing_opens:
            raise CaptureError("no such device")

    def close(self):
        self.closes += 1

    def read(self, timeout):
        step = self.reads.pop(0) if self.reads else FRAME
        if isinstance(step, Exception):
            raise step
        if step is None:
            self.clock.now += timeout
        return step


class Listener:
    def __init__(self):
        self.lost, self.back, self.waits = [], [], 0

    def microphone_lost(self, reason):
        self.lost.append(reason)

    def microphone_back(self, gap):
        self.back.append(gap)

    def waiting(self):
        self.waits += 1


def supervisor(clock, source, watchdog_every=None, **settings):
    audio = AudioSettings(**{"stall_timeout_s": 2.0, "reopen_backoff_s": 1.0, "reopen_backoff_max_s": 4.0,
                             **settings})
    notifier, listener = FakeNotifier(clock), Listener()
    watchdog = Watchdog(notifier, watchdog_every, clock.monotonic)
    return CaptureSupervisor(audio, source, listener, watchdog, clock, clock.monotonic, clock.wait), listener, notifier


def test_a_lost_microphone_is_reopened_with_doubling_waits_up_to_the_maximum():
    clock = FakeClock()
    source = ScriptedMicrophone(clock, [FRAME, CaptureError("Unanticipated host error")], failing_opens=4)
    capture, listener, notifier = supervisor(clock, source, watchdog_every=1.5)
    assert capture.read() is FRAME
    assert capture.read() is None
    assert listener.lost == ["Unanticipated host error"] and capture.missing
    assert source.closes == 1
    # Waits of 1, 2, 4, 4 s between failed attempts, then one more of 4 s.
    assert source.opened_at == [1.0, 3.0, 7.0, 11.0, 15.0]
    assert listener.back == []
    assert capture.read() is FRAME
    assert not capture.missing
    assert listener.back == [{"start": "2026-11-24T09:00:00.000+00:00", "end": "2026-11-24T09:00:15.000+00:00"}]
    # systemd kills a service whose pings are WatchdogSec (twice the interval) apart.
    assert max(b - a for a, b in zip(notifier.pings, notifier.pings[1:])) < 2 * 1.5
    assert listener.waits > 0


def test_an_unplugged_microphone_logs_its_first_attempt_then_a_summary_every_ten_minutes(caplog):
    clock = FakeClock()
    # Waits of 1, 2, 4, 8, 16 s, then 30 s: the 124th failed attempt comes an hour in.
    source = ScriptedMicrophone(clock, [FRAME, CaptureError("no such device")], failing_opens=124)
    capture, listener, _ = supervisor(clock, source, reopen_backoff_max_s=30.0)
    lines = []  # (time on the fake clock, message)
    handler = logging.Handler()
    handler.emit = lambda record: lines.append((clock.now, record.getMessage()))
    caplog.set_level(logging.INFO, logger="edge.supervisor")
    logging.getLogger("edge.supervisor").addHandler(handler)
    try:
        assert capture.read() is FRAME
        assert capture.read() is None  # lost; returns once the microphone opened again
        assert capture.read() is FRAME
    finally:
        logging.getLogger("edge.supervisor").removeHandler(handler)
    assert source.opened_at[-2] == 3601.0 and len(source.opened_at) == 125
    missing = [(at, text) for at, text in lines if "still missing" in text]
    assert [at for at, _ in missing] == [1.0, 601.0, 1201.0, 1801.0, 2401.0, 3001.0, 3601.0]
    assert missing[0][1] == ("microphone still missing after 1.0 s (1 reopen attempts since the last line): "
                             "no such device")
    assert missing[1][1].startswith("microphone still missing after 10 min (")
    # Every failed attempt is counted in exactly one line.
    assert sum(int(re.search(r"\((\d+) reopen", text).group(1)) for _, text in missing) == 124
    assert lines[-1][1] == "microphone back after 61 min (125 reopen attempts)"
    assert len(lines) == len(missing) + 1


def test_a_microphone_that_opens_but_stays_silent_is_one_outage(caplog):
    caplog.set_level(logging.INFO, logger="edge.supervisor")
    clock = FakeClock()
    silence = [None] * 40
    source = ScriptedMicrophone(clock, [FRAME] + silence)
    capture, listener, _ = supervisor(clock, source)
    frames = [capture.read() for _ in range(len(silence) + 2)]
    assert frames[0] is FRAME and frames[-1] is FRAME
    assert listener.lost == ["no audio for 2 s"]
    assert len(listener.back) == 1
    assert caplog.messages[0] == ("microphone still missing after 3.0 s (1 reopen attempts since the last line): "
                                  "it opened but gave no audio (no audio for 2 s)")
    # Each reopen found no audio within the stall timeout: the waits still grow.
    waits = [b - a for a, b in zip(source.opened_at, source.opened_at[1:])]
    assert waits[:3] == pytest.approx([2.0 + 2.0, 2.0 + 4.0, 2.0 + 4.0], abs=READ_TIMEOUT_S)


def test_a_stall_is_noticed_after_the_stall_timeout_and_not_before():
    clock = FakeClock()
    source = ScriptedMicrophone(clock, [FRAME] + [None] * 7 + [FRAME] + [None] * 8)
    capture, listener, _ = supervisor(clock, source, stall_timeout_s=2.0)
    for _ in range(8):  # 7 silent reads of 0.25 s: 1.75 s
        capture.read()
    assert listener.lost == []
    assert capture.read() is FRAME
    stalled_from = clock.now
    for _ in range(7):
        capture.read()
    assert listener.lost == []
    capture.read()  # the read that ends 2.0 s without audio
    assert listener.lost == ["no audio for 2 s"] and capture.missing
    # Lost at 2.0 s without audio, reopened reopen_backoff_s (1 s) later.
    assert source.opened_at == [pytest.approx(stalled_from + 2.0 + 1.0)]
    assert source.closes == 1


def test_each_outage_starts_again_from_the_shortest_wait():
    clock = FakeClock()
    failure = CaptureError("Unanticipated host error")
    # The first outage reaches the longest wait; audio comes back; then the second outage.
    source = ScriptedMicrophone(clock, [FRAME, failure, FRAME, FRAME, failure, FRAME], failing_opens=4)
    capture, listener, _ = supervisor(clock, source)
    for _ in range(3):
        capture.read()
    assert source.opened_at == [1.0, 3.0, 7.0, 11.0, 15.0]  # waits 1, 2, 4, 4, 4
    assert listener.back and not capture.missing
    capture.read()
    second_lost = clock.now
    capture.read()
    assert len(listener.lost) == 2
    # The second outage is reopened after reopen_backoff_s, not after the first one's 4 s.
    assert source.opened_at[5] - second_lost == pytest.approx(1.0)
    assert capture.read() is FRAME and len(listener.back) == 2


class FakeGuard:
    min_free_mb = 200

    def __init__(self):
        self.room = True

    def has_room(self):
        return self.room

    def free_mb(self):
        return 500.0 if self.room else 100.0


class FakeWriter:
    def __init__(self):
        self.is_open, self.recover_error, self.recovered = True, None, 0

    def recover(self):
        if self.recover_error:
            raise self.recover_error
        self.recovered += 1
        return []


class StorageListener:
    def __init__(self):
        self.events = []

    def storage_lost(self, reason):
        self.events.append(("lost", reason))

    def storage_back(self):
        self.events.append(("back",))


def test_storage_stops_below_the_floor_and_retries_every_retry_interval():
    clock, guard, writer, listener = FakeClock(), FakeGuard(), FakeWriter(), StorageListener()
    storage = StorageSupervisor(guard, writer, listener, clock.monotonic, retry_s=10.0)
    storage.check()
    assert listener.events == []
    guard.room = False
    clock.now += 1.0
    storage.check()
    assert listener.events == [("lost", "less than 200 MB free on the card")]
    assert not storage.room_left()
    storage.lost("No space left on device")  # the same outage: reported once
    assert len(listener.events) == 1
    guard.room = True
    writer.recover_error = OSError(30, "Read-only file system")
    clock.now += 9.9
    storage.check()
    assert storage.unavailable and writer.recovered == 0
    clock.now += 0.1
    storage.check()  # tried, and the card still refuses writes
    assert storage.unavailable
    writer.recover_error = None
    clock.now += 5.0
    storage.check()
    assert storage.unavailable  # not before the next retry
    clock.now += 5.0
    storage.check()
    assert not storage.unavailable and writer.recovered == 1
    assert listener.events[-1] == ("back",)


def test_status_is_published_on_change_and_every_few_seconds_otherwise(tmp_path):
    clock = FakeClock()
    notifier = FakeNotifier(clock)
    path = tmp_path / "status.json"
    publisher = StatusPublisher(RecorderStatus(pid=42), path, notifier, clock, clock.monotonic, lambda: 12345.0)
    publisher.publish("listening", None, force=True)
    assert read_status(path)["state"] == "listening"
    assert notifier.statuses == ["listening · 0 segments today · 12.3 GB free"]
    clock.now += 1.0
    publisher.status.segments_today = 3
    publisher.publish("listening", None)
    assert read_status(path)["segments_today"] == 0  # not yet: less than STATUS_EVERY_S
    clock.now += STATUS_EVERY_S
    publisher.publish("listening", None)
    status = read_status(path)
    assert status["segments_today"] == 3 and status["since"] == "2026-11-24T09:00:00+00:00"
    publisher.publish("mic missing", None, force=True)
    assert read_status(path)["since"] == "2026-11-24T09:00:06+00:00"
    for n in range(7):
        publisher.warn(f"problem {n}")
    assert [e.split(" ", 1)[1] for e in publisher.status.errors] == [f"problem {n}" for n in range(2, 7)]


def test_a_start_that_failed_is_the_last_word_of_the_status_and_the_card_s_facts_stay(tmp_path, caplog):
    clock = FakeClock()
    path = tmp_path / "status.json"
    earlier = RecorderStatus(pid=1, state="listening", since="2026-11-23T08:00:00+00:00",
                             updated="2026-11-23T15:00:00+00:00", last_speech="2026-11-23T14:59:00+00:00",
                             oldest_segment="20261101/000001_080000_mic.wav", errors=["t microphone lost"],
                             free_mb=812.5)
    publish_status(path, earlier)
    publish_start_failure(path, "edge.yaml: not valid YAML at line 2", clock)
    status = read_status(path)
    assert (status["state"], status["pid"]) == ("stopped", os.getpid())
    assert status["since"] == status["updated"] == "2026-11-24T09:00:00+00:00"
    assert status["errors"] == ["t microphone lost", "2026-11-24T09:00:00+00:00 edge.yaml: not valid YAML at line 2"]
    assert (status["last_speech"], status["oldest_segment"]) == (earlier.last_speech, earlier.oldest_segment)
    assert status["free_mb"] is None  # the recorder did not look
    assert caplog.records == []  # the journal has the line from `edge` itself

    # systemd tries again 30 s later, from a new process: not running since the first failure.
    clock.now += 30
    publish_status(path, RecorderStatus(**{**read_status(path), "pid": 2}))
    publish_start_failure(path, "edge.yaml: not valid YAML at line 2", clock)
    status = read_status(path)
    assert status["since"] == "2026-11-24T09:00:00+00:00" and status["updated"] == "2026-11-24T09:00:30+00:00"
    assert len(status["errors"]) == 3


def test_a_start_failure_makes_the_runtime_folder_and_keeps_what_this_process_published(tmp_path, monkeypatch):
    clock = FakeClock()
    path = tmp_path / "run" / "edge-recorder" / "status.json"  # as under $XDG_RUNTIME_DIR
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(str(tmp_path / "notify.sock"))
    systemd.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    umask = os.umask(0o022)
    try:
        publish_start_failure(path, "no model", clock)
    finally:
        os.umask(umask)
        with pytest.raises(BlockingIOError):
            systemd.recv(4096)  # systemd's own status line shows the restart
        systemd.close()
    assert read_status(path)["errors"] == ["2026-11-24T09:00:00+00:00 no model"]
    assert path.parent.stat().st_mode & 0o777 == 0o750  # the service's group, like the file
    # This process ran as the recorder and published how it stopped: that stays.
    ran = RecorderStatus(pid=os.getpid(), state="stopped", since="s", updated="2026-11-24T10:00:00+00:00",
                         errors=["stopped by an error: RuntimeError()"])
    publish_status(path, ran)
    publish_start_failure(path, "stopped by an error: RuntimeError()", clock)
    assert read_status(path) == asdict(ran)


def test_a_start_failure_where_no_status_can_be_written_says_so_and_goes_on(tmp_path, caplog):
    (tmp_path / "run").write_text("a file where the runtime folder should be")
    publish_start_failure(tmp_path / "run" / "status.json", "no model", FakeClock())
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"{tmp_path / 'run'}: cannot create the folder for the status (File exists)"]


def test_a_warning_goes_to_the_journal_and_to_edge_status(tmp_path, caplog):
    clock = FakeClock()
    publisher = StatusPublisher(RecorderStatus(pid=42), None, FakeNotifier(clock), clock, clock.monotonic, lambda: 1.0)
    publisher.warn("not storing audio: less than 200 MB free on the card")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "not storing audio: less than 200 MB free on the card")]
    assert publisher.status.errors == ["2026-11-24T09:00:00+00:00 not storing audio: less than 200 MB free on the card"]


def test_the_first_segment_on_an_empty_card_is_its_oldest_until_retention_looks_again():
    clock = FakeClock()
    publisher = StatusPublisher(RecorderStatus(pid=42), None, FakeNotifier(clock), clock, clock.monotonic, lambda: 1.0)
    publisher.segment_stored({"file": "20261124/000001_090000_mic.wav", "end": "2026-11-24T09:00:03+00:00"})
    publisher.segment_stored({"file": "20261124/000002_090100_mic.wav", "end": "2026-11-24T09:01:03+00:00"})
    status = publisher.status
    assert (status.oldest_segment, status.oldest_segment_days) == ("20261124/000001_090000_mic.wav", 0.0)
    assert (status.segments_today, status.last_speech) == (2, "2026-11-24T09:01:03+00:00")


def test_status_is_republished_every_few_seconds_whatever_the_monotonic_clock_reads(tmp_path):
    clock = FakeClock()
    clock.now = 86400.0  # CLOCK_MONOTONIC a day after boot
    path = tmp_path / "status.json"
    publisher = StatusPublisher(RecorderStatus(pid=42), path, FakeNotifier(clock), clock, clock.monotonic, lambda: 1.0)
    publisher.publish("listening", None, force=True)
    publisher.status.segments_today = 1
    clock.now += STATUS_EVERY_S - 1
    publisher.publish("listening", None)
    assert read_status(path)["segments_today"] == 0
    clock.now += 1
    publisher.publish("listening", None)
    assert read_status(path)["segments_today"] == 1


def test_an_outage_of_two_minutes_is_said_in_minutes(caplog):
    clock = FakeClock()
    source = ScriptedMicrophone(clock, [FRAME, CaptureError("no such device")], failing_opens=119)
    capture, listener, _ = supervisor(clock, source, reopen_backoff_s=1.0, reopen_backoff_max_s=1.0)
    capture.read()
    capture.read()  # lost at 0 s; reopened at 1, 2, ... 120 s
    assert capture.read() is FRAME
    assert caplog.messages[-1] == "microphone back after 2 min (120 reopen attempts)"


class Outages(ScriptedMicrophone):
    """Opens fail or succeed as ``opens`` says (True: opens)."""

    def __init__(self, clock, reads, opens):
        super().__init__(clock, reads)
        self.opens = list(opens)

    def open(self):
        self.opened_at.append(self.clock.now)
        if not self.opens.pop(0):
            raise CaptureError("no such device")


def test_every_outage_logs_its_first_failed_reopen_and_a_silent_device_says_so(caplog):
    clock = FakeClock()
    failure = CaptureError("Unanticipated host error")
    # Outage 1: one failed reopen; outage 2 (seconds later): one failed reopen, then a
    # device that opens but gives no audio for the stall timeout.
    source = Outages(clock, [FRAME, failure, FRAME, failure] + [None] * 8 + [FRAME], [False, True, False, True, True])
    capture, listener, _ = supervisor(clock, source)
    caplog.set_level(logging.INFO, logger="edge.supervisor")
    frames = [capture.read() for _ in range(14)]
    assert frames[-1] is FRAME and len(listener.lost) == 2 and len(listener.back) == 2
    missing = [m for m in caplog.messages if "still missing" in m]
    assert missing == ["microphone still missing after 1.0 s (1 reopen attempts since the last line): no such device",
                       "microphone still missing after 1.0 s (1 reopen attempts since the last line): no such device"]
    assert clock.now < 600


def test_a_stop_while_waiting_to_reopen_ends_the_wait_without_another_attempt():
    clock = FakeClock()
    source = ScriptedMicrophone(clock, [FRAME, CaptureError("no such device")], failing_opens=10)
    audio = AudioSettings(stall_timeout_s=2.0, reopen_backoff_s=4.0, reopen_backoff_max_s=4.0)

    def wait(seconds):  # the recorder is stopped half a second into the first wait
        clock.now += min(seconds, 0.5)
        return True

    capture = CaptureSupervisor(audio, source, Listener(), Watchdog(FakeNotifier(clock), None, clock.monotonic),
                                clock, clock.monotonic, wait)
    capture.read()
    assert capture.read() is None
    assert source.opened_at == [] and clock.now == 0.5


def test_free_space_is_not_looked_at_while_no_segment_is_open():
    clock, guard, writer, listener = FakeClock(), FakeGuard(), FakeWriter(), StorageListener()
    storage = StorageSupervisor(guard, writer, listener, clock.monotonic, retry_s=10.0)
    writer.is_open, guard.room = False, False
    clock.now += 5.0
    storage.check()
    assert listener.events == [] and not storage.unavailable  # the next segment's open will tell
    writer.is_open = True
    storage.check()
    assert listener.events == [("lost", "less than 200 MB free on the card")]


def test_the_journal_says_why_storing_waits_and_when_it_resumes(caplog):
    clock, guard, writer, listener = FakeClock(), FakeGuard(), FakeWriter(), StorageListener()
    storage = StorageSupervisor(guard, writer, listener, clock.monotonic, retry_s=10.0)
    caplog.set_level(logging.DEBUG, logger="edge.supervisor")
    storage.lost("Read-only file system")
    writer.recover_error = OSError(30, "Read-only file system")
    clock.now += 10.0
    storage.check()
    writer.recover_error = None
    clock.now += 10.0
    storage.check()
    assert caplog.messages == ["card still unavailable: [Errno 30] Read-only file system",
                               "storing audio again (500 MB free)"]


def test_systemd_is_told_the_status_line_only_when_it_changes_and_free_space_to_a_tenth(tmp_path, caplog):
    clock = FakeClock()
    notifier = FakeNotifier(clock)
    path = tmp_path / "status.json"
    publisher = StatusPublisher(RecorderStatus(pid=42), path, notifier, clock, clock.monotonic, lambda: 12345.67)
    for _ in range(3):
        publisher.publish("listening", None, force=True)
    assert notifier.statuses == ["listening · 0 segments today · 12.3 GB free"]
    assert read_status(path)["free_mb"] == 12345.7


def test_a_status_that_cannot_be_written_is_a_debug_line_not_a_crash(tmp_path, caplog):
    clock = FakeClock()
    path = tmp_path / "gone" / "status.json"
    publisher = StatusPublisher(RecorderStatus(pid=42), path, FakeNotifier(clock), clock, clock.monotonic, lambda: 1.0)
    caplog.set_level(logging.DEBUG, logger="edge.supervisor")
    publisher.publish("listening", None, force=True)
    assert caplog.messages == [f"cannot publish status: [Errno 2] No such file or directory: '{path}.tmp'"]


def test_a_microphone_silent_from_the_start_is_lost_after_the_stall_timeout():
    clock = FakeClock()
    source = ScriptedMicrophone(clock, [None] * 9)
    capture, listener, _ = supervisor(clock, source, stall_timeout_s=2.0)
    for _ in range(8):  # the first read starts the count; 7 more silent reads of 0.25 s
        assert capture.read() is None
    assert listener.lost == []
    capture.read()  # 2.0 s after the first read without audio
    assert listener.lost == ["no audio for 2 s"]
