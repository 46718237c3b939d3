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
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .audio import CaptureError, EndOfInput, FrameSource
from .capture import WINDOW
from .clock import SystemClock
from . import __version__
from .config import Settings, device_name, neg_threshold
from .controls import ControlQueue
from .encryption import AgeWav
from .indicator import Indicator, LedPattern, NullIndicator
from .notify import ServiceNotifier
from .pausing import PauseAndForget
from .retention import SegmentRetention
from .segmenter import SegmentAudio, SegmentClosed, SegmentOpened, SpeechSegmenter
from .status import RecorderState, RecorderStatus
from .plain_wav import PlainWav
from .storage import (MANIFEST, FreeSpaceGuard, SegmentEnd, SegmentStart, SegmentWriter, StorageUnavailable,
                      read_manifest)
from .supervisor import CaptureSupervisor, StatusPublisher, StorageSupervisor, Watchdog

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
EXTRA_CHECK_S = 1.0
RETENTION_CHECK_S = 600.0
ENTRIES_KEPT = 100


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


def _recorded_on(entry: dict, day) -> bool:
    """Whether a manifest entry started on ``day`` (read_manifest passes only entries whose
    ``start`` is an ISO time: a damaged line never stops the count)."""
    return datetime.fromisoformat(entry["start"]).date() == day


