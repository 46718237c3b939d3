"""The privacy button on gpiozero's MockFactory pins and `edge pause|resume|forget` over the
daemon's socket, against a recorder listening to the lesson clip on a loop: press, hold and
release with real durations, then look at the card, the LED and the status.

The button is a gpiozero Button on a pin: a test on a real line (the virtual Pi's gpio-sim)
drives the same PrivacyButton by pulling that line low (pressed) and letting it go high."""

from __future__ import annotations

import os
import stat
import threading
import time
from datetime import datetime

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from conftest import NotifySocket, PacedSource, make_recorder, wait_until
from edge.cli import main
from edge.clock import SystemClock
from edge.config import settings_from_dict
from edge.controls import ControlQueue, ControlServer, make_button
from edge.export_state import ExportStatePublisher
from edge.indicator import LedIndicator, LedPattern
from edge.notify import ServiceNotifier
from edge.pausing import FORGOTTEN_SHOWN_S
from edge.status import RecorderState
from edge.storage import MANIFEST, SegmentEnd, SegmentStart, iter_segments, read_deletions, read_manifest

LED_PIN, BUTTON_PIN = 17, 27
HOLD_S = 1.0
SPEED = 6  # the lesson's audio at six times the pace of a microphone
RATE, WINDOW = 16000, 512


@pytest.fixture
def factory():
    factory = MockFactory()
    yield factory
    factory.reset()


class Classroom:
    """A recorder with its LED and button on mock pins, listening in its own thread."""

    def __init__(self, factory, lesson, detector, tmp_path, **kwargs):
        self.settings = settings_from_dict({
            "led": {"pin": LED_PIN, "heartbeat": False},
            "controls": {"button_pin": BUTTON_PIN, "forget_hold_s": HOLD_S, "pause_minutes": 15}})
        self.requests = ControlQueue()
        self.button = make_button(self.settings.controls, self.requests, pin_factory=factory)
        self.led = LedIndicator(LED_PIN, heartbeat=False, pin_factory=factory)
        self.root = tmp_path / "rec"
        self.recorder = make_recorder(self.settings, detector, self.root, indicator=self.led,
                                      controls=self.requests, **kwargs)
        self.line = factory.pin(BUTTON_PIN)
        self.source = PacedSource(lesson, speed=SPEED, loop=True)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.recorder.run, args=(self.source, self.stop))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)
        self.button.close()
        self.led.close()

    def heard_s(self) -> float:
        """Audio the recorder has been given since it started, in seconds."""
        return self.source.delivered * WINDOW / RATE

    def wait_for_speech(self) -> None:
        wait_until(lambda: self.recorder.state() is RecorderState.SPEECH, "someone speaking")

    def wait_for_audio(self, seconds: float) -> None:
        until = self.heard_s() + seconds
        wait_until(lambda: self.heard_s() >= until, f"{seconds} s more audio", timeout=60)

    def open_files(self) -> list:
        return sorted(p.name for p in self.root.glob("*/*.part*"))


def test_a_short_press_ends_the_open_segment_at_the_press_and_nothing_is_recorded_until_the_next(
        factory, lesson, detector, tmp_path):
    with Classroom(factory, lesson, detector, tmp_path) as room:
        room.wait_for_speech()
        stored = len(room.recorder.entries)
        room.line.drive_low()  # pressed
        pressed_s = room.heard_s()
        wait_until(lambda: room.recorder.state() is RecorderState.PAUSED, "the pause")
        assert len(room.recorder.entries) == stored  # finished at the release, not before
        time.sleep(0.3)  # the press lasts 0.3 s
        room.line.drive_high()
        # The segment ends at the press, with its audio up to the press.
        wait_until(lambda: len(room.recorder.entries) == stored + 1, "the segment finished")
        cut = room.recorder.entries[-1]
        assert pressed_s - 0.1 <= cut["end_s"] <= pressed_s + 0.1, (cut["end_s"], pressed_s)
        assert room.led._pattern is LedPattern.PAUSED
        assert room.recorder.status.summary().startswith("paused until ")
        # Two passes of the lesson (six sentences) go by: nothing is stored, nothing is open.
        room.wait_for_audio(2 * len(lesson) / RATE)
        assert len(room.recorder.entries) == stored + 1
        assert room.open_files() == []
        assert room.recorder.state() is RecorderState.PAUSED
        # The next short press records again.
        room.line.drive_low()
        time.sleep(0.3)
        room.line.drive_high()
        wait_until(lambda: room.recorder.state() is not RecorderState.PAUSED, "recording again")
        resumed = SystemClock().boottime()
        wait_until(lambda: len(room.recorder.entries) > stored + 1, "a segment after the pause", timeout=60)
    # It holds speech heard after the pause (its pre-roll is less than a second of audio).
    assert room.recorder.entries[-1]["monotonic_s"] >= resumed - 1.0


