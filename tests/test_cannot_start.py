"""A recorder that cannot start (a broken config, a missing model) says why in one line on
stderr (the journal's warning line under systemd), exits non-zero for systemd to restart it,
never shows a traceback, and leaves the same line as its last error for `edge status`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading

import pytest

from conftest import PacedSource, StopAfter, make_recorder
from edge.cli import main
from edge.config import load_config
from edge.status import read_status

MISSING_MODEL = ("detector: {model: /nonexistent.tflite}\n",
                 "/nonexistent.tflite: VAD model file not found (expected a Silero VAD .tflite file)")


def start(config, runtime_dir):
    """`edge run` as systemd starts it: the status's default place is $RUNTIME_DIRECTORY."""
    env = {**os.environ, "RUNTIME_DIRECTORY": str(runtime_dir)}
    return subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=120, cwd=config.parent, env=env)


def edge_status(config, runtime_dir, capsys, monkeypatch):
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(runtime_dir))
    capsys.readouterr()
    code = main(["status", "--config", str(config)])
    out, err = capsys.readouterr()
    assert err == ""
    return code, out


@pytest.mark.parametrize("config, line", [
    MISSING_MODEL,
    ("detector: {threshold: 3}\n", "{config}: detector.threshold must be between 0.0 and 1.0, got 3.0"),
    ("storage: {recordings_dir: [1, 2]}\n", "{config}: storage.recordings_dir must be a text, got [1, 2]"),
    ("audio: {device: default\n", "{config}: not valid YAML at line 2"),
])
def test_a_recorder_that_cannot_start_says_why_in_one_line(tmp_path, config, line, capsys, monkeypatch):
    path = tmp_path / "edge.yaml"
    path.write_text(config + "led: {pin: null}\n")
    runtime = tmp_path / "run"
    result = start(path, runtime)
    assert result.returncode != 0
    assert result.stderr.splitlines() == ["edge: " + line.format(config=path)], result.stderr
    # A config that cannot be read has no status_file to tell: the status goes to the
    # default place, where `edge status` looks with the installed (or a mended) config.
    mended = tmp_path / "mended.yaml"
    mended.write_text("led: {pin: null}\n")
    code, out = edge_status(mended, runtime, capsys, monkeypatch)
    assert code == 1
    recorder_line = out.splitlines()[0]
    assert re.fullmatch(rf"recorder: +not running since \S+ \(was pid {result_pid(runtime)}; "
                        rf"last error: \S+ {re.escape(line.format(config=path))}\)", recorder_line), out
    assert "Traceback" not in out


def result_pid(runtime_dir) -> int:
    return read_status(runtime_dir / "status.json")["pid"]


def test_a_failed_start_keeps_what_was_known_and_a_running_recorder_replaces_it(
        tmp_path, lesson, detector, capsys, monkeypatch):
    runtime = tmp_path / "run"
    config = tmp_path / "edge.yaml"
    config.write_text(f"storage: {{recordings_dir: {tmp_path / 'rec'}, min_free_mb: 0}}\nled: {{pin: null}}\n")
    settings = load_config(config)
    status_path = runtime / "status.json"
    runtime.mkdir()

    def record_a_lesson():
        stop = threading.Event()
        recorder = make_recorder(settings, detector, tmp_path / "rec", status_path=status_path)
        recorder.run(StopAfter(PacedSource(lesson, speed=1000), len(lesson) // 512, stop), stop)

    record_a_lesson()
    last_speech = read_status(status_path)["last_speech"]
    assert last_speech is not None

    broken = tmp_path / "broken.yaml"
    broken.write_text(config.read_text() + MISSING_MODEL[0])
    assert start(broken, runtime).returncode != 0
    code, out = edge_status(broken, runtime, capsys, monkeypatch)
    assert code == 1
    assert "last error: " in out and MISSING_MODEL[1] in out.splitlines()[0], out
    assert f"last speech:    {last_speech}" in out, out

    record_a_lesson()  # the model is back: the failed start is history
    code, out = edge_status(config, runtime, capsys, monkeypatch)
    assert MISSING_MODEL[1] not in out, out
    assert "recent problem: none" in out, out
