"""`edge status` reads what a running recorder published; `edge doctor` checks the machine."""

from __future__ import annotations

import json
import re
import threading
import warnings
from datetime import datetime, timedelta

import pytest

from conftest import PacedSource, StopAfter, make_recorder
from edge.cli import main
from edge.config import load_config


def write_config(tmp_path, device="testmic"):
    config = tmp_path / "edge.yaml"
    config.write_text(f"audio: {{device: {device}, buffer_s: 120}}\n"
                      f"storage: {{recordings_dir: {tmp_path / 'rec'}}}\n"
                      f"led: {{pin: null}}\nservice: {{status_file: {tmp_path / 'status.json'}}}\n")
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


def test_doctor_passes_each_check_on_a_working_setup(alsa, lesson, tmp_path, capsys):
    alsa.add("testmic", lesson)
    code, lines = doctor_lines(write_config(tmp_path), capsys)
    assert set(lines) == {"config", "model", "microphone", "gpio", "storage", "clock"}
    for name in ("config", "model", "microphone", "gpio", "storage"):
        assert lines[name].startswith("OK "), lines[name]
    assert "'testmic' gives audio at 16000 Hz" in lines["microphone"]
    assert code == (0 if lines["clock"].startswith("OK") else 1)


def test_doctor_says_how_to_fix_a_missing_microphone(alsa, lesson, tmp_path, capsys):
    alsa.add("testmic", lesson)
    code, lines = doctor_lines(write_config(tmp_path, device="usbmic"), capsys)
    assert code == 1
    assert lines["microphone"].startswith("FAIL microphone: audio.device 'usbmic' not found")
    assert lines["microphone"].endswith("-> plug in the microphone or set audio.device (see: edge devices)")


def test_doctor_says_there_is_no_gpio_on_a_machine_without_a_pin_library(tmp_path, capsys, monkeypatch):
    from gpiozero import Device
    from gpiozero.exc import BadPinFactory

    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Device._default_pin_factory().close()
        pytest.skip("this machine has GPIO: gpiozero found a pin library")
    except BadPinFactory:
        pass
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("led: {pin: null}", "led: {pin: 17}"))
    code, lines = doctor_lines(config, capsys)
    assert code == 1
    assert lines["gpio"].startswith("FAIL gpio: GPIO17: no GPIO here (no pin library could drive it) -> ")
