"""What an export is doing, for the LED: `edge export` publishes its state in a small JSON
file beside the daemon's status (in memory), and the daemon, which owns the GPIO line, polls
it through :func:`export_led_pattern`."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

from .config import Settings, resolve_runtime_path
from .indicator import LedPattern
from .storage import write_json_atomically

STATE_STALE_S = 60
"""A "copying" state older than this belongs to an export that died, in seconds."""
RESULT_SHOWN_S = 300
"""How long the LED shows that an export finished or failed, in seconds."""
STATE_UPDATE_INTERVAL_S = 10
"""Least time between two writes of the state file while copying (it is on the SD card)."""


class ExportStatePublisher:
    """Writes the export state for the daemon's LED; a state file that cannot be written
    (a manual run by a user without access to the daemon's folder) only costs the LED."""

    def __init__(self, path: Optional[Path]):
        self.path = path
        self._last_write = float("-inf")

    def publish(self, state: str, copied: int, total: int, force: bool = True) -> None:
        if self.path is None:
            return
        now = time.monotonic()
        if not force and now - self._last_write < STATE_UPDATE_INTERVAL_S:
            return
        self._last_write = now
        data = {"state": state, "updated": datetime.now().astimezone().isoformat(timespec="seconds"),
                "copied": copied, "total": total}
        try:
            write_json_atomically(self.path, data)
        except OSError as exc:
            sys.stderr.write(f"edge: {self.path}: cannot publish export state ({exc.strerror})\n")
            self.path = None


def export_state_file(settings: Settings) -> Path:
    """Where the export publishes its state: beside the daemon's status file (in memory)."""
    return resolve_runtime_path(settings.service.status_file).with_name("export.json")


def export_led_pattern(path: Path, now: datetime) -> Optional[LedPattern]:
    """The LED pattern the daemon should show for the export, or None when there is none.

    ``now`` is an aware datetime. An export that stopped publishing for a minute has died,
    so its "copying" no longer counts; a finished one is shown for five minutes.
    """
    try:
        state = json.loads(Path(path).read_text())
        age = (now - datetime.fromisoformat(state["updated"])).total_seconds()
        name = state["state"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if age < 0:
        return None
    if name == "copying":
        return LedPattern.EXPORTING if age <= STATE_STALE_S else None
    if age > RESULT_SHOWN_S:
        return None
    return {"done": LedPattern.EXPORT_DONE, "failed": LedPattern.EXPORT_FAILED}.get(name)
