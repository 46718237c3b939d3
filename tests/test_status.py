"""The status file and how `edge status` tells a running daemon from a pid that is no longer one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import wait_until
from edge.status import RecorderStatus, is_recorder_process, publish_status, read_status

SLEEP = "import time; time.sleep(60)"


@pytest.fixture
def spawn():
    started = []

    def start(*args):
        process = subprocess.Popen([sys.executable, "-c", SLEEP, *args])
        started.append(process)
        # Until the interpreter has exec'd, /proc shows the parent's command line.
        wait_until(lambda: SLEEP.encode() in open(f"/proc/{process.pid}/cmdline", "rb").read(), "the exec")
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


@pytest.mark.parametrize("args", [("edge", "run"), ("-m", "edge.__main__", "run", "--config", "x.yaml"),
                                  ("/opt/edge-recorder/venv/bin/edge", "run")])
def test_edge_run_is_recognised_whatever_the_interpreter(spawn, args):
    assert is_recorder_process(spawn(*args).pid) is True


@pytest.mark.parametrize("args", [("edge", "status"), ("run",), ("edge.__main__",), ("edge\udcff", "run")])
def test_other_processes_are_not_the_recorder(spawn, args):
    arguments = [arg.encode("utf-8", "surrogateescape") if "\udcff" in arg else arg for arg in args]
    assert is_recorder_process(spawn(*arguments).pid) is False


def test_a_command_line_that_is_not_utf8_is_read_without_failing(spawn):
    process = spawn(b"edge", b"run", b"\xff\xfe")
    assert is_recorder_process(process.pid) is True


def test_an_ended_daemon_is_not_running_even_before_it_is_reaped(spawn):
    process = subprocess.Popen([sys.executable, "-c", "pass", "edge", "run"])
    # A zombie: ended, not yet collected by its parent (its command line is empty).
    wait_until(lambda: open(f"/proc/{process.pid}/stat").read().split(") ")[1].startswith("Z"), "a zombie")
    try:
        assert is_recorder_process(process.pid) is False
    finally:
        process.wait()
    assert is_recorder_process(process.pid) is False  # gone altogether


def test_summary_is_the_one_line_systemd_shows():
    status = RecorderStatus(state="speech", segments_today=7, free_mb=1051.0)
    assert status.summary() == "speech · 7 segments today · 1.1 GB free"
    assert RecorderStatus(free_mb=None).summary() == "listening · 0 segments today · free space unknown"


def test_status_file_is_replaced_whole_and_readable_by_the_group(tmp_path):
    path = tmp_path / "status.json"
    old_umask = os.umask(0o077)
    try:
        publish_status(path, RecorderStatus(pid=5, segments_today=2, errors=["x"],
                                            updated="2026-11-24T09:30:00+01:00"))
    finally:
        os.umask(old_umask)
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert json.loads(path.read_text())["segments_today"] == 2
    assert read_status(path)["errors"] == ["x"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]
    path.write_text('{"pid": 5, "sta')  # a torn file from an older version: no status, no crash
    assert read_status(path) is None
    assert read_status(tmp_path / "absent.json") is None
