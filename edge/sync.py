"""Copying recordings to the school's storage over the network: `edge sync`, driven by rclone.

rclone does the talking (SFTP, SMB, WebDAV, Google Drive, OneDrive, with its own retries);
this module decides what to send and when a copy counts. A run:

1. lists the remote folder once and forgets the verification of any copy that has gone or
   changed there since (size or modification time), so it is sent again;
2. checks each waiting segment on the card against its manifest SHA-256 (a segment that
   rotted on the card is reported, not sent);
3. uploads what the remote lacks into a staging folder beside the device's folder
   (``<parent>/.incoming/<device>``): rclone 1.60 writes SFTP and WebDAV uploads under
   their final name, so a killed upload would otherwise leave half a file where the
   office looks;
4. verifies every staged file against the card (`rclone check`: by hash where the backend
   keeps one, by downloading it otherwise) and moves only the verified ones into place,
   server-side (a rename);
5. merges their manifest lines into the remote ``manifest.jsonl`` and ``SHA256SUMS``
   (staged and verified the same way), and only then counts them as synced;
6. with ``sync.delete_after_verified``, deletes what is synced from the card.

What is synced lives in ``sync-state.json`` beside the manifest, replaced atomically and
fsynced like every other file the recorder writes; losing it costs a re-verification, not
a copy. Only finished segments (listed in the manifest) are ever sent, never a ``.part``.
Nothing here needs the content of the recordings beyond its bytes: encrypted segments
leave as the ciphertext they are on the card.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import posixpath
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterator, Optional

from .config import Settings, SyncSettings, add_config_argument, device_name, load_config, resolve_data_path
from .entries import checked_segments
from .errors import EdgeError
from .export import SUMS, hash_from_medium, merge_manifest, remove_segments, sha256sums
from .manifest import is_tombstone, line_entries
from .notify import ServiceNotifier
from .storage import MANIFEST, iter_segments, safe_name, write_json_atomically

log = logging.getLogger(__name__)

SYNC_STATE = "sync-state.json"
SYNC_LOCK = "sync.lock"
STAGING = ".incoming"
RCLONE = "rclone"
# rclone's exit codes for "directory not found" and "file not found".
NOT_FOUND = (3, 4)


class SyncFailed(Exception):
    """The remote could not be reached or refused the copy; one line says why."""


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
                f"{_mb(self.uploaded_bytes)}); {self.waiting} waiting ({_mb(self.waiting_bytes)})")
        if self.deleted:
            text += f"; {self.deleted} deleted from the card"
        return text

    def status_line(self) -> str:
        """The one line systemd shows as STATUS=."""
        state = f"failed: {self.error}" if self.error else "ok"
        return f"sync {state} · {self.uploaded} uploaded · {self.waiting} waiting ({_mb(self.waiting_bytes)})"


class Rclone:
    """The rclone command with the config, limits and timeouts every call shares."""

    def __init__(self, config: Path, timeout_s: float, bwlimit_mib_s: Optional[float] = None):
        self.config = Path(config)
        self.timeout_s = timeout_s
        self.bwlimit = bwlimit_mib_s

    def check_ready(self) -> None:
        if shutil.which(RCLONE) is None:
            raise EdgeError("rclone is not installed (apt install rclone)")
        try:
            with open(self.config, "rb"):
                pass
        except FileNotFoundError:
            raise EdgeError(f"{self.config}: rclone config not found (sync.rclone_config; "
                            "create it with: rclone config --config FILE)") from None
        except OSError as exc:
            raise EdgeError(f"{self.config}: cannot read the rclone config ({exc.strerror})") from None

    def run(self, *args: str, allow: tuple = (), timeout: Optional[float] = None,
            transfer: bool = False) -> subprocess.CompletedProcess:
        """Run one rclone command; an exit code other than 0 or those in ``allow`` raises
        SyncFailed with rclone's own last error line."""
        # Few retries: a remote that is gone is reported within seconds, and the timer's next
        # run picks up where this one stopped anyway.
        command = [RCLONE, "--config", str(self.config), "--contimeout", f"{self.timeout_s:g}s",
                   "--timeout", f"{max(self.timeout_s, 60):g}s", "--retries", "1",
                   "--low-level-retries", "2", "--log-level", "ERROR", "--stats", "0", *args]
        if transfer and self.bwlimit is not None:
            command[1:1] = ["--bwlimit", f"{self.bwlimit:g}M"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                    preexec_fn=_die_with_parent)
        except FileNotFoundError:
            raise EdgeError("rclone is not installed (apt install rclone)") from None
        except subprocess.TimeoutExpired:
            raise SyncFailed(f"no answer from the remote within {timeout:g} s") from None
        if result.returncode != 0 and result.returncode not in allow:
            raise SyncFailed(rclone_error(result.stderr) or f"rclone {args[0]} exited with {result.returncode}")
        return result

    def listing(self, remote: str) -> dict:
        """path -> (size, modtime) of every file under ``remote``; empty when it does not exist."""
        result = self.run("lsjson", "-R", "--files-only", "--no-mimetype", remote, allow=NOT_FOUND)
        if result.returncode != 0:
            return {}
        return {item["Path"]: (item["Size"], item["ModTime"]) for item in json.loads(result.stdout or "[]")}

    def hashes(self, remote: str) -> list:
        """The hash types the remote's backend keeps (empty: verification must download)."""
        result = self.run("backend", "features", remote)
        return json.loads(result.stdout).get("Hashes") or []

    def free_bytes(self, remote: str) -> Optional[int]:
        """Free space the remote reports, or None when its backend cannot tell."""
        try:
            result = self.run("about", "--json", remote, timeout=self.timeout_s * 2)
            return json.loads(result.stdout).get("free")
        except (SyncFailed, json.JSONDecodeError):
            return None