def test_a_long_press_forgets_the_last_minutes_and_pauses(factory, lesson, detector, tmp_path):
    clock = SystemClock()
    room = Classroom(factory, lesson, detector, tmp_path)
    writer = room.recorder.writer
    # Recorded ten minutes ago in this boot: outside the five-minute window.
    ten_minutes_ago = SegmentStart(source="mic", start_s=0.0, start=clock.wall().isoformat(),
                                   monotonic_s=clock.boottime() - 600, boot_id=clock.boot_id(),
                                   clock_synced=True)
    old = writer.open(ten_minutes_ago).relative_to(room.root).as_posix()
    writer.append(np.full(RATE, 1000, np.int16))
    writer.close(SegmentEnd(None, None, 0, 0))
    with room:
        wait_until(lambda: room.recorder.entries, "a stored segment", timeout=60)
        room.wait_for_speech()
        room.line.drive_low()
        pressed = time.monotonic()
        wait_until(lambda: room.recorder.state() is RecorderState.PAUSED, "the pause at the press")
        recorded = [entry["file"] for entry in room.recorder.entries]
        open_part = room.open_files()  # the segment open at the press waits for the release or the hold
        assert open_part, "no segment open at the press"
        wait_until(lambda: room.led._pattern is LedPattern.FORGOTTEN, "the forget's confirmation")
        confirmed = time.monotonic()
        room.line.drive_high()
        assert confirmed - pressed >= HOLD_S
        # Everything recorded in the window is gone, the open segment never became one.
        assert [e["file"] for e in iter_segments(room.root)] == [old]
        assert room.open_files() == []
        tombstones = {t["deleted"]: t["reason"] for t in read_deletions(room.root / MANIFEST)}
        open_name = f"{open_part[0].split('.wav')[0]}.wav"
        assert set(tombstones) == set(recorded) | {f"{old.split('/')[0]}/{open_name}"}
        assert all(reason.startswith("forgotten by button at ") for reason in tombstones.values())
        never_listed = f"{old.split('/')[0]}/{open_name}"
        assert never_listed not in {e["file"] for e in read_manifest(room.root / MANIFEST)}
        # The release after the hold does not resume; the LED goes from the confirmation to the pause.
        wait_until(lambda: room.led._pattern is LedPattern.PAUSED, "the pause pattern")
        assert time.monotonic() - confirmed >= FORGOTTEN_SHOWN_S - 0.1
        room.wait_for_audio(len(lesson) / RATE)
        assert room.recorder.state() is RecorderState.PAUSED
        assert [e["file"] for e in iter_segments(room.root)] == [old]


