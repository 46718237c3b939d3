"""What `edge sync` has proven, and what the rest of the recorder reads of it.

What is synced lives in ``sync-state.json`` beside the manifest, replaced atomically and
fsynced like every other file the recorder writes; losing it (or a run stopped between the
move and the record) costs a verification in place, not a copy. A run that changes nothing in
it (the timer's run every 15 minutes with nothing new to send) does not rewrite it: the card
is not worn for a timestamp. Every run's time and outcome go to ``sync-run.json`` beside the
daemon's status, in memory (/run/edge-recorder); after a reboot `edge status` falls back on
the card's, the time of the last run that changed something.

Retention, `edge forget` and `edge status` read it here without the sync's machinery
(rclone, the card check, the mover): the daemon imports this module, not edge.sync.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from .config import Settings, device_name, resolve_data_path, resolve_runtime_path
from .errors import EdgeError
from .offload import megabytes
from .storage import iter_segments, safe_name, write_json_atomically

log = logging.getLogger(__name__)

SYNC_STATE = "sync-state.json"
SYNC_RUN = "sync-run.json"
"""The last run's time and outcome, in memory beside the daemon's status (not on the card)."""
RUN_FIELDS = ("last_success", "last_attempt")
"""What changes at every run: not worth a write to the card on its own."""
SYNC_LOCK = "sync.lock"
STAGING = ".incoming"
"""The folder beside the device's folder on the remote where copies wait until they are proven."""


@dataclass
class SyncState:
    """What is on the remote and verified, and how the last runs went (``sync-state.json``)."""

    remote: str = ""
    synced: dict = field(default_factory=dict)
    """file -> {"sha256", "size", "modtime" (as the remote lists it), "listed" (in the remote manifest)}."""
    last_success: Optional[str] = None
    """Wall time the last run ended with nothing left to send and no error, ISO 8601."""
    last_attempt: Optional[str] = None
    last_error: Optional[str] = None
    """The one-line reason the last run failed, or None when it succeeded."""
    waiting: int = 0
    waiting_bytes: int = 0

    @classmethod
    def load(cls, recordings_dir: Path) -> "SyncState":
        """The state beside the manifest; an empty one where no sync ever ran."""
        path = Path(recordings_dir) / SYNC_STATE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        synced = data.get("synced", {}) if isinstance(data, dict) else None
        if not isinstance(synced, dict) or not all(isinstance(r, dict) for r in synced.values()):
            # Written atomically, so only a foreign hand can damage it: verify everything again.
            log.warning("%s: unreadable, every copy on the remote will be verified again", path)
            return cls()
        known = {f.name for f in cls.__dataclass_fields__.values()}
        return cls(**{key: value for key, value in data.items() if key in known})

    def save(self, recordings_dir: Path) -> None:
        write_json_atomically(Path(recordings_dir) / SYNC_STATE, asdict(self))

    def is_synced(self, file: str) -> bool:
        """True when ``file`` (a manifest path) is on the remote, verified and listed in the
        remote manifest: the card's copy may go. For retention and deletion."""
        record = self.synced.get(file)
        return bool(record and record.get("listed"))


def is_synced(recordings_dir: Path, file: str) -> bool:
    """Whether a segment of ``recordings_dir`` has a verified copy on the remote; for code
    that deletes recordings (retention) and must say so when one was never copied off."""
    return SyncState.load(recordings_dir).is_synced(file)


@dataclass
class SyncReport:
    """What one run did."""

    waiting: int = 0
    waiting_bytes: int = 0
    uploaded: int = 0
    uploaded_bytes: int = 0
    verified: int = 0
    """Segments whose copy on the remote was verified in this run (uploaded or found there)."""
    deleted: int = 0
    problems: list = field(default_factory=list)
    """One line per segment that was not synced (corrupt on the card, copy did not verify)."""
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.problems

    def then(self, later: "SyncReport") -> "SyncReport":
        """Both passes' counts, with the ``later`` one's backlog and outcome."""
        return SyncReport(waiting=later.waiting, waiting_bytes=later.waiting_bytes,
                          uploaded=self.uploaded + later.uploaded,
                          uploaded_bytes=self.uploaded_bytes + later.uploaded_bytes,
                          verified=self.verified + later.verified, deleted=self.deleted + later.deleted,
                          problems=later.problems, error=later.error)

    def summary(self, remote: str) -> str:
        text = (f"{self.verified} segments verified on {remote} now ({self.uploaded} uploaded, "
                f"{megabytes(self.uploaded_bytes)}); {self.waiting} waiting ({megabytes(self.waiting_bytes)})")
        if self.deleted:
            text += f"; {self.deleted} deleted from the card"
        return text

    def status_line(self) -> str:
        """The one line systemd shows as STATUS=."""
        state = f"failed: {self.error}" if self.error else "ok"
        return f"sync {state} · {self.uploaded} uploaded · {self.waiting} waiting ({megabytes(self.waiting_bytes)})"