def rclone_error(stderr: str) -> str:
    """rclone's last error, without its date and level: the one line worth showing."""
    for line in reversed(stderr.strip().splitlines()):
        _, level, message = _split_log_line(line)
        if level in ("ERROR", "CRITICAL", "") and message:
            # rclone repeats the cause; the tail after the last "Failed to ...:" is it.
            return message.removeprefix("Failed to ").strip()
    return ""


def _split_log_line(line: str) -> tuple:
    # "2026/11/24 21:27:43 ERROR : path: message" or "2026/11/24 21:27:43 Failed to cat: ..."
    parts = line.split(" ", 2)
    if len(parts) == 3 and parts[0].count("/") == 2 and parts[1].count(":") == 2:
        rest = parts[2]
        for level in ("CRITICAL", "ERROR", "NOTICE", "INFO", "DEBUG"):
            if rest.startswith(level):
                return parts[0], level, rest[len(level):].lstrip(" :").strip()
        return parts[0], "", rest.strip()
    return "", "", line.strip()


def _die_with_parent() -> None:
    """In the child: die when `edge sync` dies (SIGKILL included), so no orphaned rclone
    keeps writing to the staging folder while the next run starts."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


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


def make_rclone(sync: SyncSettings, transfer: bool = True) -> Rclone:
    return Rclone(resolve_data_path(sync.rclone_config), sync.timeout_s,
                  sync.bwlimit if transfer else None)


class RemoteSync:
    """Brings one recordings folder's finished segments to an rclone remote, verified."""

    def __init__(self, recordings_dir: Path, remote: str, rclone: Rclone, delete_after_verified: bool = False,
                 out=None):
        self.root = Path(recordings_dir)
        self.remote, self.staging = split_remote(remote)
        self.rclone = rclone
        self.delete = delete_after_verified
        self.out = out or sys.stdout
        self._verify_by: Optional[list] = None

    def run(self, dry_run: bool = False) -> SyncReport:
        self.rclone.check_ready()
        with _sync_lock(self.root):
            state = SyncState.load(self.root)
            if state.remote != self.remote:
                state = SyncState(remote=self.remote, last_success=None)
            report = SyncReport()
            try:
                self._sync(state, report, dry_run)
            except SyncFailed as exc:
                report.error = str(exc)
            if not dry_run:
                self._record(state, report)
            return report

    def _sync(self, state: SyncState, report: SyncReport, dry_run: bool) -> None:
        local = {entry["file"]: entry for entry in checked_segments(self.root)}
        sizes = {name: _size(self.root / name) for name in local}
        # Verifications of segments no longer on the card are of no more use.
        for name in list(state.synced):
            if name not in local:
                del state.synced[name]
        remote_files = self.rclone.listing(self.remote)
        self._forget_changed(state, remote_files)
        pending = [name for name in local if name not in state.synced]
        self._count_waiting(report, pending, sizes)
        if dry_run:
            for name in pending:
                self.out.write(f"would copy {name} ({_mb(sizes[name])})\n")
            return
        pending = self._readable_as_recorded(pending, local, report)
        # Already in place (a run stopped before it recorded them, or a lost state file):
        # verified where they are, sent again only if that fails.
        in_place = [n for n in pending if remote_files.get(n, (None,))[0] == sizes[n]]
        good, _ = self._verify(in_place, self.remote)
        upload = [n for n in pending if n not in good]
        copy_error = None
        if upload:
            try:
                self._copy(upload, self.staging)
            except SyncFailed as exc:
                copy_error = exc
            try:
                staged, bad = self._verify(upload, self.staging, tolerate_missing=copy_error is not None)
            except SyncFailed as verify_error:
                raise (copy_error or verify_error) from None  # the remote is gone: the first failure says why
            if copy_error:
                # The remote answers: what arrived whole still counts, the rest waits.
                copy_error = self._explain_copy_failure(copy_error, upload, sizes)
            for name in bad:
                report.problems.append(f"{name}: the copy on the remote does not match the card, "
                                       "sent again next run")
            if bad:
                # Same size and time as the card's: only a fresh upload replaces it.
                self.rclone.run("delete", "--files-from", self._list_file(bad), self.staging)
            if staged:
                self._move_into_place(staged)
            report.uploaded = len(staged)
            report.uploaded_bytes = sum(sizes[n] for n in staged)
            good += staged
        if good:
            placed = self.rclone.listing(self.remote)
            for name in good:
                if name in placed:
                    size, modtime = placed[name]
                    state.synced[name] = {"sha256": local[name]["sha256"], "size": size,
                                          "modtime": modtime, "listed": False}
            # Recorded before the manifest goes up: a run stopped in between re-sends no audio.
            state.save(self.root)
        try:
            self._publish_manifest(state, local)
        except SyncFailed:
            if copy_error:
                raise SyncFailed(copy_error) from None  # a full remote fails both: the first says why
            raise
        report.verified = len(good)
        self._count_waiting(report, [n for n in local if not state.is_synced(n)], sizes)
        if self.delete:
            self._delete_synced(state, local, report)
        if copy_error:
            raise SyncFailed(copy_error)

    def _forget_changed(self, state: SyncState, remote_files: dict) -> None:
        for name, record in list(state.synced.items()):
            there = remote_files.get(name)
            if there is None:
                log.warning("%s: gone from %s, copying it again", name, self.remote)
            elif tuple(there) != (record["size"], record["modtime"]):
                log.warning("%s: changed on %s since it was verified, verifying it again", name, self.remote)
            else:
                continue
            del state.synced[name]

    def _readable_as_recorded(self, pending: list, local: dict, report: SyncReport) -> list:
        """The waiting segments whose bytes on the card still match their manifest hash."""
        sound = []
        for name in pending:
            try:
                matches = hash_from_medium(self.root / name) == local[name]["sha256"]
            except FileNotFoundError:
                continue  # deleted under us (a full card's rotation): nothing left to send
            except OSError as exc:
                report.problems.append(f"{name}: cannot read it on the card ({exc.strerror}), not synced")
                continue
            if matches:
                sound.append(name)
            else:
                report.problems.append(f"{name}: corrupted on the card (its SHA-256 does not match the "
                                       "manifest), not synced")
        return sound

    def _verification(self) -> list:
        """rclone check's way of comparing: by hash when the backend keeps one, else by
        downloading each file and comparing bytes."""
        if self._verify_by is None:
            self._verify_by = [] if self.rclone.hashes(self.remote) else ["--download"]
        return self._verify_by

    def _verify(self, names: list, remote: str, tolerate_missing: bool = False,
                source: Optional[Path] = None) -> tuple:
        """(matching, differing) among ``names`` under ``remote``; a file missing there counts
        as neither when an interrupted copy is being collected (``tolerate_missing``)."""
        if not names:
            return [], []
        result = self.rclone.run("check", "--one-way", "--combined", "-", *self._verification(),
                                 "--files-from", self._list_file(names), str(source or self.root), remote,
                                 allow=(1,))
        marks = {}
        for line in result.stdout.splitlines():
            mark, _, name = line.partition(" ")
            marks[name] = mark
        missing = [n for n in names if marks.get(n) == "-"]
        if missing and not tolerate_missing and remote == self.staging:
            raise SyncFailed(f"{missing[0]}: missing on the remote after copying it")
        if any(marks.get(n) == "!" for n in names):
            raise SyncFailed(rclone_error(result.stderr) or "the remote failed while verifying")
        return ([n for n in names if marks.get(n) == "="],
                [n for n in names if marks.get(n) == "*"])

    def _copy(self, names: list, remote: str, source: Optional[Path] = None) -> None:
        # rclone's own after-upload hash comparison is skipped: _verify does it, for every
        # file, and a file is only counted when that passes.
        self.rclone.run("copy", "--files-from", self._list_file(names), "--ignore-checksum",
                        str(source or self.root), remote, transfer=True)

    def _move_into_place(self, names: list) -> None:
        # --ignore-times: a damaged copy of the same size (and, without modification times,
        # the same everything rclone compares) is replaced, not kept.
        self.rclone.run("move", "--files-from", self._list_file(names), "--ignore-times",
                        "--delete-empty-src-dirs", self.staging, self.remote)

    def _explain_copy_failure(self, exc: SyncFailed, upload: list, sizes: dict) -> str:
        needed = sum(sizes[n] for n in upload)
        free = self.rclone.free_bytes(self.staging)  # the copy made it; the device folder may not exist yet
        if free is not None and free < needed:
            return f"the remote is full ({_mb(free)} free, {_mb(needed)} to copy): {exc}"
        return str(exc)

    def _publish_manifest(self, state: SyncState, local: dict) -> None:
        """Merge the manifest lines of newly synced segments into the remote manifest."""
        unlisted = [name for name, record in state.synced.items() if not record["listed"]]
        if not unlisted:
            return
        current = self.rclone.run("cat", posixpath.join(self.remote, MANIFEST), allow=NOT_FOUND)
        # Checked like the card's own lines: a damaged line there is skipped with a warning.
        existing = [entry for entry in line_entries(current.stdout.encode().splitlines(keepends=True),
                                                    posixpath.join(self.remote, MANIFEST))
                    if not is_tombstone(entry)] if current.returncode == 0 else []
        # New lines in the card's order after those already there (seq alone cannot order
        # them: it starts again at 1 once every segment has left the card).
        merged = merge_manifest(existing, [local[name] for name in local if name in unlisted])
        with tempfile.TemporaryDirectory(prefix="edge-sync-") as folder:
            folder = Path(folder)
            (folder / MANIFEST).write_text("".join(json.dumps(entry) + "\n" for entry in merged))
            (folder / SUMS).write_text("".join(line + "\n" for line in sha256sums(merged)))
            index = [MANIFEST, SUMS]
            self._copy(index, self.staging, source=folder)
            good, bad = self._verify(index, self.staging, source=folder)
            if bad or len(good) != len(index):
                raise SyncFailed(f"the copy of {MANIFEST} on the remote does not match, sent again next run")
            self._move_into_place(index)
        for name in unlisted:
            state.synced[name]["listed"] = True
        state.save(self.root)

    def _delete_synced(self, state: SyncState, local: dict, report: SyncReport) -> None:
        synced = [local[name] for name in local if state.is_synced(name)]
        removed = remove_segments(self.root, synced, report.problems,
                                  f"synced: copy verified on {self.remote}")
        for entry in removed:
            state.synced.pop(entry["file"], None)
        report.deleted = len(removed)

    def _count_waiting(self, report: SyncReport, names: list, sizes: dict) -> None:
        report.waiting = len(names)
        report.waiting_bytes = sum(sizes[n] for n in names)

    def _record(self, state: SyncState, report: SyncReport) -> None:
        now = datetime.now().astimezone().isoformat(timespec="seconds")
        state.last_attempt = now
        state.last_error = report.error or (report.problems[-1] if report.problems else None)
        if report.ok and report.waiting == 0:
            state.last_success = now
        state.waiting, state.waiting_bytes = report.waiting, report.waiting_bytes
        state.save(self.root)

    def _list_file(self, names: list) -> str:
        """A --files-from list, kept for the life of this process."""
        handle = tempfile.NamedTemporaryFile("w", prefix="edge-sync-", suffix=".txt", delete=False)
        with handle:
            handle.write("".join(name + "\n" for name in names))
        _LIST_FILES.append(handle.name)
        return handle.name


