"""The pipeline: frames -> detector -> segmenter -> sinks (segment files, LED, status).

One class serves the daemon (``edge run``, a microphone that may vanish, a card that may
fill) and ``edge process`` (files, as fast as the CPU allows): the same frames take the
same path either way.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .audio import CaptureError, EndOfInput, FrameSource
from .clock import SystemClock
from . import __version__
from .config import Settings, device_name, neg_threshold
from .encryption import AgeWav
from .indicator import Indicator, LedPattern, NullIndicator
from .notify import ServiceNotifier
from .retention import SegmentRetention
from .segmenter import SegmentAudio, SegmentClosed, SegmentOpened, SpeechSegmenter
from .status import RecorderState, RecorderStatus, publish_status
from .storage import (FreeSpaceGuard, PlainWav, SegmentEnd, SegmentStart, SegmentWriter,
                      StorageUnavailable, read_manifest)

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
READ_TIMEOUT_S = 0.25
SPACE_CHECK_S = 1.0
STORAGE_RETRY_S = 10.0
STATUS_EVERY_S = 5.0
RETENTION_CHECK_S = 600.0
MAX_ERRORS_KEPT = 5


@dataclass
class FileSummary:
    source: str
    segments: int = 0
    kept_s: float = 0.0
    total_s: float = 0.0

    def line(self) -> str:
        skipped = self.total_s - self.kept_s
        found = "speech found" if self.segments else "no speech found"
        return (f"{self.source}: {found}, {self.segments} segments, "
                f"{self.kept_s:.1f} s kept, {skipped:.1f} s skipped")


def make_writer(settings: Settings, recordings_dir: Path, detector) -> SegmentWriter:
    """The segment writer for ``recordings_dir``, with what a power cut left there finished;
    segments are encrypted when ``privacy.recipients`` names any (a bad one stops here)."""
    recipients = settings.privacy.recipients
    segment_format = AgeWav.for_recipients(recipients) if recipients else PlainWav()
    writer = SegmentWriter(recordings_dir, device_name(settings.storage), detector.sha256,
                           __version__, settings.storage.fsync_interval_s, segment_format)
    try:
        recovered = writer.prepare()
    except OSError as exc:
        # A read-only or failing card must not become a crash loop: the recorder starts,
        # listens, reports the card, and finishes the repair once it can write again.
        log.warning("%s: cannot finish interrupted segments now (%s)", recordings_dir, exc.strerror)
        return writer
    if recovered:
        log.warning("recovered %d interrupted segments", len(recovered))
    return writer


class Recorder:
    def __init__(self, settings: Settings, vad, writer: SegmentWriter,
                 indicator: Indicator = NullIndicator(), notifier: ServiceNotifier = ServiceNotifier(""),
                 watchdog_every: Optional[float] = None, status_path: Optional[Path] = None,
                 clock=SystemClock(),
                 monotonic: Callable[[], float] = time.monotonic,
                 extra_pattern: Callable[[], Optional[LedPattern]] = lambda: None):
        self.settings = settings
        self.vad = vad
        self.writer = writer
        self.indicator = indicator
        self.notifier = notifier
        self.watchdog_every = watchdog_every
        self._last_watchdog = -1e9
        self.storage_retry_s = STORAGE_RETRY_S
        self.status_path = status_path
        self.clock = clock
        self.monotonic = monotonic
        self.extra_pattern = extra_pattern
        self._extra: Optional[LedPattern] = None  # extra_pattern() as of the last check
        self.guard = FreeSpaceGuard(writer.root, settings.storage.min_free_mb, settings.storage.when_full)
        self.retention = SegmentRetention(writer.root, settings.storage.keep_days, clock)
        self.status = RecorderStatus(pid=os.getpid())
        self._today = clock.wall().date()
        # A restart mid-day must not reset the count people see in `edge status`.
        self.status.segments_today = sum(
            datetime.fromisoformat(e["start"]).date() == self._today
            for e in read_manifest(writer.manifest))
        self.entries: list[dict] = []
        self._segmenter = self._new_segmenter()
        self._live = False
        self._source: Optional[FrameSource] = None
        self._samples = 0  # samples seen since the source was (re)opened
        self._wall0 = clock.wall()
        self._boot0 = clock.boottime()
        self._session_boot0: Optional[float] = None  # boot time of the first opening
        self._offset0 = 0.0  # session offset of sample 0 of the current opening
        self._mic_missing = False
        self._disk_full = False
        self._gaps: list = []
        self._last_space_check = self._last_storage_retry = self._last_status = -1e9
        self._last_retention = -1e9
        self._published_summary = ""

    # -- the two ways in ------------------------------------------------------------------

    def process_file(self, source: FrameSource) -> FileSummary:
        """Run one file through the pipeline from a fresh detector state."""
        self._live = False
        source.open()
        self._begin(source)
        summary = FileSummary(source.name)
        first_entry = len(self.entries)
        try:
            while True:
                try:
                    frame = source.read(timeout=0)
                except EndOfInput:
                    break
                self._frame(frame)
        finally:
            self._store(self._segmenter.flush())
            source.close()
        summary.total_s = self._samples / SAMPLE_RATE
        for entry in self.entries[first_entry:]:
            summary.segments += 1
            summary.kept_s += entry["duration_s"]
        return summary

    def run(self, source: FrameSource, stop: threading.Event, wait_for_device: bool = False) -> None:
        """Listen until ``stop`` is set, surviving a lost microphone and a full card.

        A device that cannot be opened at start raises CaptureError (a person at a terminal
        must see it), unless ``wait_for_device``: a service waits for it as for a lost one,
        since a USB microphone may be plugged in after the Pi has booted."""
        self._live = True
        try:
            source.open()
            missing = None
        except CaptureError as exc:
            if not wait_for_device:
                raise
            missing = str(exc)
        self._begin(source)
        self.notifier.ready()
        self._publish(force=True)
        try:
            if missing is not None:
                self._recover_microphone(missing, stop)
            last_frame = self.monotonic()
            while not stop.is_set():
                try:
                    frame = source.read(READ_TIMEOUT_S)
                except EndOfInput:
                    break
                except CaptureError as exc:
                    self._recover_microphone(str(exc), stop)
                    last_frame = self.monotonic()
                    continue
                now = self.monotonic()
                if frame is None:
                    if now - last_frame >= self.settings.audio.stall_timeout_s:
                        self._recover_microphone(
                            f"no audio for {self.settings.audio.stall_timeout_s:g} s", stop)
                        last_frame = self.monotonic()
                    self._housekeeping()
                    continue
                last_frame = now
                self._ping_watchdog()
                self._frame(frame)
                self._housekeeping()
        finally:
            self.notifier.stopping()
            self._store(self._segmenter.flush())
            source.close()
            self._show()
            self._publish(force=True)

    # -- frames and events ----------------------------------------------------------------

    def _begin(self, source: FrameSource) -> None:
        self._source = source
        self.vad.reset()
        self._segmenter = self._new_segmenter()
        self._samples = 0
        self._wall0 = self.clock.wall()
        self._boot0 = self.clock.boottime()
        if self._live and self._session_boot0 is None:
            self._session_boot0 = self._boot0
        self._offset0 = self._boot0 - self._session_boot0 if self._live else 0.0

    def _new_segmenter(self) -> SpeechSegmenter:
        detector = self.settings.detector
        return SpeechSegmenter(self.settings.segmenter, detector.threshold, neg_threshold(detector))

    def _frame(self, frame: np.ndarray) -> None:
        probability = self.vad(frame)
        self._samples += len(frame)
        self._store(self._segmenter.push(frame, probability))
        self._show()

    def _store(self, events) -> None:
        for event in events:
            try:
                if isinstance(event, SegmentOpened):
                    self._open_segment(event.start_sample, event.audio)
                elif isinstance(event, SegmentAudio):
                    if self.writer.is_open:
                        self.writer.append(event.audio)
                    elif not self._disk_full:
                        # Storage came back while someone was talking: keep the rest.
                        self._open_segment(self._samples - len(event.audio), event.audio)
                elif isinstance(event, SegmentClosed) and self.writer.is_open:
                    self._close_segment(event.prob_mean, event.prob_max)
            except StorageUnavailable as exc:
                self._storage_lost(str(exc))

    def _open_segment(self, start_sample: int, audio: np.ndarray) -> None:
        if self._disk_full:
            return
        if not self._room_left():
            return
        self.writer.open(self._segment_start(start_sample))
        self._gaps = []
        self.writer.append(audio)

    def _close_segment(self, prob_mean: Optional[float], prob_max: Optional[float]) -> None:
        source = self._source
        entry = self.writer.close(SegmentEnd(prob_mean, prob_max, source.overflows, source.dropped_frames))
        if entry is None:
            return
        self.entries.append(entry)
        today = self.clock.wall().date()
        if today != self._today:
            self._today, self.status.segments_today = today, 0
        self.status.segments_today += 1
        self.status.last_speech = entry["end"]
        if self.status.oldest_segment is None:
            self.status.oldest_segment, self.status.oldest_segment_days = entry["file"], 0.0
        log.info("stored %s (%.1f s)", entry["file"], entry["duration_s"])
        if self._live:
            self._publish(force=True)

    def _segment_start(self, start_sample: int) -> SegmentStart:
        if self._live:
            # The newest frame has just arrived: the segment began as long ago as the audio
            # between its first sample and the newest one lasts. Asking the clock now, not
            # at session start, keeps wall times right after NTP sets the clock.
            age = (self._samples - start_sample) / SAMPLE_RATE
            wall = self.clock.wall() - timedelta(seconds=age)
            boot = self.clock.boottime() - age
            offset = self._offset0 + start_sample / SAMPLE_RATE
        else:
            offset = start_sample / SAMPLE_RATE
            wall = self._wall0 + timedelta(seconds=offset)
            boot = self._boot0 + offset
        return SegmentStart(
            source=self._source.name, start_s=offset,
            start=wall.isoformat(timespec="milliseconds"), monotonic_s=round(boot, 3),
            boot_id=self.clock.boot_id(), clock_synced=self.clock.synced(), mic_gaps=list(self._gaps))

    # -- faults -----------------------------------------------------------------------------

    def _storage_lost(self, reason: str) -> None:
        if not self._disk_full:
            self._warn(f"not storing audio: {reason}")
        self._disk_full = True
        self._last_storage_retry = self.monotonic()
        if self.writer.is_open:
            try:
                self._close_segment(None, None)
            except StorageUnavailable:
                pass  # recover() finishes the .part once the card takes writes again
        self._show()
        self._publish(force=True)

    def _room_left(self) -> bool:
        """Whether the card is above its free-space floor; below it, storing stops."""
        if self.guard.has_room():
            return True
        self._storage_lost(f"less than {self.guard.min_free_mb} MB free on the card")
        return False

    def _retry_storage(self) -> None:
        self._last_storage_retry = self.monotonic()
        try:
            if not self.guard.has_room():
                return
            self.writer.recover()
        except OSError as exc:
            log.debug("card still unavailable: %s", exc)
            return
        self._disk_full = False
        log.warning("storing audio again (%.0f MB free)", self.guard.free_mb())
        self._show()
        self._publish(force=True)

    def _recover_microphone(self, reason: str, stop: threading.Event) -> None:
        """Close the lost device and reopen it by name with growing waits; the gap is
        recorded in the next segment's manifest entry."""
        self._warn(f"microphone lost: {reason}")
        self._store(self._segmenter.flush())
        self._mic_missing = True
        self._show()
        self._publish(force=True)
        gap_start = self.clock.wall()
        self._source.close()
        wait = self.settings.audio.reopen_backoff_s
        while True:
            if self._wait(wait, stop):
                return
            try:
                self._source.open()
                break
            except CaptureError as exc:
                log.info("microphone still missing: %s", exc)
                wait = min(wait * 2, self.settings.audio.reopen_backoff_max_s)
        self._gaps.append({"start": gap_start.isoformat(timespec="milliseconds"),
                           "end": self.clock.wall().isoformat(timespec="milliseconds")})
        self._mic_missing = False
        self._begin(self._source)
        log.warning("microphone back after %.1f s", (self.clock.wall() - gap_start).total_seconds())
        self._show()
        self._publish(force=True)

    def _wait(self, seconds: float, stop: threading.Event) -> bool:
        """Wait for ``seconds`` or until stopped (True); the watchdog keeps being pinged,
        since waiting for a lost microphone is this loop doing its job, while a hung
        open stops the pings and gets the daemon restarted."""
        deadline = self.monotonic() + seconds
        while (left := deadline - self.monotonic()) > 0:
            if stop.wait(min(left, self.watchdog_every or STATUS_EVERY_S, STATUS_EVERY_S)):
                return True
            self._ping_watchdog()
            self._publish()  # `edge status` must not take a long wait for a dead daemon
        return stop.is_set()

    def _ping_watchdog(self) -> None:
        now = self.monotonic()
        if self.watchdog_every is not None and now - self._last_watchdog >= self.watchdog_every:
            self._last_watchdog = now
            self.notifier.watchdog()

    def _warn(self, message: str) -> None:
        log.warning("%s", message)
        stamp = self.clock.wall().isoformat(timespec="seconds")
        self.status.errors = (self.status.errors + [f"{stamp} {message}"])[-MAX_ERRORS_KEPT:]

    # -- sinks that follow the state ---------------------------------------------------------

    def state(self) -> RecorderState:
        if self._mic_missing:
            return RecorderState.MIC_MISSING
        if self._disk_full:
            return RecorderState.DISK_FULL
        return RecorderState.SPEECH if self._segmenter.is_open else RecorderState.LISTENING

    def _show(self) -> None:
        state = self.state()
        pattern = state.led
        if state is RecorderState.LISTENING:
            pattern = self._extra or pattern
        if not self._live and state is RecorderState.LISTENING:
            pattern = LedPattern.OFF
        self.indicator.show(pattern)

    def _housekeeping(self) -> None:
        """Checks that need not run 31 times a second: once a second at most."""
        now = self.monotonic()
        if now - self._last_space_check >= SPACE_CHECK_S:
            self._last_space_check = now
            if self.writer.is_open:
                self._room_left()
            extra = self.extra_pattern()
            if extra is not self._extra:
                self._extra = extra
                self._show()
        if self._disk_full and now - self._last_storage_retry >= self.storage_retry_s:
            self._retry_storage()
        if now - self._last_retention >= RETENTION_CHECK_S:
            self._last_retention = now
            self._apply_retention()
        self._publish()

    def _apply_retention(self) -> None:
        try:
            self.retention.sweep()
        except OSError as exc:
            log.warning("cannot delete old segments now (%s)", exc.strerror)
            return
        oldest = self.retention.oldest
        self.status.oldest_segment = oldest.file if oldest else None
        self.status.oldest_segment_days = (None if oldest is None or oldest.age_s is None
                                           else round(oldest.age_s / 86400, 3))

    def _publish(self, force: bool = False) -> None:
        now = self.monotonic()
        if not force and now - self._last_status < STATUS_EVERY_S:
            return
        self._last_status = now
        state = self.state().value
        wall = self.clock.wall().isoformat(timespec="seconds")
        if state != self.status.state or not self.status.since:
            self.status.since = wall
        self.status.state = state
        self.status.updated = wall
        try:
            self.status.free_mb = round(self.guard.free_mb(), 1)
        except OSError:
            self.status.free_mb = None
        if self._source is not None:
            self.status.overflows = self._source.overflows
            self.status.dropped_frames = self._source.dropped_frames
        summary = self.status.summary()
        if summary != self._published_summary:
            self._published_summary = summary
            self.notifier.status(summary)
        if self.status_path is not None:
            try:
                publish_status(self.status_path, self.status)
            except OSError as exc:
                log.debug("cannot publish status: %s", exc)
