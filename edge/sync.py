"""Copying recordings to the school's storage over the network: `edge sync`, driven by rclone.

rclone does the talking (SFTP, SMB, WebDAV, Google Drive, OneDrive, with its own retries);
this module decides what to send and when a copy counts. A run reads each waiting segment
from the card once and has the remote hash each copy once:

1. it starts, side by side, the listing of the card's segments verified earlier, in their
   day folders only (one that has gone or changed there since, in size or modification time,
   is forgotten and sent again; a first sync, with nothing verified there, lists only what it
   finds in place), the fetch of the remote ``manifest.jsonl`` of each day folder it sends
   into (edge.sync_index, through the mover's rcd), and one `rclone copy` of every waiting segment into
   a staging folder beside the device's folder (``<parent>/.incoming/<device>``): rclone 1.60
   writes SFTP and WebDAV uploads under their final name, so a killed upload would otherwise
   leave half a file where the office looks (rclone makes the folders it copies into, and two
   rclone processes making one folder at once fail one of them: any other copy into the
   staging folder, the index's upload included, starts only once a copy has put a file in each
   folder it needs, or no copy runs). A segment already in place with the card's size and
   time (a lost state file, a run stopped before it recorded it) is not sent
   (``--compare-dest``) but verified where it is (`rclone check`), and sent only if that fails;
2. meanwhile it reads each waiting segment from the card (not the page cache) and compares it
   with its manifest SHA-256: a segment that rotted on the card is reported, and its upload
   deleted from the staging folder, never moved into place (rclone then reads the segments
   from the cache this read fills, not from the card a second time);
3. a staged copy counts as verified only when rclone's own check after the upload proved it:
   the hash the remote computes of the file (SFTP runs ``md5sum`` on the server) equal to the
   hash of the bytes rclone read from the card while sending them, which its debug log says
   file by file (:class:`edge.rclone.CopyLog`). Where the backend keeps no hash (WebDAV), the
   staged copy is downloaded and its SHA-256 compared with the manifest's;
4. those manifests, merged with the lines of the verified segments, and each day's
   ``SHA256SUMS`` are staged beside them through the mover's rcd (no process of their own)
   and proven by the remote's hash of each copy, equal to that of the file sent (or, with no
   hash, downloaded); the mover then renames the segments into place and, after them, the
   manifests (one at a time);
5. only then are they recorded as synced; with ``sync.delete_after_verified``, what is synced
   is deleted from the card.

What is synced is kept in ``sync-state.json`` (edge.sync_state); the card side of the proof
is edge.sync_card; the copies into the staging folder and the moves out of it are
edge.sync_staging. Only finished segments (listed in the manifest) are ever sent, never a
``.part``. Nothing here needs the content of the recordings beyond its bytes: encrypted
segments leave as the ciphertext they are on the card.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Optional

from .config import SyncSettings, add_config_argument, load_config, resolve_data_path
from .entries import checked_segments
from .offload import megabytes, remove_segments
from .notify import ServiceNotifier
from .rclone import NOT_FOUND, Job, Rclone, SyncFailed, isotime, listed, rclone_error, same_time
from .rclone_rc import Transfer
from .storage import MANIFEST, write_json_atomically
from .sync_card import CardCheck
from .sync_index import RemoteIndex
from .sync_staging import Staging
from .sync_state import (SYNC_STATE, SyncReport, SyncState, configured_remote, file_size, lasting, run_record_path,
                         split_remote, sync_lock)

log = logging.getLogger(__name__)

def make_rclone(sync: SyncSettings) -> Rclone:
    """rclone as the settings give it; its bandwidth limit holds only the commands that transfer."""
    return Rclone(resolve_data_path(sync.rclone_config), sync.timeout_s, sync.bwlimit)


class RemoteSync:
    """Brings one recordings folder's finished segments to an rclone remote, verified."""

    def __init__(self, recordings_dir: Path, remote: str, rclone: Rclone, delete_after_verified: bool = False,
                 out=None, run_record: Optional[Path] = None):
        self.root = Path(recordings_dir)
        self.remote, self.staging = split_remote(remote)
        self.rclone = rclone
        self.delete = delete_after_verified
        self.run_record = run_record
        """Where each run's time and outcome are published (``sync-run.json``), or None."""
        self.out = out or sys.stdout
        self._backend: Optional[dict] = None
        """The remote's backend features (hashes, time precision), once asked in a run."""
        self._index: dict = {}
        """path -> SHA-256 of the manifests and SHA256SUMS being sent (edge.sync_index)."""
        self._remote_index: Optional[RemoteIndex] = None
        self._staging: Optional[Staging] = None
        """This run's copies into the staging folder and the mover taking them out of it."""

    def run(self, dry_run: bool = False) -> SyncReport:
        self.rclone.check_ready()
        with sync_lock(self.root):
            state = SyncState.load(self.root)
            on_card = lasting(self._on_card())
            if state.remote != self.remote:
                state = SyncState(remote=self.remote)  # what was verified on another remote proves nothing here
            report = SyncReport()
            self._staging = None
            try:
                self._sync(state, report, dry_run)
            except SyncFailed as exc:
                report.error = str(exc)
            finally:
                if self._staging is not None:
                    self._staging.close()
                self.rclone.stop()
            if not dry_run:
                self._record(state, report, on_card)
            return report

    def _sync(self, state: SyncState, report: SyncReport, dry_run: bool) -> None:
        local = {entry["file"]: entry for entry in checked_segments(self.root)}
        sizes = {name: file_size(self.root / name) for name in local}
        # Verifications of segments no longer on the card are of no more use.
        for name in list(state.synced):
            if name not in local:
                del state.synced[name]
        waiting = [name for name in local if name not in state.synced]
        unlisted = [name for name, record in state.synced.items() if not record["listed"]]
        if dry_run:
            if state.synced:
                self._forget_changed(state, listed(self._start_listing(list(state.synced)).result()))
            pending = [name for name in local if name not in state.synced]
            self._count_waiting(report, pending, sizes)
            for name in pending:
                self.out.write(f"would copy {name} ({megabytes(sizes[name])})\n")
            return
        # Nothing verified on this remote yet, nothing to forget: no listing (what a first sync
        # finds in place is listed then, for the times to record).
        listing = self._start_listing(list(state.synced)) if state.synced else None
        card = CardCheck(self.root, local, report.problems)
        staging = self._staging = Staging(self.rclone, self.root, self.remote, self.staging, card)
        # What waits goes up at once, beside the listing, the remote manifest and the mover
        # (which connects and asks the backend's features); the card check reads it meanwhile.
        copies = [(waiting, staging.start(waiting))] if waiting else []
        if waiting:
            staging.moving()
        remote_index = self._remote_index = RemoteIndex(self.rclone, self.remote, staging.moving)
        if waiting or unlisted:
            remote_index.fetch(waiting + unlisted)
        remote_files = {}
        if listing is not None:
            card.check(waiting, until=listing.done)
            remote_files = listed(listing.result())
            self._forget_changed(state, remote_files)
        # Copies that have gone or changed on the remote since they were verified go again.
        again = [name for name in local if name not in state.synced and name not in waiting]
        if again:
            copies.append((again, staging.start(again)))
        pending = waiting + again
        self._count_waiting(report, pending, sizes)
        if not pending and not unlisted:
            return
        remote_index.fetch(pending + unlisted)
        staging.moving()
        card.check(pending)
        # The manifest goes up while the segments do, listing every one whose card check
        # passed; it is sent again only if one of them does not arrive.
        remote_index.read()
        expected = unlisted + card.sound(pending)
        index = self._stage_index(expected, local)
        staged, in_place, copy_error = [], [], None
        for names, copy in copies:
            sent, reason = staging.collect(copy, names, local, sizes, report)
            staged += sent.staged
            in_place += sent.in_place
            copy_error = copy_error or reason
        # Found in place with the card's size and time (a lost state file, a run stopped
        # before it recorded them): verified where they are, sent again only if that fails.
        if in_place and listing is None:
            remote_files = listed(self._start_listing(in_place).result())
        good = self._verify_in_place(in_place)
        if len(good) < len(in_place):
            differing = [n for n in in_place if n not in good]
            resent, reason = staging.collect(staging.start(differing, replace=True),
                                             differing, local, sizes, report)
            staged += resent.staged
            copy_error = copy_error or reason
        new = [name for name in pending if name in set(good) | set(staged)]
        if not (unlisted or new):
            if copy_error:
                raise SyncFailed(copy_error)
            return
        try:
            if unlisted + new != expected:
                index = self._stage_index(unlisted + new, local)  # replaces the one staged
            self._place(index, [n for n in new if n in staged], state, local, sizes, remote_files, unlisted,
                        [n for n in new if n in good])
        except SyncFailed:
            if copy_error:
                raise SyncFailed(copy_error) from None  # a full remote fails both: the first says why
            raise
        report.uploaded = len([n for n in staged if state.is_synced(n)])
        report.uploaded_bytes = sum(sizes[n] for n in staged if state.is_synced(n))
        report.verified = len([n for n in new if state.is_synced(n)])
        self._count_waiting(report, [n for n in local if not state.is_synced(n)], sizes)
        if self.delete:
            self._delete_synced(state, local, report)
        if copy_error:
            raise SyncFailed(copy_error)

    def _start_listing(self, names: list) -> Job:
        """List ``names`` on the remote (those there): rclone reads only the folders they lie
        in, so a run costs what the card holds, not the years of recordings the remote keeps.
        One folder at a time: over SFTP each folder read beside another opens an SSH
        connection of its own, whose login costs more than the read (five day folders on
        loopback: 0.55 s with rclone's 8 checkers, 0.16 s with one)."""
        return self.rclone.start("lsjson", "-R", "--files-only", "--no-mimetype", "--checkers", "1", "--files-from",
                                 self.rclone.files_from(names), self.remote, allow=NOT_FOUND)

    def _forget_changed(self, state: SyncState, remote_files: dict) -> None:
        for name, record in list(state.synced.items()):
            there = remote_files.get(name)
            if there is None:
                log.warning("%s: gone from %s, copying it again", name, self.remote)
            elif there[0] != record["size"] or not same_time(there[1], record["modtime"]):
                log.warning("%s: changed on %s since it was verified, verifying it again", name, self.remote)
            else:
                continue
            del state.synced[name]

    def _verify_in_place(self, names: list) -> list:
        """Among segments found on the remote under their final names, those equal to the card
        (`rclone check`: by hash where the backend keeps one, else by downloading them)."""
        if not names:
            return []
        by = [] if self._features().get("Hashes") else ["--download"]
        result = self.rclone.run("check", "--one-way", "--combined", "-", *by,
                                 "--files-from", self.rclone.files_from(names), str(self.root), self.remote, allow=(1,))
        marks = dict(reversed(line.split(" ", 1)) for line in result.stdout.splitlines() if " " in line)
        if any(marks.get(n) == "!" for n in names):
            raise SyncFailed(rclone_error(result.stderr) or "the remote failed while verifying")
        return [n for n in names if marks.get(n) == "="]

    def _features(self) -> dict:
        if self._backend is None:
            self._backend = self._staging.moving().features()
        return self._backend

    def _stage_index(self, names: list, local: dict) -> Transfer:
        """Start copying the index files of the folders ``names`` go into (edge.sync_index)
        into the staging folder."""
        folder, self._index = self._remote_index.stage(names, local)
        return self._staging.upload(folder, list(self._index))

    def _place(self, index: Transfer, staged: list, state: SyncState, local: dict, sizes: dict, remote_files: dict,
               unlisted: list, good: list) -> None:
        """Verify the staged manifest, move the staged segments into place and the manifest
        after them (one rclone, in name order, one file at a time), and record what is synced."""
        sent = index.wait()
        index_ok = sent.error is None and set(sent.proven).union(self._staging.verify_by_download(
            sent.unproven, self._index)[0]) == set(self._index)
        error = None if index_ok else (sent.error or f"the copy of {MANIFEST} on the remote does not match, "
                                       "sent again next run")
        # The manifest and SHA256SUMS move after every segment they list, one at a time.
        moving = [name for name in staged if name not in self._staging.handed] + (list(self._index) if index_ok else [])
        if moving or self._staging.handed:
            mover = self._staging.moving()
            mover.move(moving)
            error = mover.finish() or error
            if error is None:
                error = mover.remove(self._remote_index.leftover())
        placed = self._placed(staged, sizes) if error is None else listed(self._start_listing(staged).result())
        for name, there in [(n, remote_files.get(n)) for n in good] + [(n, placed.get(n)) for n in staged]:
            if there is not None:
                state.synced[name] = {"sha256": local[name]["sha256"], "size": there[0], "modtime": there[1],
                                      "listed": error is None}
        if error is None:
            for name in unlisted:
                if name in state.synced:
                    state.synced[name]["listed"] = True
        state.save(self.root)
        if error:
            raise SyncFailed(error)

    def _placed(self, staged: list, sizes: dict) -> dict:
        """name -> (size, modtime) of the segments just moved into place, as the remote will list
        them: rclone gave each the card's modification time (at the remote's precision) and a
        rename keeps it. Where the backend keeps no times, the remote is listed again."""
        if not staged:
            return {}
        precision_ns = self._features().get("Precision") or 0
        if not 0 < precision_ns <= 1_000_000_000:
            return listed(self._start_listing(staged).result())
        placed = {}
        for name in staged:
            mtime_ns = (self.root / name).stat().st_mtime_ns
            placed[name] = (sizes[name], isotime(mtime_ns - mtime_ns % precision_ns))
        return placed

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

    def _record(self, state: SyncState, report: SyncReport, on_card: Optional[dict]) -> None:
        """Rewrite the state on the card if this run changed it (``on_card``: as it was before,
        without the run's time); publish the run's time and outcome in memory."""
        now = datetime.now().astimezone().isoformat(timespec="seconds")
        state.last_attempt = now
        state.last_error = report.error or (report.problems[-1] if report.problems else None)
        if report.ok and report.waiting == 0:
            state.last_success = now
        state.waiting, state.waiting_bytes = report.waiting, report.waiting_bytes
        if lasting(asdict(state)) != on_card:
            state.save(self.root)
        if self.run_record is not None:
            try:
                write_json_atomically(self.run_record, {"remote": self.remote, "last_attempt": now,
                                                        "last_success": state.last_success,
                                                        "last_error": state.last_error})
            except OSError as exc:  # no /run/edge-recorder (the recorder has not run since boot)
                log.debug("%s: cannot publish the run (%s)", self.run_record, exc.strerror)

    def _on_card(self) -> Optional[dict]:
        try:
            return json.loads((self.root / SYNC_STATE).read_text())
        except (OSError, ValueError):
            return None


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
                      delete_after_verified=settings.sync.delete_after_verified,
                      run_record=run_record_path(settings))
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
