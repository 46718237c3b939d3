"""Logging to stderr in the form journald understands, or plainly on a terminal.

Under systemd, stderr goes to journald, which stamps each line with the time and unit and
reads a leading ``<N>`` as the line's syslog priority: with it ``journalctl -p warning``
shows only what needs attention. systemd says a program may tell its stderr is the journal
when ``$JOURNAL_STREAM`` holds the device and inode of its stderr; anywhere else (a
terminal, a file, a pipe) the prefix would be noise, so a short level word is used instead.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Optional, TextIO, Union

from .errors import EdgeError

# sd-daemon(3) priorities; 5 (notice) has no Python level.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
_DEBUG_PRIORITY = 7

_handler: Optional[logging.Handler] = None


def syslog_priority(levelno: int) -> int:
    for threshold, priority in _PRIORITIES:
        if levelno >= threshold:
            return priority
    return _DEBUG_PRIORITY


def stream_is_journal(stream: TextIO) -> bool:
    """True when ``stream`` is the journald connection systemd set up for this service."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = expected.partition(":")
    try:
        status = os.fstat(stream.fileno())
        return (status.st_dev, status.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):
        # No such variable, a malformed one, or a stream without a file descriptor.
        return False


class JournalFormatter(logging.Formatter):
    """``<N>message`` on every line, so a traceback keeps its record's priority.

    journald reads each line as its own entry: an unprefixed continuation line would be
    filed as info and vanish from ``journalctl -p warning``.
    """

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


class TerminalFormatter(logging.Formatter):
    """``warning: message``; a terminal has its own clock, so no timestamp either."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"


def setup_logging(level: Union[int, str] = logging.INFO, stream: Optional[TextIO] = None) -> None:
    """Send every log record at ``level`` or above to ``stream`` (stderr).

    ``level`` is a logging level or its name in any case (``"debug"``, ``"WARNING"``).
    Calling it again replaces the handler it added before and leaves others (pytest's) alone.
    """
    global _handler
    if isinstance(level, str):
        named = logging.getLevelName(level.upper())
        if not isinstance(named, int):
            raise EdgeError(f"unknown log level {level!r} (expected debug, info, warning or error)")
        level = named
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter() if stream_is_journal(stream) else TerminalFormatter())
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = handler
    root.addHandler(handler)
    root.setLevel(level)


@contextmanager
def quiet_stderr():
    """Hide what C libraries print straight to fd 2 (ALSA and JACK while PortAudio probes
    every device, TFLite's delegate banner): dozens of lines per open that would bury the
    recorder's own messages in the journal. Their real failures arrive as exceptions."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
