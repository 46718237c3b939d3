"""rclone's remote control: one `rclone rcd` that many small operations share (:class:`Daemon`),
and the :class:`Mover` that renames proven copies into place through it while `edge sync`
goes on copying, and copies the small index files to and from the remote in its turn
(:class:`Transfer`). The rclone command line itself is edge.rclone."""

from __future__ import annotations

import base64
import hashlib
import json
import posixpath
import queue
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Optional

from .rclone import Rclone, SyncFailed, rclone_error


class Daemon:
    """One `rclone rcd` on 127.0.0.1, called over one kept-alive HTTP connection: one process
    and one pool of open connections to the remote for many small operations (an SFTP session
    costs a handshake; a process, its start). Its password is random and reaches it in its
    environment, which only its user and root can read, not on its command line. Called from
    one thread at a time."""

    def __init__(self, rclone: Rclone):
        self.timeout_s = max(rclone.timeout_s, 60) + rclone.timeout_s
        password = secrets.token_urlsafe(24)
        # Without NOTIFY_SOCKET: rcd would tell systemd it is ready, as if it were the service.
        self.job = rclone.start("rcd", "--rc-addr", "127.0.0.1:0", log="NOTICE",
                                env={"RCLONE_RC_USER": "edge", "RCLONE_RC_PASS": password, "NOTIFY_SOCKET": None})
        # Imported here, once rcd starts, not when edge does: it costs milliseconds at every start.
        import http.client

        self._http = http.client
        self._headers = {"Content-Type": "application/json",
                         "Authorization": "Basic " + base64.b64encode(f"edge:{password}".encode()).decode()}
        # Starting a local process, not reaching the remote: not bounded by the remote's
        # connect timeout (seconds in tests), which a busy machine can exceed.
        self._start_s = max(rclone.timeout_s, 60)
        self._port: Optional[int] = None
        self._failed: Optional[str] = None
        self._heard = ""
        self._connection = None

    def call(self, method: str, **params) -> dict:
        """One rc call (e.g. ``operations/movefile``); a failure raises SyncFailed with rclone's words."""
        body = json.dumps(params).encode()
        reused = self._connection is not None
        if self._connection is None:
            self._connection = self._http.HTTPConnection("127.0.0.1", self._address(), timeout=self.timeout_s)
        try:
            self._connection.request("POST", f"/{method}", body, self._headers)
            response = self._connection.getresponse()
            answer = response.read()
        except (OSError, self._http.HTTPException) as exc:
            self._connection.close()
            self._connection = None
            if reused and isinstance(exc, (self._http.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
                return self.call(method, **params)  # rcd closed the idle connection: once more on a new one
            raise SyncFailed(f"rclone rcd: {method}: {exc}") from None
        try:
            result = json.loads(answer)
        except ValueError:
            result = None
        if response.status != 200 or not isinstance(result, dict):
            reason = result.get("error") if isinstance(result, dict) else None
            raise SyncFailed(reason or f"rclone rcd: {method} failed ({response.status})")
        return result

    def _address(self) -> int:
        deadline = time.monotonic() + self._start_s
        while self._port is None and self._failed is None:
            self._heard += self.job.tail()
            found = re.search(r"Serving remote control on http://127\.0\.0\.1:(\d+)/", self._heard)
            if found:
                self._port = int(found.group(1))
            elif self.job.wait_at_most(0.01) or time.monotonic() > deadline:
                self.job.stop()
                self._failed = rclone_error(self._heard) or "rclone rcd did not start"
        if self._failed is not None:
            raise SyncFailed(self._failed)
        return self._port


class Transfer:
    """Small files copied between a local folder and the remote, one at a time in the mover's
    turn: without a process, an SSH handshake and a session of their own, which cost a run
    more than the files do. An upload is then proven by the remote's own hash of each copy."""

    def __init__(self, folder: Path, names: list, up: bool):
        self.folder = folder
        self.names = names
        self.up = up
        self.proven: list = []
        """Uploads whose copy the remote hashes as the local file hashes."""
        self.unproven: list = []
        """Uploads made, but the backend keeps no hash that Python computes too (WebDAV)."""
        self.error: Optional[str] = None
        """Why the first copy that failed did (nothing after it was copied), or None."""
        self._done = threading.Event()

    def wait(self) -> "Transfer":
        self._done.wait()
        return self

    def end(self) -> None:
        self._done.set()


class Mover:
    """Renames files from one folder of a remote to another, one at a time in the order they
    are given, through a :class:`Daemon` in a thread of its own: the caller hands over each
    file as soon as it may move and goes on. The first failure stops it; nothing after it moves."""

    def __init__(self, daemon: Daemon, source: str, destination: str):
        # One root for both folders: one connection serves both ends of every rename.
        name, _, source_path = source.partition(":")
        destination_path = destination.partition(":")[2]
        root = posixpath.commonpath([source_path, destination_path])
        self.daemon = daemon
        self._root = f"{name}:{root}"
        self._source = posixpath.relpath(source_path, root or ".")
        self._destination = posixpath.relpath(destination_path, root or ".")
        self.moved: list = []
        self.error: Optional[str] = None
        self._features: dict = {}
        self._features_error: Optional[str] = None
        self._asked = threading.Event()
        self._abandoned = False
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="edge-sync-mover", daemon=True)
        self._thread.start()

    def features(self) -> dict:
        """The backend's features as `rclone backend features` gives them (``Hashes``,
        ``Precision``...), asked when the mover connected."""
        self._asked.wait()
        if self._features_error is not None:
            raise SyncFailed(self._features_error)
        return self._features

    def move(self, names: list) -> None:
        for name in names:
            self._queue.put(name)

    def upload(self, folder: Path, names: list) -> Transfer:
        """Copy ``names`` from the local ``folder`` into the source folder (replacing what is
        there) after what was handed over before; :meth:`Transfer.wait` for the outcome."""
        return self._transfer(Transfer(folder, names, up=True))

    def download(self, names: list, folder: Path) -> Transfer:
        """Copy ``names`` from the destination folder into the local ``folder``, as `rclone
        cat` reads them (the remote's hash unasked: a remote that cannot hash fails where what
        it holds is verified, not here); a file not there is left out."""
        return self._transfer(Transfer(folder, names, up=False))

    def _transfer(self, transfer: Transfer) -> Transfer:
        self._queue.put(transfer)
        return transfer

    def finish(self) -> Optional[str]:
        """Wait until everything handed over moved (or the first failure); returns why it
        failed, or None. The source folders it emptied are removed."""
        self._queue.put(None)
        self._thread.join()
        # Folder by folder, not `operations/rmdirs`, which walks the whole source first.
        for folder in sorted({posixpath.dirname(name) for name in self.moved} - {""}, reverse=True):
            try:
                self.daemon.call("operations/rmdir", fs=self._root, remote=posixpath.join(self._source, folder))
            except SyncFailed:
                pass  # not empty (a copy that failed to verify waits there), or gone
        return self.error

    def remove(self, names: list) -> Optional[str]:
        """Delete files from the destination folder, in order, once everything handed over
        moved (after :meth:`finish`); returns why the first one failed, or None. A file
        already gone counts as removed."""
        for name in names:
            try:
                self.daemon.call("operations/deletefile", fs=self._root, remote=posixpath.join(self._destination, name))
            except SyncFailed as exc:
                if "not found" not in str(exc):
                    return str(exc)
        return None

    def close(self) -> None:
        """Stop without moving what is still waiting (a run that failed)."""
        self._abandoned = True
        self._queue.put(None)
        self._thread.join()

    def _work(self) -> None:
        try:
            # Connects while the caller still has nothing to move.
            self._features = self.daemon.call("operations/fsinfo", fs=self._root)
        except SyncFailed as exc:
            self._features_error = str(exc)
        finally:
            self._asked.set()
        while (item := self._queue.get()) is not None:
            try:
                if isinstance(item, Transfer):
                    self._copy(item)
                elif self.error is None and not self._abandoned:
                    self._move(item)
            except Exception as exc:
                # A bug: the run fails in one line, and nothing handed over later waits for a
                # thread that is gone (the index's upload did, for ever).
                self.error = self.error or f"the mover failed: {exc!r}"

    def _move(self, name: str) -> None:
        try:
            # Like `rclone move --ignore-times`: a file already there is replaced.
            self.daemon.call("operations/movefile", srcFs=self._root, dstFs=self._root,
                             srcRemote=posixpath.join(self._source, name),
                             dstRemote=posixpath.join(self._destination, name),
                             _config={"IgnoreTimes": True})
            self.moved.append(name)
        except SyncFailed as exc:
            self.error = str(exc)

    def _copy(self, transfer: Transfer) -> None:
        try:
            if self._abandoned or self._features_error is not None:
                raise SyncFailed(self._features_error or "the run ended first")
            for name in transfer.names:
                if transfer.up:
                    self._upload(transfer, name)
                else:
                    self._download(transfer, name)
        except SyncFailed as exc:
            transfer.error = str(exc)
        except Exception as exc:
            transfer.error = f"the mover failed: {exc!r}"
            raise
        finally:
            transfer.end()

    def _download(self, transfer: Transfer, name: str) -> None:
        try:
            self.daemon.call("operations/copyfile", srcFs=self._root, srcRemote=posixpath.join(self._destination, name),
                             dstFs=str(transfer.folder), dstRemote=name, _config={"IgnoreChecksum": True})
        except SyncFailed as exc:
            if "not found" not in str(exc):  # a file not there is left out
                raise SyncFailed(f"{name}: {exc}") from None

    def _upload(self, transfer: Transfer, name: str) -> None:
        remote = posixpath.join(self._source, name)
        try:
            self.daemon.call("operations/copyfile", srcFs=str(transfer.folder), srcRemote=name, dstFs=self._root,
                             dstRemote=remote, _config={"IgnoreTimes": True})
        except SyncFailed as exc:
            raise SyncFailed(f"{name}: {exc}") from None
        hashes = [known for known in self._features.get("Hashes") or () if known in hashlib.algorithms_guaranteed]
        if not hashes:
            transfer.unproven.append(name)
            return
        item = self.daemon.call("operations/stat", fs=self._root, remote=remote,
                                opt={"showHash": True, "hashTypes": hashes[:1]}).get("item") or {}
        there = (item.get("Hashes") or {}).get(hashes[0])
        if not there:
            transfer.unproven.append(name)
        elif there == hashlib.new(hashes[0], (transfer.folder / name).read_bytes()).hexdigest():
            transfer.proven.append(name)
        # A copy that differs is neither: it never counts, and is not downloaded to be trusted.
