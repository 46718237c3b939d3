"""`edge status` reads what a running recorder published; `edge doctor` checks the machine."""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime, timedelta

import os
import subprocess

import pytest

from conftest import PacedSource, StopAfter, make_recorder
from edge.cli import main
from edge.config import load_config


def write_config(tmp_path, device="testmic", recordings=None, min_free_mb=200, pin="null"):
    config = tmp_path / "edge.yaml"
    config.write_text(f"audio: {{device: {device}, buffer_s: 120}}\n"
                      f"storage: {{recordings_dir: {recordings or tmp_path / 'rec'}, min_free_mb: {min_free_mb}}}\n"
                      f"led: {{pin: {pin}}}\nservice: {{status_file: {tmp_path / 'status.json'}}}\n")
    return config


def test_status_shows_what_the_recorder_published(tmp_path, lesson, detector, capsys):
    config = write_config(tmp_path)
    settings = load_config(config)
    recorder = make_recorder(settings, detector, tmp_path / "rec", status_path=tmp_path / "status.json")
    stop = threading.Event()
    recorder.run(StopAfter(PacedSource(lesson, speed=1000, loop=True), 2 * len(lesson) // 512, stop), stop)
    capsys.readouterr()

    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "recorder:       running" in out
    assert "state:          listening" in out
    assert f"segments today: {len(recorder.entries)}" in out and len(recorder.entries) == 6
    assert "recent problem: none" in out

    # A restart the same day goes on counting from what the manifest holds.
    restarted = make_recorder(settings, detector, tmp_path / "rec")
    assert restarted.status.segments_today == 6

    status = json.loads((tmp_path / "status.json").read_text())
    status["updated"] = (datetime.fromisoformat(status["updated"]) - timedelta(minutes=5)).isoformat()
    (tmp_path / "status.json").write_text(json.dumps(status))
    assert main(["status", "--config", str(config)]) == 1
    # "updated" has whole seconds: 300 s and a fraction may show as 301.
    assert re.search(r"NOT RUNNING\? last update 30[01] s ago", capsys.readouterr().out)


def test_status_without_a_daemon_is_one_clear_line(tmp_path, capsys):
    assert main(["status", "--config", str(write_config(tmp_path))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge: ") and "status.json: no status published" in err
    assert "\n" not in err


def doctor_lines(config, capsys) -> tuple[int, dict]:
    code = main(["doctor", "--config", str(config)])
    lines = capsys.readouterr().out.splitlines()
    return code, {line.split()[1].rstrip(":"): line for line in lines}


def test_doctor_passes_each_check_on_a_working_setup(alsa, lesson, tmp_path, capsys, timesync):
    alsa.add("testmic", lesson)
    timesync.touch()
    code, lines = doctor_lines(write_config(tmp_path), capsys)
    assert set(lines) == {"config", "model", "microphone", "gpio", "storage", "clock"}
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
    assert lines["gpio"].endswith("-> add the user to the gpio group, or set led.pin: null")


def test_doctor_says_how_to_fix_a_missing_microphone(alsa, lesson, tmp_path, capsys):
    alsa.add("testmic", lesson)
    code, lines = doctor_lines(write_config(tmp_path, device="usbmic"), capsys)
    assert code == 1
    assert lines["microphone"].startswith("FAIL microphone: audio.device 'usbmic' not found")
    assert lines["microphone"].endswith("-> plug in the microphone or set audio.device (see: edge devices)")