class Recorder(PauseAndForget):
    """frames -> detector -> segmenter -> sinks (segment writer, LED, status).

    What can go wrong on the way is handled by the supervisors (edge.supervisor), which
    call back here when the microphone or the card goes and comes back."""

    def __init__(self, settings: Settings, vad, writer: SegmentWriter,
                 indicator: Indicator = NullIndicator(), notifier: ServiceNotifier = ServiceNotifier(""),
                 watchdog_every: Optional[float] = None, status_path: Optional[Path] = None,
                 clock=SystemClock(),
                 monotonic: Callable[[], float] = time.monotonic,
                 extra_pattern: Callable[[], Optional[LedPattern]] = lambda: None,
                 controls: Optional[ControlQueue] = None, export_state: Optional[Path] = None,
                 pause_file: Optional[Path] = None):
        """``controls`` brings pause and forget requests (the button, `edge pause`);
        ``export_state`` is the USB export's state file, named when a forget deletes what
        an export may have copied; ``pause_file`` keeps a pause across a restart."""
        self.settings = settings
        self.vad = vad
        self.writer = writer
        self.indicator = indicator
        self.notifier = notifier
        self.clock = clock
        self.monotonic = monotonic
        self.extra_pattern = extra_pattern
        self._extra: Optional[LedPattern] = None  # extra_pattern() as of the last check
        guard = FreeSpaceGuard(writer.root, settings.storage.min_free_mb, settings.storage.when_full)
        self.storage = StorageSupervisor(guard, writer, self, monotonic)
        self.retention = SegmentRetention(writer.root, settings.storage.keep_days, clock,
                                          settings.sync.remote)
        self.watchdog = Watchdog(notifier, watchdog_every, monotonic)
        today = clock.wall().date()
        # A restart mid-day must not reset the count people see in `edge status`; today's
        # segments are in today's folder, so that is all there is to read.
        self.status = RecorderStatus(pid=os.getpid(), segments_today=sum(
            _recorded_on(e, today) for e in read_manifest(writer.root / today.strftime("%Y%m%d") / MANIFEST)))
        self.status.led = indicator.name
        self.publisher = StatusPublisher(self.status, status_path, notifier, clock, monotonic, guard.free_mb)
        for repair in writer.repairs:
            self.publisher.warn(repair)
        self.status.manifest_repairs = list(writer.repairs)
        self.capture: Optional[CaptureSupervisor] = None
        self.entries: deque = deque(maxlen=ENTRIES_KEPT)
        """The last segments stored (a bounded few: the daemon runs for a school year)."""
        self._summary: Optional[FileSummary] = None
        self._segmenter = self._new_segmenter()
        self._live = False
        self._source: Optional[FrameSource] = None
        self._samples = 0  # samples taken by the segmenter since the source was (re)opened
        self._arrived = 0  # samples heard since then, up to the end of the frames being handled
        self._wall0 = clock.wall()
        self._boot0 = clock.boottime()
        self._session_boot0: Optional[float] = None  # boot time of the first opening
        self._offset0: Optional[float] = 0.0  # session offset of sample 0 of the current opening
        self._gaps: list = []  # microphone outages since the last segment began
        self._last_extra_check = float("-inf")
        self._last_retention = float("-inf")
        self._init_controls(controls or ControlQueue(), export_state, pause_file)

    # -- the two ways in ------------------------------------------------------------------

    def process_file(self, source: FrameSource) -> FileSummary:
        """Run one file through the pipeline from a fresh detector state."""
        self._live = False
        source.open()
        self._begin(source)
        summary = self._summary = FileSummary(source.name)
        try:
            while True:
                try:
                    frames = source.read(timeout=0)
                except EndOfInput:
                    break
                self._frames(frames)
        finally:
            self._store(self._segmenter.flush())
            source.close()
            self._summary = None
        summary.total_s = self._samples / SAMPLE_RATE
        return summary

    def run(self, source: FrameSource, stop: threading.Event, wait_for_device: bool = False) -> None:
        """Listen until ``stop`` is set, surviving a lost microphone and a full card.

        A device that cannot be opened at start raises CaptureError (a person at a terminal
        must see it), unless ``wait_for_device``: a service waits for it as for a lost one,
        since a USB microphone may be plugged in after the Pi has booted."""
        self._live = True
        self.capture = CaptureSupervisor(self.settings.audio, source, self, self.watchdog, self.clock,
                                         self.monotonic, stop.wait)
        try:
            self.notifier.extend_start()
            source.open()
            missing = None
        except CaptureError as exc:
            if stop.is_set():
                return  # stopped while the device was opening: nothing was begun
            if not wait_for_device:
                raise
            missing = str(exc)
        self._begin(source)
        self.restore_pause()
        self.notifier.ready()
        self._publish(force=True)
        try:
            if missing is not None:
                self.capture.lost(missing)
            while not stop.is_set():
                try:
                    frames = self.capture.read()
                except EndOfInput:
                    break
                if frames is not None and not self.paused:
                    self._frames(frames)
                self._housekeeping()
        except Exception as exc:
            self.publisher.warn(f"stopped by an error: {exc!r}")  # for `edge status`; the log has the rest
            raise
        finally:
            self.notifier.stopping()
            self._store(self._segmenter.flush())
            source.close()
            self._show()
            # The last word: `edge status` tells a stopped daemon from a hung one.
            self.publisher.publish(RecorderState.STOPPED.value, source, force=True)

    # -- frames and events ----------------------------------------------------------------

    def _begin(self, source: FrameSource) -> None:
        self._source = source
        self.vad.reset()
        self._segmenter = self._new_segmenter()
        self._samples = self._arrived = 0
        self._wall0 = self.clock.wall()
        self._boot0 = self.clock.boottime()
        reopened = self._session_boot0 is not None
        if self._live and not reopened:
            self._session_boot0 = self._boot0
        # A reopened microphone's sample 0 was heard its first frames' length before they
        # arrived, which is when it is known to be back: its offset waits for those frames.
        self._offset0 = None if self._live and reopened else 0.0

    def _new_segmenter(self) -> SpeechSegmenter:
        detector = self.settings.detector
        return SpeechSegmenter(self.settings.segmenter, detector.threshold, neg_threshold(detector))

    def _frames(self, frames: np.ndarray) -> None:
        """The frames of one read: scored in one call (the detector's cost per call is shared
        by a whole capture block), then taken by the segmenter one at a time."""
        self._arrived = self._samples + len(frames)
        if self._offset0 is None:
            self._offset0 = self.clock.boottime() - len(frames) / SAMPLE_RATE - self._session_boot0
        for frame, probability in zip(frames.reshape(-1, WINDOW), self.vad.probabilities(frames).tolist()):
            self._samples += WINDOW
            was_open = self._segmenter.is_open
            events = self._segmenter.push(frame, probability)
            if self._segmenter.is_open != was_open:
                # The LED follows the speech, not the card: closing a segment waits for its
                # fsyncs, which a worn SD card can stretch to seconds.
                self._show()
            self._store(events)
        self._show()

    def _store(self, events) -> None:
        for event in events:
            try:
                if isinstance(event, SegmentOpened):
                    self._open_segment(event.start_sample, event.audio)
                elif isinstance(event, SegmentAudio):
                    if self.writer.is_open:
                        self.writer.append(event.audio)
                    elif not self.storage.unavailable:
                        # Storage came back while someone was talking: keep the rest.
                        self._open_segment(self._samples - len(event.audio), event.audio)
                elif isinstance(event, SegmentClosed) and self.writer.is_open:
                    self._close_segment(event.prob_mean, event.prob_max)
            except StorageUnavailable as exc:
                self.storage.lost(str(exc))

    def _open_segment(self, start_sample: int, audio: np.ndarray) -> None:
        if not self.storage.room_left():
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
        if self._summary is not None:
            self._summary.segments += 1
            self._summary.kept_s += entry["duration_s"]
        self.publisher.segment_stored(entry)
        log.info("stored %s (%.1f s)", entry["file"], entry["duration_s"])
        if self._live:
            self._publish(force=True)

    def _segment_start(self, start_sample: int) -> SegmentStart:
        if self._live:
            # The newest frames have just arrived: the segment began as long ago as the audio
            # between its first sample and the newest one lasts. Asking the clock now, not
            # at session start, keeps wall times right after NTP sets the clock.
            age = (self._arrived - start_sample) / SAMPLE_RATE
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

    # -- what the supervisors report (CaptureListener, StorageListener) ----------------------

    def microphone_lost(self, reason: str) -> None:
        self.publisher.warn(f"microphone lost: {reason}")
        self._store(self._segmenter.flush())
        self._show()
        self._publish(force=True)

    def microphone_back(self, gap: dict) -> None:
        self._gaps.append(gap)
        self._begin(self._source)
        self._show()
        self._publish(force=True)

    def waiting(self) -> None:
        self.apply_controls()
        self._publish()  # `edge status` must not take a long wait for a dead daemon

    def storage_lost(self, reason: str) -> None:
        self.publisher.warn(f"not storing audio: {reason}")
        if self.writer.is_open:
            try:
                self._close_segment(None, None)
            except StorageUnavailable:
                pass  # recover() finishes the .part once the card takes writes again
        self._show()
        self._publish(force=True)

    def storage_back(self) -> None:
        self._show()
        self._publish(force=True)

    # -- sinks that follow the state ---------------------------------------------------------

    def state(self) -> RecorderState:
        if self.paused:
            return RecorderState.PAUSED
        if self.capture is not None and self.capture.missing:
            return RecorderState.MIC_MISSING
        if self.storage.unavailable:
            return RecorderState.DISK_FULL
        return RecorderState.SPEECH if self._segmenter.is_open else RecorderState.LISTENING

    def _show(self) -> None:
        state = self.state()
        pattern = state.led
        if state is RecorderState.LISTENING:
            pattern = self._extra or pattern
        if not self._live and state is RecorderState.LISTENING:
            pattern = LedPattern.OFF
        if self.confirming_forget():
            pattern = LedPattern.FORGOTTEN
        self.indicator.show(pattern)

    def _housekeeping(self) -> None:
        """Checks that need not run 31 times a second (and pause and forget requests)."""
        self.apply_controls()
        self.storage.check()
        now = self.monotonic()
        if now - self._last_extra_check >= EXTRA_CHECK_S:
            self._last_extra_check = now
            extra = self.extra_pattern()
            if extra is not self._extra:
                self._extra = extra
                self._show()
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
        self.status.retention_paused = self.retention.paused
        self.status.oldest_segment = oldest.file if oldest else None
        self.status.oldest_segment_days = (None if oldest is None or oldest.age_s is None
                                           else round(oldest.age_s / 86400, 3))

    def _publish(self, force: bool = False) -> None:
        self.publisher.publish(self.state().value, self._source, force)
