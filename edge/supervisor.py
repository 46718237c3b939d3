"""Fault supervision, kept out of the pipeline: a microphone that fails, vanishes or stalls;
a card that fills or fails; systemd's watchdog; the status that people and systemd see.

Each part is small, takes its clock as an argument and reports to a listener (the
recorder), so that tests can drive it alone with a fake clock and fake devices.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional, Protocol

import numpy as np

from .audio import CaptureError, FrameSource
from .clock import SystemClock
from .config import AudioSettings
from .notify import ServiceNotifier
from .status import RecorderState, RecorderStatus, last_published, make_status_folder, publish_status
from .storage import FreeSpaceGuard, SegmentWriter

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.25
STATUS_EVERY_S = 5.0
MAX_ERRORS_KEPT = 5
SPACE_CHECK_S = 1.0
STORAGE_RETRY_S = 10.0
MISSING_LOG_EVERY_S = 600.0
"""While the microphone is missing, failed reopen attempts are logged as a summary this often
(after the first): 6 lines an hour instead of one per attempt (120 at the longest wait)."""


def stamp(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds")


class Watchdog:
    """systemd's watchdog, pinged at most every ``every`` seconds (None: no watchdog)."""

    def __init__(self, notifier: ServiceNotifier, every: Optional[float],
                 monotonic: Callable[[], float] = time.monotonic):
        self.notifier, self.every, self.monotonic = notifier, every, monotonic
        self._last = float("-inf")

    def ping(self) -> None:
        now = self.monotonic()
        if self.every is not None and now - self._last >= self.every:
            self._last = now
            self.notifier.watchdog()


class StatusPublisher:
    """The status file `edge status` reads and systemd's one-line STATUS=.

    Published at once when something changes (``force``) and every STATUS_EVERY_S
    otherwise, so that a status file that stops changing means a daemon that stopped."""

    def __init__(self, status: RecorderStatus, path: Optional[Path], notifier: ServiceNotifier,
                 clock, monotonic: Callable[[], float], free_mb: Callable[[], float]):
        self.status, self.path, self.notifier = status, path, notifier
        self.clock, self.monotonic, self.free_mb = clock, monotonic, free_mb
        self._today = clock.wall().date()
        self._last = float("-inf")
        self._summary = ""

    def warn(self, message: str) -> None:
        """Log a problem and keep it among the recent ones `edge status` shows."""
        log.warning("%s", message)
        self.keep_error(message)

    def keep_error(self, message: str) -> None:
        """Keep a problem among the recent ones `edge status` shows (logged elsewhere)."""
        entry = f"{self.clock.wall().isoformat(timespec='seconds')} {message}"
        self.status.errors = (self.status.errors + [entry])[-MAX_ERRORS_KEPT:]

    def segment_stored(self, entry: dict) -> None:
        today = self.clock.wall().date()
        if today != self._today:
            self._today, self.status.segments_today = today, 0
        self.status.segments_today += 1
        self.status.last_speech = entry["end"]
        if self.status.oldest_segment is None:
            self.status.oldest_segment, self.status.oldest_segment_days = entry["file"], 0.0

    def publish(self, state: str, source: Optional[FrameSource], force: bool = False) -> None:
        now = self.monotonic()
        if not force and now - self._last < STATUS_EVERY_S:
            return
        self._last = now
        status = self.status
        wall = self.clock.wall().isoformat(timespec="seconds")
        if state != status.state or not status.since:
            status.since = wall
        status.state, status.updated = state, wall
        try:
            status.free_mb = round(self.free_mb(), 1)
        except OSError:
            status.free_mb = None
        if source is not None:
            status.overflows, status.dropped_frames = source.overflows, source.dropped_frames
        summary = status.summary()
        if summary != self._summary:
            self._summary = summary
            self.notifier.status(summary)
        if self.path is not None:
            try:
                publish_status(self.path, status)
            except OSError as exc:
                log.debug("cannot publish status: %s", exc)