_LIST_FILES: list = []


def _remove_list_files() -> None:
    while _LIST_FILES:
        try:
            os.unlink(_LIST_FILES.pop())
        except OSError:
            pass


@contextmanager
def _sync_lock(folder: Path) -> Iterator[None]:
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
        _remove_list_files()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def backlog(recordings_dir: Path, state: SyncState) -> tuple:
    """(segments, bytes) on the card that have no verified copy on the remote yet."""
    names = [e["file"] for e in iter_segments(recordings_dir) if not state.is_synced(e["file"])]
    return len(names), sum(_size(Path(recordings_dir) / n) for n in names)


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
    return [f"last sync:      {state.last_success or 'never'} to {configured_remote(settings)}",
            f"waiting:        {count} segments ({_mb(size)})",
            f"sync problem:   {state.last_error or 'none'}"]


def add_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "sync", help="copy recordings to the remote in sync.remote through rclone, verified",
        description="Copy finished segments and their manifest lines to the rclone remote named in "
                    "sync.remote, verify every copy and remember what is synced. Re-running resumes.")
    parser.add_argument("--once", action="store_true",
                        help="one pass (the timer's way); without it, passes repeat while new segments "
                             "were finished during the last one")
    parser.add_argument("--dry-run", action="store_true", help="list what would be copied, copy nothing")
    add_config_argument(parser)
    parser.set_defaults(func=run_sync_command)


def run_sync_command(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    remote = configured_remote(settings)
    sync = RemoteSync(resolve_data_path(settings.storage.recordings_dir), remote, make_rclone(settings.sync),
                      delete_after_verified=settings.sync.delete_after_verified)
    notifier = ServiceNotifier()
    try:
        report = last = sync.run(dry_run=args.dry_run)
        # Segments finished during a long pass go in the next; a pass with nothing to send ends.
        while not (args.once or args.dry_run) and last.ok and last.uploaded:
            last = sync.run()
            report = report.then(last)
        for problem in report.problems:
            print(f"edge: {problem}", file=sys.stderr)
        if report.error:
            print(f"edge: sync to {sync.remote} failed: {report.error}", file=sys.stderr)
        if not args.dry_run:
            notifier.status(report.status_line())
            print(report.summary(sync.remote))
    finally:
        notifier.close()
    return 0 if report.ok else 1
