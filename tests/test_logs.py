"""Log lines as journald sees them versus as a person at a terminal sees them.

A child process logs to stderr connected to a pipe; the test decides whether that pipe is
"the journal" by putting (or not putting) the pipe's device:inode into $JOURNAL_STREAM,
exactly as systemd does for a service's stderr.
"""

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.errors import EdgeError
from edge.logs import setup_logging

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import logging, sys
from edge.logs import setup_logging
setup_logging(sys.argv[1])
log = logging.getLogger("edge.test")
log.debug("frame stats")
log.info("listening")
log.warning("disk nearly full")
log.error("microphone lost")
try:
    raise RuntimeError("boom")
except RuntimeError:
    log.exception("detector crashed")
"""


def run_child(level: str, journal: bool) -> list[str]:
    read_end, write_end = os.pipe()
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    env["PYTHONPATH"] = str(REPO)
    if journal:
        status = os.fstat(write_end)
        env["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino}"
    else:
        # Another stream's identity, as a child of a service that redirected stderr has.
        status = os.fstat(read_end)
        env["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino + 1}"
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, level], stderr=write_end, env=env, cwd=REPO
        )
    finally:
        os.close(write_end)
    with os.fdopen(read_end) as output:
        lines = output.read().splitlines()
    assert child.wait(timeout=30) == 0, lines
    return lines


def test_journal_lines_carry_sd_daemon_priorities():
    lines = run_child("debug", journal=True)
    assert lines[:4] == [
        "<7>frame stats",
        "<6>listening",
        "<4>disk nearly full",
        "<3>microphone lost",
    ]
    assert lines[4] == "<3>detector crashed"
    # journald files every line on its own: the traceback must stay at error priority.
    traceback = lines[5:]
    assert traceback[0] == "<3>Traceback (most recent call last):"
    assert traceback[-1] == "<3>RuntimeError: boom"
    assert all(line.startswith("<3>") for line in traceback)


def test_terminal_lines_carry_level_words_and_no_prefix():
    lines = run_child("info", journal=False)
    assert lines[:4] == [
        "info: listening",
        "warning: disk nearly full",
        "error: microphone lost",
        "error: detector crashed",
    ]
    assert not any(line.startswith("<") for line in lines)


def test_level_filters_lower_records():
    assert run_child("WARNING", journal=True)[:2] == ["<4>disk nearly full", "<3>microphone lost"]


def test_setup_twice_replaces_its_own_handler():
    root = logging.getLogger()
    # An earlier test's setup_logging (through edge.cli.main) may have left its handler.
    setup_logging("info", stream=io.StringIO())
    before = list(root.handlers)
    level = root.level
    first, second = io.StringIO(), io.StringIO()
    try:
        setup_logging("info", stream=first)
        setup_logging("info", stream=second)
        logging.getLogger("edge.test").warning("once")
        assert first.getvalue() == ""
        assert second.getvalue() == "warning: once\n"
        assert len(root.handlers) == len(before)
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
        root.setLevel(level)


def test_unknown_level_is_refused_in_one_line():
    with pytest.raises(EdgeError, match="unknown log level 'loud'"):
        setup_logging("loud")
