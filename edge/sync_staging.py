"""What goes through the staging folder in one `edge sync` run: the `rclone copy` of segments
and the upload of the index into it, each started only where it cannot make a folder another
copy is making, the copies' logs read as they run, every segment they prove handed at once to
the mover that renames it into place, and what each copy proved collected (edge.sync runs them)."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .offload import megabytes
from .rclone import CopyLog, Job, Rclone, rclone_error
from .rclone_rc import Daemon, Mover, Transfer
from .sync_card import CardCheck
from .sync_state import SyncReport

# A copy that failed, or was killed (the OOM killer on a small Pi), is read from its log too:
# what arrived whole still counts.
ANY_EXIT = tuple(range(-64, 0)) + tuple(range(1, 256))


@dataclass
class Collected:
    """What one segment copy brought about."""

    staged: list
    """In the staging folder, proven equal to the card."""
    in_place: list
    """Not sent: already under their final names with the card's size and time."""


class Staging:
    """One run's copies into the staging folder and the mover that takes them out of it."""

    def __init__(self, rclone: Rclone, root: Path, remote: str, staging: str, card: CardCheck):
        self.rclone = rclone
        self.root = root
        self.remote = remote
        self.staging = staging
        self.card = card
        self.mover: Optional[Mover] = None
        """Moves what is staged into place, as soon as it is proven, over one `rclone rcd`."""
        self.handed: set = set()
        """What the mover was given to move in this run."""
        self._copies: dict = {}
        """Each `rclone copy` of segments into the staging folder in this run -> its log as read
        so far."""

    def moving(self) -> Mover:
        if self.mover is None:
            self.mover = Mover(Daemon(self.rclone), self.staging, self.remote)
        return self.mover

    def close(self) -> None:
        """Stop the mover, if it was started."""
        if self.mover is not None:
            self.mover.close()

    def start(self, names: list, replace: bool = False) -> Job:
        """Start copying the segments ``names`` from the card, at the bandwidth limit."""
        # Into the staging folder, which holds nothing worth keeping: no listing of it first.
        # A segment already in place with the card's size and time is not sent (--compare-dest)
        # unless ``replace``. At log level DEBUG rclone says what it proved (see CopyLog).
        compare = [] if replace else ["--compare-dest", self.remote]
        self._wait_for_folders(names)
        copy = self.rclone.start("copy", "--files-from", self.rclone.files_from(names), "--no-check-dest", *compare,
                                 str(self.root), self.staging, transfer=True, log="DEBUG", allow=ANY_EXIT)
        self._copies[copy] = CopyLog()
        return copy

    def upload(self, folder: Path, names: list) -> Transfer:
        """Copy the small files ``names`` (the index) from the local ``folder`` into the staging
        folder through the mover's rcd, in its turn."""
        self._wait_for_folders(names)
        return self.moving().upload(folder, names)

    def _wait_for_folders(self, names: list) -> None:
        """Wait until every folder of the staging folder that copies of ``names`` go into is
        known to exist (a copy of this run copied a file into it) or no copy into it runs:
        rclone makes the folders it copies into, and two rclone processes making one folder at
        once fail one of them (an SFTP server answers the second mkdir with a bare "Failure",
        rclone 1.60). Nothing removes a folder of it before the run's copies have all ended."""
        needed = _folders(names)
        while True:
            for copy in [copy for copy in self._copies if not copy.finished]:
                self._read_log(copy)
            running = [copy for copy in self._copies if not copy.done()]
            if not running or needed <= _folders(name for log in self._copies.values() for name in log.copied):
                return
            running[0].wait_at_most(0.05)

    def collect(self, copy: Job, names: list, local: dict, sizes: dict, report: SyncReport) -> tuple:
        """What a segment copy did: the copies it staged proven equal to the card (by rclone's
        own hash comparison or, where the backend keeps no hash, by downloading them), those
        it found in place, and why it failed (or None)."""
        self._move_as_proven(copy)
        result = copy.result()
        sent = CopyLog.parse(result.stderr)
        sound = set(self.card.sound(names))
        unproven = [n for n in names if n in sent.copied and n in sound and n not in sent.proven]
        downloaded, differing = self.verify_by_download(unproven, {n: local[n]["sha256"] for n in unproven})
        for name in [n for n in names if n in sent.corrupted and n in sound] + differing:
            report.problems.append(f"{name}: the copy on the remote does not match the card, sent again next run")
        # A segment that rotted on the card went up as rotten as it is: it never moves into place.
        discard = [n for n in names if n in sent.copied and n not in sound] + differing
        if discard:
            self.rclone.run("delete", "--files-from", self.rclone.files_from(discard), self.staging)
        outcome = Collected([n for n in names if n in sound and (n in sent.proven or n in downloaded)],
                            [n for n in names if n in sound and n in sent.in_place])
        missing = [n for n in names if n in sound and not ({n} & (sent.copied | set(sent.corrupted) | sent.in_place))]
        if not missing:
            return outcome, None
        reason = rclone_error(result.stderr) or (f"rclone copy exited with {result.returncode}" if result.returncode
                                                 else f"{missing[0]}: missing on the remote after copying it")
        if sent.copied or sent.corrupted:
            reason = self._explain_copy_failure(reason, missing, sizes)  # the remote answers: full?
        return outcome, reason

    def _move_as_proven(self, copy: Job) -> None:
        """While ``copy`` runs, hand each segment it staged to the mover as soon as its log
        proves the copy equal to what was read from the card and the card check passed it:
        by the time the copy ends, most of what it sent is in place."""
        if self.mover is None:
            return
        while True:
            ended = copy.wait_at_most(0.05)
            self._read_log(copy)
            if ended:
                return

    def _read_log(self, copy: Job) -> None:
        """Read what ``copy`` logged since the last time; each segment it proved that the card
        check passed goes to the mover (the others are moved by edge.sync's `_place`, or never)."""
        arrived = self._copies[copy].feed(copy.tail())
        if self.mover is not None:
            arrived = [name for name in arrived if self.card.sound([name])]
            self.mover.move(arrived)
            self.handed.update(arrived)

    def verify_by_download(self, names: list, expected: dict) -> tuple:
        """(matching, differing) among staged ``names`` whose backend proved nothing: each is
        downloaded and its SHA-256 compared with ``expected`` (the manifest's)."""
        if not names:
            return [], []
        result = self.rclone.run("hashsum", "sha256", "--download", "--files-from", self.rclone.files_from(names),
                                 self.staging)
        sums = {}
        for line in result.stdout.splitlines():
            digest, _, name = line.partition("  ")
            sums[name] = digest
        return ([n for n in names if sums.get(n) == expected[n]],
                [n for n in names if n in sums and sums[n] != expected[n]])

    def _explain_copy_failure(self, reason: str, missing: list, sizes: dict) -> str:
        needed = sum(sizes[n] for n in missing)
        free = self.rclone.free_bytes(self.staging)  # the copy made it; the device folder may not exist yet
        if free is not None and free < needed:
            return f"the remote is full ({megabytes(free)} free, {megabytes(needed)} to copy): {reason}"
        return reason


def _folders(names) -> set:
    """The folders that files of these paths lie in, with their parents ("" for the top)."""
    folders = set()
    for name in names:
        while name:
            name = posixpath.dirname(name)
            folders.add(name)
    return folders
