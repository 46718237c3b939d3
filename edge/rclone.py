"""The rclone command as `edge sync` runs it: one place for the flags every call shares,
calls started side by side, and what a copy's own log proves about each file.

rclone checks every file it uploads: the size, then the hash the remote computes (SFTP runs
``md5sum`` on the server) against the hash of the bytes it read from the card while sending
them. It says so per file only in its debug log (``md5 = ... OK``); :class:`CopyLog` reads
that log, so a copy needs no second pass over the card or the remote. A backend without a
hash (WebDAV, a plain FTP server) proves nothing there, and those files are verified another
way by the caller.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from .errors import EdgeError

RCLONE = "rclone"
# rclone's exit codes for "directory not found" and "file not found".
NOT_FOUND = (3, 4)


class SyncFailed(Exception):
    """The remote could not be reached or refused the copy; one line says why."""


class Rclone:
    """The rclone command with the config, limits and timeouts every call shares."""

    def __init__(self, config: Path, timeout_s: float, bwlimit_mib_s: Optional[float] = None):
        self.config = Path(config)
        self.timeout_s = timeout_s
        self.bwlimit = bwlimit_mib_s
        self._jobs: list = []
        self._scratch: Optional[Path] = None

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

    def start(self, *args: str, allow: tuple = (), transfer: bool = False, log: str = "ERROR",
              env: Optional[dict] = None) -> "Job":
        """Start one rclone command and return at once; :meth:`Job.result` waits for it. Its
        output goes to unnamed temporary files, not pipes: nobody has to read while it runs."""
        # Few retries: a remote that is gone is reported within seconds, and the timer's next
        # run picks up where this one stopped anyway.
        command = [RCLONE, "--config", str(self.config), "--contimeout", f"{self.timeout_s:g}s",
                   "--timeout", f"{max(self.timeout_s, 60):g}s", "--retries", "1",
                   "--low-level-retries", "2", "--log-level", log, "--stats", "0"]
        if log == "DEBUG":
            command.append("--use-json-log")
        if transfer and self.bwlimit is not None:
            command += ["--bwlimit", f"{self.bwlimit:g}M"]
        job = Job(command + list(args), allow, env)
        self._jobs = [running for running in self._jobs if not running.finished] + [job]
        return job

    def stop(self) -> None:
        """Kill every rclone started here that is still running (a run that failed early), and
        remove the files made for them."""
        while self._jobs:
            self._jobs.pop().stop()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def scratch_folder(self) -> Path:
        """A new empty folder for files the commands read (lists, staged files), removed by :meth:`stop`."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="edge-sync-"))
        return Path(tempfile.mkdtemp(dir=self._scratch))

    def files_from(self, names: list) -> str:
        """A ``--files-from`` list of ``names``, removed by :meth:`stop`."""
        path = self.scratch_folder() / "files.txt"
        path.write_text("".join(name + "\n" for name in names))
        return str(path)

    def run(self, *args: str, allow: tuple = (), timeout: Optional[float] = None,
            transfer: bool = False) -> subprocess.CompletedProcess:
        """Run one rclone command to its end; an exit code other than 0 or those in ``allow``
        raises SyncFailed with rclone's own last error line."""
        return self.start(*args, allow=allow, transfer=transfer).result(timeout)

    def free_bytes(self, remote: str) -> Optional[int]:
        """Free space the remote reports, or None when its backend cannot tell."""
        try:
            result = self.run("about", "--json", remote, timeout=self.timeout_s * 2)
            return json.loads(result.stdout).get("free")
        except (SyncFailed, json.JSONDecodeError):
            return None


class Job:
    """One running rclone."""

    def __init__(self, command: list, allow: tuple, env: Optional[dict] = None):
        self.command = command
        self.allow = allow
        self._out = tempfile.TemporaryFile("w+", prefix="edge-rclone-")
        self._err = tempfile.TemporaryFile("w+", prefix="edge-rclone-")
        self._tailed = 0
        try:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err,
                                            text=True, preexec_fn=_die_with_parent,
                                            env=None if env is None else _environment(env))
        except FileNotFoundError:
            self._close()
            raise EdgeError("rclone is not installed (apt install rclone)") from None

    @property
    def finished(self) -> bool:
        """Whether its result was taken (or it was stopped)."""
        return self._out.closed

    def done(self) -> bool:
        return self.process.poll() is not None

    def wait_at_most(self, seconds: float) -> bool:
        """Whether it ended, waiting up to ``seconds`` for that."""
        try:
            self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def tail(self) -> str:
        """The whole lines it wrote to stderr since the last call, while it runs."""
        lines = b""
        while chunk := os.pread(self._err.fileno(), 1 << 20, self._tailed + len(lines)):
            lines += chunk
        lines = lines[:lines.rfind(b"\n") + 1]
        self._tailed += len(lines)
        return lines.decode(errors="replace")

    def stop(self) -> None:
        if not self.finished:
            self.process.kill()
            self.process.wait()
            self._close()

    def result(self, timeout: Optional[float] = None) -> subprocess.CompletedProcess:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self._close()
            raise SyncFailed(f"no answer from the remote within {timeout:g} s") from None
        self._out.seek(0)
        self._err.seek(0)
        result = subprocess.CompletedProcess(self.command, code, self._out.read(), self._err.read())
        self._close()
        if code != 0 and code not in self.allow:
            raise SyncFailed(rclone_error(result.stderr) or f"rclone {self._verb()} exited with {code}")
        return result

    def _verb(self) -> str:
        return next((word for word in self.command[1:] if word.isalpha() and word == word.lower()), "")

    def _close(self) -> None:
        self._out.close()
        self._err.close()


