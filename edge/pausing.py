"""Pause and forget, as the recorder applies them: between two frames, in its own thread.

The requests come from the privacy button and the control socket (edge.controls); what a
forget removes from the card is edge.forget's. A mixin of Recorder, whose pipeline parts
(segmenter, writer, detector, LED, status) it drives.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Optional

from .controls import HELD, PRESSED, RELEASED, ControlQueue, ControlRequest
from .errors import EdgeError
from .forget import forget_recent
from .indicator import LedPattern
from .storage import write_json_atomically

log = logging.getLogger(__name__)

FORGOTTEN_SHOWN_S = sum(LedPattern.FORGOTTEN.value)  # one cycle of the LED's confirmation, then the pause


class PauseAndForget:
    """Recorder's part that pauses, resumes and forgets."""

    def _init_controls(self, controls: ControlQueue, export_state: Optional[Path],
                       pause_file: Optional[Path]) -> None:
        self.controls = controls
        self.export_state = export_state
        self.pause_file = pause_file
        self._paused_until: Optional[float] = None  # monotonic time recording resumes
        self._press_paused = False  # the button press in progress paused (its release must not resume)
        self._held = False  # the open segment waits for the release: finished, or forgotten by a hold
        self._forgotten_until = float("-inf")  # the LED confirms a forget until then

    @property
    def paused(self) -> bool:
        return self._paused_until is not None

    def confirming_forget(self) -> bool:
        """Whether the LED is to confirm a forget now."""
        return self.monotonic() < self._forgotten_until

    def apply_controls(self) -> None:
        """Apply what the button and the socket asked since the last frame; end a pause
        whose time is up."""
        for request in self.controls.take():
            try:
                self._apply(request)
            except EdgeError as exc:
                log.error("cannot %s: %s", request.action, exc)
                request.reply(False, f"cannot {request.action}: {exc}")
            except Exception as exc:  # the one asking must hear, and recording goes on
                log.exception("cannot %s", request.action)
                request.reply(False, f"cannot {request.action}: {exc}")
        now = self.monotonic()
        if self._paused_until is not None and now >= self._paused_until:
            self.resume("the pause is over")
        elif self._forgotten_until != float("-inf") and now >= self._forgotten_until:
            self._forgotten_until = float("-inf")
            self._show()

    def _apply(self, request: ControlRequest) -> None:
        controls = self.settings.controls
        if request.action == PRESSED:
            self._press_paused = self._paused_until is None
            if self._press_paused:
                # Until the release tells a pause from a forget, the open segment stays open
                # with its audio up to the press: a hold must find it unfinished.
                self.pause(controls.pause_minutes, "the button", finish=False)
        elif request.action == RELEASED:
            if self._press_paused:
                self._finish_held()
            elif self._paused_until is not None:
                self.resume("the button")
        elif request.action == HELD:
            self._press_paused = True  # the release ends the hold, not the pause
            self.forget(controls.forget_minutes, "button")
        elif request.action == "pause":
            request.reply(True, self.pause(request.minutes or controls.pause_minutes, "edge pause"))
        elif request.action == "resume":
            request.reply(True, self.resume("edge resume"))
        elif request.action == "forget":
            request.reply(True, self.forget(request.minutes, "edge forget"))

    def pause(self, minutes: float, by: str, finish: bool = True) -> str:
        """Stop recording for ``minutes``: the open segment ends here with its audio (and is
        finished now, or with ``finish`` False once the button is released)."""
        if finish:
            self._finish_held()
            self._store(self._segmenter.flush())
        else:
            self._held = True
        message = self._paused_for(minutes * 60)
        log.warning("%s (%s)", message, by)
        self._keep_pause({"boot_id": self.clock.boot_id(), "until_boottime": self.clock.boottime() + minutes * 60})
        return message

    def restore_pause(self) -> None:
        """A pause outlives a restart of the daemon (a crash, the watchdog) in the same boot."""
        if self.pause_file is None:
            return
        try:
            kept = json.loads(self.pause_file.read_text())
            left = kept["until_boottime"] - self.clock.boottime()
            same_boot = kept["boot_id"] == self.clock.boot_id() != "unknown"
        except (OSError, ValueError, KeyError, TypeError):
            return  # no pause file, or none written whole: not paused
        if same_boot and left > 0:
            log.warning("still %s (paused before the restart)", self._paused_for(left))

    def _keep_pause(self, pause: Optional[dict]) -> None:
        if self.pause_file is None:
            return
        try:
            if pause is None:
                self.pause_file.unlink(missing_ok=True)
            else:
                write_json_atomically(self.pause_file, pause)
        except OSError as exc:
            log.warning("%s: a restart would not know of the pause (%s)", self.pause_file, exc.strerror)

    def _paused_for(self, seconds: float) -> str:
        self._paused_until = self.monotonic() + seconds
        until = self.clock.wall() + timedelta(seconds=seconds)
        self.status.paused_until = until.isoformat(timespec="seconds")
        self._show()
        self._publish(force=True)
        return f"paused until {until.strftime('%H:%M')}"

    def resume(self, by: str) -> str:
        if self._paused_until is None:
            return "not paused: recording"
        self._finish_held()
        self._paused_until = None
        self.status.paused_until = None
        self._keep_pause(None)
        if self._source is not None:
            self._begin(self._source)  # a fresh detector: the pause is a gap in the audio
        log.warning("recording again (%s)", by)
        self._show()
        self._publish(force=True)
        return "recording again"

    def forget(self, minutes: float, by: str) -> str:
        """Remove what was recorded in the last ``minutes`` (edge.forget), then pause."""
        open_files = self.writer.discard()
        self._segmenter = self._new_segmenter()  # its audio is forgotten, not stored
        self._held = False
        self.vad.reset()
        try:
            forgotten = forget_recent(self.writer.root, minutes, by, self.clock, open_files, self.export_state)
        except OSError as exc:
            self.pause(self.settings.controls.pause_minutes, by)
            # The card is retried every few seconds; recovery finishes a forget written down.
            self.storage.lost(f"cannot forget now: {exc.strerror}")
            raise EdgeError(f"the card refused ({exc.strerror}); paused, nothing new is recorded") from None
        today = self.clock.wall().date()
        self.status.segments_today -= sum(item["start"] is not None and
                                          datetime.fromisoformat(item["start"]).date() == today
                                          for item in forgotten)
        self._forgotten_until = self.monotonic() + FORGOTTEN_SHOWN_S
        paused = self.pause(self.settings.controls.pause_minutes, by)
        copies = sum(bool(item["copies"]) for item in forgotten)
        elsewhere = f" ({copies} of them copied elsewhere before: see the log)" if copies else ""
        return f"forgot {len(forgotten)} segments of the last {minutes:g} minutes{elsewhere}; {paused}"

    def _finish_held(self) -> None:
        if self._held:
            self._held = False
            self._store(self._segmenter.flush())
