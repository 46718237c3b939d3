"""What the daemon is doing, published for `edge status`, systemd's STATUS= and the LED."""

from __future__ import annotations

import enum
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

from .indicator import LedPattern


class RecorderState(enum.Enum):
    LISTENING = "listening"
    SPEECH = "speech"
    MIC_MISSING = "mic missing"
    DISK_FULL = "disk full"

    @property
    def led(self) -> LedPattern:
        return LedPattern[self.name]


@dataclass
class RecorderStatus:
    state: str = RecorderState.LISTENING.value
    since: str = ""
    """Wall time the current state began, ISO 8601."""
    last_speech: Optional[str] = None
    """Wall time the last stored segment ended, ISO 8601."""
    segments_today: int = 0
    free_mb: Optional[float] = None
    overflows: int = 0
    dropped_frames: int = 0
    errors: list = field(default_factory=list)
    """The last few warnings, newest last."""
    pid: int = 0
    updated: str = ""
    oldest_segment: Optional[str] = None
    """The oldest segment on the card, as of the last retention check (every 10 minutes)."""
    oldest_segment_days: Optional[float] = None
    """How many days ago it was recorded, at least; None when the clock cannot tell."""

    def summary(self) -> str:
        """The one line systemd shows as STATUS=."""
        free = f"{self.free_mb / 1000:.1f} GB free" if self.free_mb is not None else "free space unknown"
        return f"{self.state} · {self.segments_today} segments today · {free}"


def publish_status(path: Path, status: RecorderStatus) -> None:
    """Replace the status file atomically (readers never see half of it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(status), indent=1))
    os.replace(tmp, path)


def read_status(path: Path) -> Optional[dict]:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def status_age_s(status: dict, now: datetime) -> float:
    return (now - datetime.fromisoformat(status["updated"])).total_seconds()