def test_the_commands_pause_resume_and_forget_the_running_recorder(factory, lesson, detector, tmp_path, capsys):
    notify = NotifySocket(tmp_path / "notify.sock")
    sock = tmp_path / "run" / "control.sock"
    sock.parent.mkdir()
    config = tmp_path / "edge.yaml"
    config.write_text(f"service: {{control_socket: {sock}, status_file: {tmp_path / 'status.json'}}}\n"
                      f"led: {{pin: null}}\n")
    export_state = tmp_path / "export.json"
    room = Classroom(factory, lesson, detector, tmp_path, notifier=ServiceNotifier(notify.path),
                     status_path=tmp_path / "status.json", export_state=export_state)
    server = ControlServer(sock, room.requests)
    assert server.start()
    try:
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
        with room:
            room.wait_for_speech()
            assert main(["pause", "--config", str(config)]) == 0
            line = capsys.readouterr().out.strip()
            assert line.startswith("paused until ")
            until = datetime.fromisoformat(room.recorder.status.paused_until)
            assert line == f"paused until {until:%H:%M}"
            assert 14.9 * 60 <= (until - SystemClock().wall()).total_seconds() <= 15 * 60
            assert notify.count(f"STATUS={line} ·".encode(), os.getpid()) == 1
            main(["status", "--config", str(config)])
            assert f"state:          {line} since " in capsys.readouterr().out
            stored = len(room.recorder.entries)
            room.wait_for_audio(len(lesson) / RATE)
            assert len(room.recorder.entries) == stored and room.open_files() == []
            assert main(["resume", "--config", str(config)]) == 0
            assert capsys.readouterr().out == "recording again\n"
            wait_until(lambda: len(room.recorder.entries) > stored, "a segment after resuming", timeout=60)
            # A pause of a few seconds ends by itself.
            assert main(["pause", "0.05", "--config", str(config)]) == 0
            wait_until(lambda: room.recorder.state() is not RecorderState.PAUSED, "the end of a 3 s pause")
            room.wait_for_speech()
            # A USB export now may have copied every stored segment, not the one still open.
            ExportStatePublisher(export_state).publish("done", 1, 1)
            assert main(["forget", "5", "--config", str(config)]) == 0
            answer = capsys.readouterr().out
            stored = len(room.recorder.entries)
            assert (f"forgot {stored + 1} segments of the last 5 minutes ({stored} of them copied elsewhere "
                    "before: see the log); paused until") in answer
            assert list(iter_segments(room.root)) == [] and room.open_files() == []
            assert room.recorder.status.segments_today == 0
    finally:
        server.close()
        notify.close()
    assert not sock.exists()
    # Closed means its thread ended too: a stop of the service waits for it.
    assert "edge-controls" not in {thread.name for thread in threading.enumerate()}


def test_a_pause_outlives_a_restart_of_the_daemon(factory, lesson, detector, tmp_path):
    from edge.controls import ControlRequest

    pause_file = tmp_path / "run" / "paused.json"
    pause_file.parent.mkdir()
    with Classroom(factory, lesson, detector, tmp_path, pause_file=pause_file) as room:
        asked = room.requests.put(ControlRequest("pause", 10))
        assert asked.answered.wait(20) and asked.answer["ok"], asked.answer
    factory.reset()  # the pins of the daemon that went (a crash, the watchdog)
    with Classroom(factory, lesson, detector, tmp_path, pause_file=pause_file) as room:
        wait_until(lambda: room.source.delivered > 0, "the restarted recorder listening")
        assert room.recorder.state() is RecorderState.PAUSED
        until = datetime.fromisoformat(room.recorder.status.paused_until)
        assert asked.answer["message"] == f"paused until {until:%H:%M}"  # the same end as before
        room.wait_for_audio(len(lesson) / RATE)
        assert not room.recorder.entries and room.open_files() == []
        resumed = room.requests.put(ControlRequest("resume"))
        assert resumed.answered.wait(20) and resumed.answer["message"] == "recording again"
    factory.reset()
    with Classroom(factory, lesson, detector, tmp_path, pause_file=pause_file) as room:
        room.wait_for_speech()  # not paused: the resume ended the pause for good


def test_a_command_without_a_running_recorder_is_one_line(tmp_path, capsys):
    config = tmp_path / "edge.yaml"
    config.write_text(f"service: {{control_socket: {tmp_path / 'control.sock'}}}\n")
    assert main(["forget", "5", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err == (f"edge: the recorder is not running (nothing answers on {tmp_path / 'control.sock'}); "
                   "start it: sudo systemctl start edge-recorder\n")


def test_no_button_pin_means_no_button():
    assert make_button(settings_from_dict({}).controls, ControlQueue()) is None
