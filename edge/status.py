"""What the daemon is doing, published for `edge status`, systemd's STATUS= and the LED."""

from __future__ import annotations

import enum
import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Optional

from .errors import EdgeError
from .indicator import LedPattern

STATUS_MODE = 0o640
FOLDER_MODE = 0o750

log = logging.getLogger(__name__)


class RecorderState(enum.Enum):
    LISTENING = "listening"
    SPEECH = "speech"
    MIC_MISSING = "mic missing"
    DISK_FULL = "disk full"
    PAUSED = "paused"
    """Nothing is recorded until ``paused_until`` (the privacy button or `edge pause`)."""
    STOPPED = "stopped"
    """The daemon's last word, published as it stops cleanly."""

    @property
    def led(self) -> LedPattern:
        return LedPattern.OFF if self is RecorderState.STOPPED else LedPattern[self.name]


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
    led: Optional[str] = None
    """The LED the daemon drives (GPIO17), None when it runs without one."""
    oldest_segment: Optional[str] = None
    """The oldest segment on the card, as of the last retention check (every 10 minutes)."""
    oldest_segment_days: Optional[float] = None
    """How many days ago it was recorded, at least; None when the clock cannot tell."""
    button: Optional[str] = None
    """The privacy button the daemon watches (GPIO27), None when it runs without one."""
    paused_until: Optional[str] = None
    """Wall time recording resumes by itself while paused, ISO 8601; None when not paused."""
    retention_paused: Optional[str] = None
    """Why retention deletes nothing now (the clocks disagree); None when it works."""
    manifest_repairs: list = field(default_factory=list)
    """What the daemon found damaged in the card's manifests at start and repaired (damaged
    lines moved aside, a manifest split per day), one line each; empty when all was whole."""

    def summary(self) -> str:
        """The one line systemd shows as STATUS=."""
        free = f"{self.free_mb / 1000:.1f} GB free" if self.free_mb is not None else "free space unknown"
        return f"{state_line(asdict(self))} · {self.segments_today} segments today · {free}"


def state_line(status: dict) -> str:
    """The state as people read it: "paused until 10:45" while paused."""
    until = status.get("paused_until")
    if status["state"] == RecorderState.PAUSED.value and until:
        return f"paused until {datetime.fromisoformat(until).strftime('%H:%M')}"
    return status["state"]


def make_status_folder(path: Path) -> None:
    """The folder of the status file ``path``: systemd makes $RUNTIME_DIRECTORY, a login
    session's runtime folder is made here (readable by the service's group, like the file)."""
    try:
        path.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("%s: cannot create the folder for the status (%s)", path.parent, exc.strerror)


def publish_status(path: Path, status: RecorderStatus) -> None:
    """Replace the status file atomically (readers never see half of it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(status), indent=1))
    # Readable by the service's group (`edge status` without sudo), whatever the umask.
    os.chmod(tmp, STATUS_MODE)
    os.replace(tmp, path)


def read_status(path: Path) -> Optional[dict]:
    try:
        status = json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    except PermissionError:
        raise
    except OSError as exc:  # a folder, a device: service.status_file names something else
        raise EdgeError(f"{path}: cannot read the recorder's status ({exc.strerror}); "
                        "check service.status_file") from None
    problem = _status_problem(status)
    if problem:
        raise EdgeError(f"{path}: not a status the recorder wrote ({problem}); a running recorder "
                        "replaces it within seconds, check service.status_file")
    return status


def last_published(path: Path) -> RecorderStatus:
    """The status in ``path`` as the daemon that wrote it left it (what it knew of the card:
    last speech, oldest segment, recent problems); a fresh one when there is none to read."""
    try:
        old = read_status(path) or {}
    except (EdgeError, OSError):
        old = {}
    known = {f.name for f in fields(RecorderStatus)}
    return RecorderStatus(**{key: value for key, value in old.items() if key in known})


def _status_problem(status) -> Optional[str]:
    """What is wrong with a status file's content, None when `edge status` can show it."""
    if not isinstance(status, dict):
        return "expected a JSON object"
    expected = {"pid": int, "state": str, "since": str, "updated": str, "segments_today": int,
                "overflows": int, "dropped_frames": int, "errors": list}
    for key, kind in expected.items():
        if not isinstance(status.get(key), kind) or isinstance(status.get(key), bool):
            return f"'{key}' must be {kind.__name__}"
    try:
        if datetime.fromisoformat(status["updated"]).tzinfo is None:
            return "'updated' must be an ISO 8601 time with its offset"
    except ValueError:
        return "'updated' must be an ISO 8601 time"
    return None


def status_age_s(status: dict, now: datetime) -> float:
    return (now - datetime.fromisoformat(status["updated"])).total_seconds()


def is_recorder_process(pid: int) -> Optional[bool]:
    """Whether ``pid`` is a live `edge run` (not a process that reused the number);
    None when this user cannot tell (/proc mounted with hidepid)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except PermissionError:
        return None
    if not args or args == [b""]:
        return False  # a zombie: it has ended, its parent has not collected it yet
    # `edge run ...` or `python -m edge run ...`, whatever the path of the interpreter.
    names = [Path(arg.decode(errors="replace")).name for arg in args]
    return "run" in names and ("edge" in names or "edge.__main__" in names)