@dataclass
class CopyLog:
    """What an `rclone copy` run at log level DEBUG (JSON lines) said about each file, by
    its path under the source folder."""

    copied: set = field(default_factory=set)
    """Uploaded whole, the size checked."""
    proven: dict = field(default_factory=dict)
    """Among ``copied``, those whose hash on the remote rclone compared with the hash of the
    bytes it sent, and found equal: name -> "md5 = <hex>"."""
    corrupted: dict = field(default_factory=dict)
    """Uploaded but not equal on the remote (rclone removed the copy): name -> rclone's words.
    A hash the remote could not compute (it went away) is a failure, not a difference."""
    in_place: set = field(default_factory=set)
    """Not sent: the same size and time are already in the ``--compare-dest`` folder."""

    @classmethod
    def parse(cls, stderr: str) -> "CopyLog":
        log = cls()
        log.feed(stderr)
        for name in log.corrupted:
            log.copied.discard(name)
            log.proven.pop(name, None)
        log.proven = {name: proof for name, proof in log.proven.items() if name in log.copied}
        return log

    def feed(self, lines: str) -> list:
        """Read more of the log (whole lines); returns the files it says were copied and
        proven: rclone logs the proof of a file before it logs the file copied."""
        arrived = []
        for line in lines.splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            name, message = entry.get("object"), entry.get("msg", "")
            if not isinstance(name, str) or not isinstance(message, str):
                continue
            if message.startswith("corrupted on transfer"):
                if '""' not in message:
                    self.corrupted[name] = message
            elif message.startswith("Destination found in --compare-dest"):
                self.in_place.add(name)
            elif "Copied (" in message:
                self.copied.add(name)
                if name in self.proven and name not in self.corrupted:
                    arrived.append(name)
            elif entry.get("level") == "debug" and message.endswith(" OK") and " = " in message:
                self.proven[name] = message[:-3]
        return arrived


def isotime(ns: int) -> str:
    """An instant as rclone lists it (UTC, as many decimals as it needs)."""
    seconds, rest = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{rest:09d}".rstrip("0") if rest else "") + "Z"


def _instant_ns(text: str) -> Optional[int]:
    """Nanoseconds since the epoch of an RFC 3339 time as rclone writes it, or None."""
    try:
        head, dot, tail = text.partition(".")
        digits = "".join(c for c in tail if c.isdigit()) if dot else ""
        zone = tail[len(digits):] if dot else ""
        base = datetime.fromisoformat((head + zone).replace("Z", "+00:00"))
    except (ValueError, TypeError, AttributeError):
        return None
    return int(base.timestamp()) * 1_000_000_000 + int((digits + "000000000")[:9])


def same_time(there: str, recorded: str) -> bool:
    """Whether two times as rclone lists them are the same instant (whatever their zone)."""
    if there == recorded:
        return True
    a, b = _instant_ns(there), _instant_ns(recorded)
    return a is not None and a == b


def listed(result) -> dict:
    """path -> (size, modtime) from an `rclone lsjson` (empty where the folder does not exist)."""
    if result.returncode != 0:
        return {}
    return {item["Path"]: (item["Size"], item["ModTime"]) for item in json.loads(result.stdout or "[]")}


def rclone_error(stderr: str) -> str:
    """rclone's last error, without its date and level: the one line worth showing."""
    for line in reversed(stderr.strip().splitlines()):
        if line.startswith("{"):
            level, message = _json_log_line(line)
        else:
            _, level, message = _split_log_line(line)
        if level in ("ERROR", "CRITICAL", "") and message:
            # rclone repeats the cause; the tail after the last "Failed to ...:" is it.
            return message.removeprefix("Failed to ").strip()
    return ""


def _json_log_line(line: str) -> tuple:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return "", line.strip()
    if not isinstance(entry, dict):
        return "", line.strip()
    message = str(entry.get("msg", "")).strip()
    if entry.get("object"):
        message = f"{entry['object']}: {message}"
    return str(entry.get("level", "")).upper(), message


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


def _environment(changes: dict) -> dict:
    """This process's environment with ``changes`` (a None value removes the variable)."""
    merged = {**os.environ, **changes}
    return {key: value for key, value in merged.items() if value is not None}


def _die_with_parent() -> None:
    """In the child: die when `edge sync` dies (SIGKILL included), so no orphaned rclone
    keeps writing to the staging folder while the next run starts."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