def split_remote(remote: str) -> tuple:
    """The device's folder and its staging folder on the remote (``name:parent/.incoming/base``)."""
    name, colon, path = remote.partition(":")
    path = path.rstrip("/")
    base = posixpath.basename(path)
    # rclone's remote names never start with "-" or a space: such a "remote" would reach
    # rclone as an option of its own.
    if not colon or not name or name.startswith(("-", " ")) or not base:
        raise EdgeError(f"sync.remote must be an rclone remote and a folder, like "
                        f"school-nas:recordings/{{device}}, got {remote!r}")
    parent = posixpath.dirname(path)
    return f"{name}:{path}", f"{name}:{posixpath.join(parent, STAGING, base)}"


def configured_remote(settings: Settings) -> str:
    if settings.sync.remote is None:
        raise EdgeError("no remote configured: set sync.remote (e.g. school-nas:recordings/{device})")
    return settings.sync.remote.replace("{device}", safe_name(device_name(settings.storage)))


def lasting(state: Optional[dict]) -> Optional[dict]:
    """A state without what every run changes: what is worth writing to the card."""
    return None if not isinstance(state, dict) else {k: v for k, v in state.items() if k not in RUN_FIELDS}


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0



def backlog(recordings_dir: Path, state: SyncState) -> tuple:
    """(segments, bytes) on the card that have no verified copy on the remote yet."""
    names = [e["file"] for e in iter_segments(recordings_dir) if not state.is_synced(e["file"])]
    return len(names), sum(file_size(Path(recordings_dir) / n) for n in names)


def status_lines(settings: Settings) -> list:
    """What `edge status` shows about the network copy."""
    if settings.sync.remote is None:
        return ["sync:           off (no sync.remote)"]
    root = resolve_data_path(settings.storage.recordings_dir)
    try:
        state = SyncState.load(root)
        count, size = backlog(root, state)
    except PermissionError:
        raise EdgeError(f"{root}: permission denied (the recordings are private: sudo edge status)") from None
    remote = configured_remote(settings)
    run = last_run(settings, split_remote(remote)[0])
    last_success, last_error = run.get("last_success", state.last_success), run.get("last_error", state.last_error)
    return [f"last sync:      {last_success or 'never'} to {remote}",
            f"waiting:        {count} segments ({megabytes(size)})",
            f"sync problem:   {last_error or 'none'}"]


def run_record_path(settings: Settings) -> Path:
    return resolve_runtime_path(settings.service.status_file).with_name(SYNC_RUN)


def last_run(settings: Settings, remote: str) -> dict:
    """The last run's ``sync-run.json`` (empty when there is none since boot, or it was to
    another remote)."""
    try:
        run = json.loads(run_record_path(settings).read_text())
    except (OSError, ValueError):
        return {}
    return run if isinstance(run, dict) and run.get("remote") == remote else {}


@contextmanager
def sync_lock(folder: Path) -> Iterator[None]:
    import fcntl  # here, not at the top: the office commands import this module on Windows too

    try:
        # Read-only and readable by all: a manual `sudo edge sync` must not lock the service
        # user out of the lock file it created (flock needs no write access).
        fd = os.open(folder / SYNC_LOCK, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        raise EdgeError(f"{folder}: recordings folder does not exist (nothing recorded yet?)") from None
    except OSError as exc:
        raise EdgeError(f"{folder}: cannot open {SYNC_LOCK} ({exc.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EdgeError(f"{folder}: another sync is running") from None
        yield
    finally:
        os.close(fd)