def publish_start_failure(path: Path, why: str, clock=SystemClock()) -> None:
    """Say in the status why this daemon did not start: `edge status` then shows "not running
    since ... (last error: ``why``)". What the last daemon knew of the card stays; a status
    this process has published already (the recorder ran) says how it ended and is kept."""
    status = last_published(path)
    if status.pid == os.getpid():
        return
    status.pid = os.getpid()
    # Not told to systemd: `systemctl status` shows the restart and the journal's line.
    publisher = StatusPublisher(status, path, ServiceNotifier(""), clock, time.monotonic, _not_measured)
    publisher.keep_error(why)
    make_status_folder(path)
    publisher.publish(RecorderState.STOPPED.value, None)


def _not_measured() -> float:
    raise OSError  # the recorder did not start: the card's free space is unknown


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


class CaptureListener(Protocol):
    def microphone_lost(self, reason: str) -> None:
        """The microphone failed or stalled (once per outage); reopening begins."""

    def microphone_back(self, gap: dict) -> None:
        """Audio arrives again; ``gap`` has the outage's wall-clock ``start`` and ``end``."""

    def waiting(self) -> None:
        """Called every few seconds while waiting to reopen the microphone."""


class CaptureSupervisor:
    """Frames from a microphone that may fail, vanish or stall.

    A failed read, or no audio for ``stall_timeout_s``, loses the microphone: the source
    is closed and reopened by name, with waits doubling from ``reopen_backoff_s`` up to
    ``reopen_backoff_max_s``, until audio comes again. It counts as back only when a frame
    arrives, so a device that opens and stays silent is one outage, not many. The watchdog
    is pinged while frames arrive and while knowingly waiting; a hang anywhere else stops
    the pings and gets the daemon restarted.
    """

    def __init__(self, settings: AudioSettings, source: FrameSource, listener: CaptureListener,
                 watchdog: Watchdog, clock, monotonic: Callable[[], float] = time.monotonic,
                 wait: Callable[[float], bool] = threading.Event().wait):
        """``wait(seconds)`` sleeps and returns True when the recorder is to stop."""
        self.settings, self.source, self.listener = settings, source, listener
        self.watchdog, self.clock, self.monotonic, self.wait = watchdog, clock, monotonic, wait
        self.missing = False
        self._last_frame: Optional[float] = None
        self._gap_start: Optional[datetime] = None
        self._backoff = settings.reopen_backoff_s
        self._failed_attempts = 0  # reopen attempts that failed since the last log line
        self._attempts = 0  # in this outage
        self._last_log = float("-inf")

    def read(self) -> Optional[np.ndarray]:
        """The next frames, or None when there were none (a stall or outage was handled, or
        the recorder is to stop). EndOfInput passes through."""
        try:
            frame = self.source.read(READ_TIMEOUT_S)
        except CaptureError as exc:
            self.lost(str(exc))
            return None
        now = self.monotonic()
        if frame is None:
            if self._last_frame is None:
                self._last_frame = now
            elif now - self._last_frame >= self.settings.stall_timeout_s:
                self.lost(f"no audio for {self.settings.stall_timeout_s:g} s")
            return None
        self._last_frame = now
        self.watchdog.ping()
        if self.missing:
            self._back()
        return frame

    def lost(self, reason: str) -> None:
        """Close the source and reopen it with growing waits; returns once it opened (or
        the recorder is to stop)."""
        if not self.missing:
            self.missing = True
            self._gap_start = self.clock.wall()
            self._backoff = self.settings.reopen_backoff_s
            self._attempts = self._failed_attempts = 0
            self.listener.microphone_lost(reason)
        else:
            self._attempt_failed(f"it opened but gave no audio ({reason})")
        self.source.close()
        while not self._wait(self._backoff):
            self._backoff = min(self._backoff * 2, self.settings.reopen_backoff_max_s)
            try:
                self.source.open()
            except CaptureError as exc:
                self._attempt_failed(str(exc))
                continue
            self._last_frame = self.monotonic()
            return

    def _attempt_failed(self, reason: str) -> None:
        """The first failed reopen of an outage is logged, then one summary line every
        MISSING_LOG_EVERY_S: a microphone unplugged for the holidays must not fill the
        journal (the outage itself is a warning, and `edge status` shows it)."""
        self._attempts += 1
        self._failed_attempts += 1
        now = self.monotonic()
        if self._attempts > 1 and now - self._last_log < MISSING_LOG_EVERY_S:
            return
        missing_s = (self.clock.wall() - self._gap_start).total_seconds()
        log.info("microphone still missing after %s (%d reopen attempts since the last line): %s",
                 _duration(missing_s), self._failed_attempts, reason)
        self._last_log, self._failed_attempts = now, 0

    def _back(self) -> None:
        self.missing = False
        end = self.clock.wall()
        log.warning("microphone back after %s (%d reopen attempts)",
                    _duration((end - self._gap_start).total_seconds()), self._attempts + 1)
        self.listener.microphone_back({"start": stamp(self._gap_start), "end": stamp(end)})

    def _wait(self, seconds: float) -> bool:
        """Wait, pinging the watchdog: waiting for a lost microphone is this loop doing its
        job. True when the recorder is to stop."""
        deadline = self.monotonic() + seconds
        step = min(self.watchdog.every or STATUS_EVERY_S, STATUS_EVERY_S)
        while (left := deadline - self.monotonic()) > 0:
            if self.wait(min(left, step)):
                return True
            self.watchdog.ping()
            self.listener.waiting()
        return False


