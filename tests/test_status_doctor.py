"""`edge status` reads what a running recorder published; `edge doctor` checks the machine."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta

import pytest

from conftest import LESSON_WAV, Daemon, PacedSource, StopAfter, make_recorder, wait_until
from edge.audio import CaptureError
from edge.cli import main
from edge.config import load_config
from edge.status import RecorderStatus, publish_status, read_status


def write_config(tmp_path, device="testmic", recordings=None, min_free_mb=200, pin="null"):
    config = tmp_path / "edge.yaml"
    config.write_text(f"audio: {{device: {device}, buffer_s: 120}}\n"
                      f"storage: {{recordings_dir: {recordings or tmp_path / 'rec'}, min_free_mb: {min_free_mb}}}\n"
                      f"led: {{pin: {pin}}}\nservice: {{status_file: {tmp_path / 'status.json'}}}\n")
    return config


def test_status_counts_the_segments_of_the_day_across_restarts(tmp_path, lesson, detector, capsys):
    config = write_config(tmp_path)
    settings = load_config(config)
    recorder = make_recorder(settings, detector, tmp_path / "rec", status_path=tmp_path / "status.json")
    stop = threading.Event()
    recorder.run(StopAfter(PacedSource(lesson, speed=1000, loop=True), 2 * len(lesson) // 512, stop), stop)
    capsys.readouterr()

    assert main(["status", "--config", str(config)]) == 1  # it has stopped
    out = capsys.readouterr().out
    assert "state:          stopped since" in out
    assert f"segments today: {len(recorder.entries)}" in out and len(recorder.entries) == 6
    assert "recent problem: none" in out

    # A restart the same day goes on counting from what the manifest holds.
    restarted = make_recorder(settings, detector, tmp_path / "rec")
    assert restarted.status.segments_today == 6


def status_of(config, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["status", "--config", str(config)])
    return code, capsys.readouterr().out


def test_status_knows_whether_the_daemon_runs(alsa, lesson, tmp_path, capsys):
    alsa.add("testmic", lesson)  # the file plugin repeats its last block after the end: endless
    config = write_config(tmp_path)
    status_path = tmp_path / "status.json"

    def published(pid, state):
        status = read_status(status_path) or {}
        return status.get("pid") == pid and status.get("state") == state

    daemon = Daemon(tmp_path, config, "first")
    try:
        wait_until(lambda: published(daemon.process.pid, "listening"), "the daemon's status")
        code, out = status_of(config, capsys)
        assert code == 0 and f"recorder:       running (pid {daemon.process.pid})" in out
        # Alive but silent for five minutes: hung.
        daemon.process.send_signal(signal.SIGSTOP)
        status = read_status(status_path)
        status["updated"] = (datetime.fromisoformat(status["updated"]) - timedelta(minutes=5)).isoformat()
        status_path.write_text(json.dumps(status))
        code, out = status_of(config, capsys)
        assert code == 1 and re.search(r"recorder: +NOT RESPONDING \(pid \d+\): last update 30[01] s ago", out)
        daemon.process.send_signal(signal.SIGCONT)
        # A stop as systemd makes it: SIGTERM to every process of the unit.
        for pid in [*daemon.capture_processes(), daemon.process.pid]:
            os.kill(pid, signal.SIGTERM)
        assert daemon.process.wait(timeout=30) == 0
    finally:
        daemon.close()
    code, out = status_of(config, capsys)
    since = read_status(status_path)["since"]
    assert code == 1
    assert f"recorder:       not running since {since} (was pid {daemon.process.pid})" in out
    assert f"state:          stopped since {since}" in out
    assert "recent problem: none" in out  # the stop was not taken for a lost microphone

    # Killed: the file is fresh and still says listening, but the process is gone.
    daemon = Daemon(tmp_path, config, "second")
    try:
        wait_until(lambda: published(daemon.process.pid, "listening"), "the restarted daemon's status")
        daemon.process.kill()
        daemon.process.wait()
    finally:
        daemon.close()
    code, out = status_of(config, capsys)
    assert code == 1 and f"not running since {read_status(status_path)['updated']}" in out
    assert "state:          listening" in out

    # The number now belongs to another process, alive and fresh: not the recorder.
    status = read_status(status_path)
    status.update(pid=os.getpid(), updated=datetime.now().astimezone().isoformat(timespec="seconds"))
    status_path.write_text(json.dumps(status))
    code, out = status_of(config, capsys)
    assert code == 1 and "recorder:       not running since" in out


def test_status_takes_the_old_place_on_the_card_only_from_a_recorder_that_runs(alsa, lesson, tmp_path,
                                                                                capsys, monkeypatch):
    # The service's layout: the recordings in the state directory (on the card), beside the
    # status of earlier versions; the status now in the runtime directory (a tmpfs).
    alsa.add("testmic", lesson)
    state, runtime = tmp_path / "state", tmp_path / "run"
    state.mkdir()
    runtime.mkdir()
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(runtime))
    config = tmp_path / "edge.yaml"
    config.write_text("audio: {device: testmic, buffer_s: 120}\nled: {pin: null}\n"
                      f"storage: {{recordings_dir: {state / 'rec'}, min_free_mb: 0}}\n")
    old, new = state / "status.json", runtime / "status.json"
    # What a recorder of this version said as it stopped (a downgrade, and back).
    publish_status(new, RecorderStatus(state="stopped", pid=2**22 + 1, updated="2026-01-05T08:00:00+00:00"))
    # A recorder not yet restarted after the upgrade: it still publishes on the card.
    earlier = tmp_path / "earlier.yaml"
    earlier.write_text(config.read_text() + f"service: {{status_file: {old}}}\n")
    daemon = Daemon(tmp_path, earlier, "earlier")
    try:
        wait_until(lambda: (read_status(old) or {}).get("pid") == daemon.process.pid, "the earlier status")
        code, out = status_of(config, capsys)
        assert code == 0 and f"recorder:       running (pid {daemon.process.pid})" in out
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=30) == 0
    finally:
        daemon.close()
    # Its last word stays on the card, and is not the current state of anything.
    assert read_status(old)["state"] == "stopped"
    new.unlink()
    capsys.readouterr()
    assert main(["status", "--config", str(config)]) == 2
    assert f"{new}: no status published" in capsys.readouterr().err

    daemon = Daemon(tmp_path, config, "upgraded")
    try:
        wait_until(lambda: (read_status(new) or {}).get("pid") == daemon.process.pid, "the new status")
        code, out = status_of(config, capsys)
        assert code == 0 and f"recorder:       running (pid {daemon.process.pid})" in out
        assert not (state / "status.json.tmp").exists() and read_status(old)["state"] == "stopped"
        # After a reboot the old file's pid may be the new recorder's: its age gives it away.
        daemon.process.send_signal(signal.SIGSTOP)
        stale = read_status(old)
        stale.update(pid=daemon.process.pid, state="listening",
                     updated=(datetime.now().astimezone() - timedelta(days=3)).isoformat(timespec="seconds"))
        old.write_text(json.dumps(stale))
        new.unlink()  # as before the new recorder's first status
        capsys.readouterr()
        assert main(["status", "--config", str(config)]) == 2
        assert f"{new}: no status published" in capsys.readouterr().err
        assert "in use by the recorder" not in doctor_lines(config, capsys)[1]["microphone"]
        daemon.process.send_signal(signal.SIGCONT)
    finally:
        daemon.close()


def test_status_without_a_daemon_is_one_clear_line(tmp_path, capsys):
    assert main(["status", "--config", str(write_config(tmp_path))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge: ") and "status.json: no status published" in err
    assert "\n" not in err


@pytest.mark.parametrize("content, problem", [
    ("{}", "'pid' must be int"),
    ('{"pid": 1, "state": "listening", "since": "", "updated": "2026-11-24T09:00:00", "segments_today": 0, '
     '"overflows": 0, "dropped_frames": 0, "errors": []}', "'updated' must be an ISO 8601 time with its offset"),
    ("[1, 2]", "expected a JSON object"),
])
def test_a_status_file_the_recorder_did_not_write_is_one_line(tmp_path, capsys, content, problem):
    (tmp_path / "status.json").write_text(content)
    assert main(["status", "--config", str(write_config(tmp_path))]) == 2
    assert capsys.readouterr().err == (
        f"edge: {tmp_path / 'status.json'}: not a status the recorder wrote ({problem}); a running "
        "recorder replaces it within seconds, check service.status_file\n")


def doctor_lines(config, capsys) -> tuple[int, dict]:
    code = main(["doctor", "--config", str(config)])
    lines = capsys.readouterr().out.splitlines()
    return code, {line.split()[1].rstrip(":"): line for line in lines}


def test_doctor_passes_each_check_on_a_working_setup(alsa, lesson, tmp_path, capsys, timesync):
    alsa.add("testmic", lesson)
    timesync.touch()
    code, lines = doctor_lines(write_config(tmp_path), capsys)
    assert set(lines) == {"config", "model", "microphone", "gpio", "button", "storage", "clock", "encryption", "sync"}
    for name in lines:
        assert lines[name].startswith("OK "), lines[name]
    assert "'testmic' gives audio at 16000 Hz" in lines["microphone"]
    assert lines["clock"] == "OK   clock: synchronised by systemd-timesyncd"
    assert code == 0


def test_doctor_fails_an_unsynchronised_clock(alsa, lesson, tmp_path, capsys, timesync):
    alsa.add("testmic", lesson)
    code, lines = doctor_lines(write_config(tmp_path), capsys)
    assert code == 1
    assert lines["clock"].startswith("FAIL clock: not synchronised")
    assert lines["clock"].endswith("-> connect to a network once, or add an RTC")
    assert [name for name in lines if lines[name].startswith("FAIL")] == ["clock"]


def test_doctor_fails_storage_below_the_free_space_floor(alsa, lesson, tmp_path, capsys, timesync):
    alsa.add("testmic", lesson)
    timesync.touch()
    code, lines = doctor_lines(write_config(tmp_path, min_free_mb=10**7), capsys)  # 10 TB
    assert code == 1
    assert lines["storage"].startswith("FAIL storage: ") and "below the 10000000 MB floor" in lines["storage"]
    assert lines["storage"].endswith("-> copy recordings off (edge export)")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only tmpfs needs root")
def test_doctor_fails_a_read_only_card(alsa, lesson, tmp_path, capsys, timesync):
    alsa.add("testmic", lesson)
    timesync.touch()
    card = tmp_path / "card"
    card.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(card)], check=True)
    try:
        code, lines = doctor_lines(write_config(tmp_path, recordings=card / "rec"), capsys)
    finally:
        subprocess.run(["umount", str(card)], check=True)
    assert code == 1
    assert lines["storage"] == (f"FAIL storage: {card} is not writable by this user -> run as the "
                                "edge-recorder user or fix the folder's owner")


def test_doctor_fails_a_gpio_pin_it_cannot_drive(alsa, lesson, tmp_path, capsys, timesync, monkeypatch):
    from gpiozero import LED, Device
    from gpiozero.pins.mock import MockFactory

    alsa.add("testmic", lesson)
    timesync.touch()
    factory = MockFactory()
    monkeypatch.setattr(Device, "pin_factory", factory)
    try:
        code, lines = doctor_lines(write_config(tmp_path, pin=17), capsys)
        assert (code, lines["gpio"]) == (0, "OK   gpio: LED on GPIO17")
        busy = LED(17)  # another program drives the line
        code, lines = doctor_lines(write_config(tmp_path, pin=17), capsys)
        busy.close()
    finally:
        factory.reset()
    assert code == 1
    assert lines["gpio"].startswith("FAIL gpio: GPIO17: ")
    assert lines["gpio"].endswith("-> check led.pin (BCM numbering), or set led.pin: null")


def test_doctor_says_how_to_fix_a_missing_microphone(alsa, lesson, tmp_path, capsys):
    alsa.add("testmic", lesson)
    code, lines = doctor_lines(write_config(tmp_path, device="usbmic"), capsys)
    assert code == 1
    assert lines["microphone"].startswith("FAIL microphone: audio.device 'usbmic' not found")
    assert lines["microphone"].endswith("-> plug in the microphone or set audio.device (see: edge devices)")


class MicrophoneThatMustNotOpen:
    opened = 0

    def __init__(self, settings):
        pass

    def open(self):
        MicrophoneThatMustNotOpen.opened += 1
        raise CaptureError("opened by doctor")

    def close(self):
        pass


def test_doctor_takes_microphone_and_led_from_the_running_recorder(alsa, lesson, tmp_path, capsys, monkeypatch):
    import edge.doctor

    alsa.add("testmic", lesson)
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("led: {pin: null}", "led: {pin: 17}"))
    monkeypatch.setattr(edge.doctor, "MicrophoneSource", MicrophoneThatMustNotOpen)
    daemon = Daemon(tmp_path, config)
    try:
        wait_until(lambda: (read_status(tmp_path / "status.json") or {}).get("pid") == daemon.process.pid,
                   "the daemon's status")
        capsys.readouterr()
        _, lines = doctor_lines(config, capsys)
        pid = daemon.process.pid
        assert lines["microphone"] == f"OK   microphone: 'testmic' in use by the recorder (pid {pid}), audio arriving"
        # This machine has no GPIO: the daemon runs without its LED, and says so in its status.
        assert lines["gpio"] == (f"FAIL gpio: the recorder (pid {pid}) runs without its LED on GPIO17 "
                                 "-> see why: journalctl -u edge-recorder -p warning")
        assert MicrophoneThatMustNotOpen.opened == 0
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=30) == 0
    finally:
        daemon.close()
    _, lines = doctor_lines(config, capsys)
    assert lines["microphone"].startswith("FAIL microphone: opened by doctor")
    assert MicrophoneThatMustNotOpen.opened == 1


DOCTOR_WITH_CHIPS = ("import sys, edge.doctor; edge.doctor.GPIO_CHIPS = sys.argv[1]; "
                     "from edge.cli import main; sys.exit(main(['doctor', '--config', sys.argv[2]]))")


@pytest.mark.parametrize("chips, gpio_line", [
    ("none", "FAIL gpio: no GPIO on this machine (led.pin: 17) -> set led.pin: null where there is no LED"),
    # Chips that gpiozero cannot use (not a Pi): it falls back through every pin library.
    ("unusable", "FAIL gpio: GPIO17: "),
])
def test_doctor_prints_only_its_lines_and_names_a_machine_without_gpio(alsa, lesson, tmp_path, chips, gpio_line):
    alsa.add("testmic", lesson)
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("led: {pin: null}", "led: {pin: 17}"))
    (tmp_path / "dev").mkdir()
    if chips == "unusable":
        (tmp_path / "dev" / "gpiochip0").touch()
    result = subprocess.run([sys.executable, "-c", DOCTOR_WITH_CHIPS, str(tmp_path / "dev" / "gpiochip*"),
                             str(config)], capture_output=True, text=True, timeout=120)
    if chips == "unusable" and "OK   gpio:" in result.stdout:
        pytest.skip("gpiozero found usable GPIO here (a Pi)")
    lines = {line.split()[1].rstrip(":"): line for line in result.stdout.splitlines()}
    assert lines["gpio"].startswith(gpio_line)
    assert "gpio group" not in lines["gpio"]
    assert lines["microphone"] == "OK   microphone: 'testmic' gives audio at 16000 Hz"
    assert result.stderr == ""  # no PinFactoryFallback warnings, no info lines


def test_a_paused_daemon_says_until_when_in_status_doctor_and_systemd(alsa, lesson, tmp_path, capsys):
    alsa.add("testmic", lesson)
    config = write_config(tmp_path)
    daemon = Daemon(tmp_path, config)
    try:
        wait_until(lambda: (read_status(tmp_path / "status.json") or {}).get("pid") == daemon.process.pid,
                   "the daemon's status")
        capsys.readouterr()
        assert main(["pause", "--config", str(config)]) == 0
        paused = capsys.readouterr().out.strip()
        assert re.fullmatch(r"paused until \d\d:\d\d", paused), paused
        wait_until(lambda: any(m.startswith(f"STATUS={paused} · ".encode()) for m in list(daemon.messages)),
                   "systemd's status line")
        assert main(["status", "--config", str(config)]) == 0
        assert f"state:          {paused} since " in capsys.readouterr().out
        _, lines = doctor_lines(config, capsys)
        assert lines["button"] == (f"OK   button: no privacy button (controls.button_pin is null); "
                                   f"the recorder is {paused} (edge resume records again)")
        assert main(["resume", "--config", str(config)]) == 0
        assert capsys.readouterr().out == "recording again\n"
        assert read_status(tmp_path / "status.json")["paused_until"] is None
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=30) == 0
    finally:
        daemon.close()
    assert main(["pause", "--config", str(config)]) == 2
    assert capsys.readouterr().err.startswith("edge: the recorder is not running (nothing answers on ")


def test_doctor_fails_storage_where_damaged_manifest_lines_were_moved_aside(alsa, lesson, tmp_path, capsys,
                                                                            timesync):
    alsa.add("testmic", lesson)
    timesync.touch()
    config = write_config(tmp_path)
    assert main(["process", str(LESSON_WAV), "--out", str(tmp_path / "rec")]) == 0
    code, lines = doctor_lines(config, capsys)
    assert lines["storage"].startswith("OK   storage: ")
    [manifest] = (tmp_path / "rec").glob("*/manifest.jsonl")
    with open(manifest, "ab") as f:
        f.write(b"\x00\x00 a lost sector\n")
    assert main(["process", str(LESSON_WAV), "--out", str(tmp_path / "rec")]) == 0  # repaired, recorded on
    code, lines = doctor_lines(config, capsys)
    assert code == 1
    assert lines["storage"].startswith("FAIL storage: ")
    assert f"damaged manifest lines were moved to {manifest.parent / 'manifest.damaged.jsonl'}" in lines["storage"]