class StorageListener(Protocol):
    def storage_lost(self, reason: str) -> None:
        """Storing stops (once per outage): close what is open, keep listening."""

    def storage_back(self) -> None:
        """The card has room and takes writes again."""


class StorageSupervisor:
    """Keeps the card above its free-space floor and survives write errors.

    Below ``min_free_mb`` or on a write error (full, read-only, I/O error) storing stops and
    listening goes on; every ``retry_s`` the card is tried again (room, and finishing what
    the error interrupted), and storing resumes by itself."""

    def __init__(self, guard: FreeSpaceGuard, writer: SegmentWriter, listener: StorageListener,
                 monotonic: Callable[[], float] = time.monotonic, retry_s: float = STORAGE_RETRY_S):
        self.guard, self.writer, self.listener = guard, writer, listener
        self.monotonic, self.retry_s = monotonic, retry_s
        self.unavailable = False
        self._last_retry = self._last_check = float("-inf")

    def room_left(self) -> bool:
        """Whether the card is above its free-space floor; below it, storing stops."""
        if self.unavailable:
            return False
        if self.guard.has_room():
            return True
        self.lost(f"less than {self.guard.min_free_mb} MB free on the card")
        return False

    def lost(self, reason: str) -> None:
        self._last_retry = self.monotonic()
        if not self.unavailable:
            self.unavailable = True
            self.listener.storage_lost(reason)

    def check(self) -> None:
        """The periodic part: free space under an open segment once a second, and a retry
        every ``retry_s`` while storing is stopped."""
        now = self.monotonic()
        if self.unavailable:
            if now - self._last_retry >= self.retry_s:
                self._retry()
        elif self.writer.is_open and now - self._last_check >= SPACE_CHECK_S:
            self._last_check = now
            self.room_left()

    def _retry(self) -> None:
        self._last_retry = self.monotonic()
        try:
            if not self.guard.has_room():
                return
            self.writer.recover()
        except OSError as exc:
            log.debug("card still unavailable: %s", exc)
            return
        self.unavailable = False
        log.warning("storing audio again (%.0f MB free)", self.guard.free_mb())
        self.listener.storage_back()
