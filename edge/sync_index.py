"""The remote's index in `edge sync`: a ``manifest.jsonl`` and a ``SHA256SUMS`` in each day
folder of the remote, as on the card, so that a run reads and rewrites only those of the
folders it sends into. One manifest for the whole remote would be read, merged and sent
again whole by every run: a year of a busy classroom is 80 MB, which took 6.7 s and 714 MB
of memory to send one segment beside it (a Pi Zero 2 W has 512 MB).

A remote written by an earlier version holds one ``manifest.jsonl`` (and ``SHA256SUMS``) at
its top. Readers take that one while it is there (edge.manifest), so it is split into the
day folders' files, which are moved into place first, and only then removed: at no moment
does a reader see less than before. The split is read one line at a time, never whole."""

from __future__ import annotations

import hashlib
import json
import posixpath
from pathlib import Path
from typing import Callable

from .manifest import is_tombstone, line_entries
from .offload import SUMS, merge_manifest, sha256sums
from .rclone import Rclone, SyncFailed
from .rclone_rc import Mover
from .storage import MANIFEST

TOP = ""
"""The folder of a file at the top of the remote (no day folder): the earlier layout's."""


def folder_of(file: str) -> str:
    return posixpath.dirname(file)


class RemoteIndex:
    """The manifests of the remote folders a run sends into, fetched in the background, and
    the index files staged from them with the run's new lines."""

    def __init__(self, rclone: Rclone, remote: str, mover: Callable[[], Mover]):
        self.rclone = rclone
        self.remote = remote
        self.mover = mover
        """The run's mover (made on first use), which fetches the manifests over its rcd."""
        self.top_found = False
        """The remote holds a top-level manifest (the earlier layout) still to be split."""
        self._fetches: list = []
        """(download of manifests into a scratch folder, that folder), not read yet."""
        self._asked: set = set()
        self._lines = rclone.scratch_folder()
        """One file per folder: the lines the remote has for it, gathered from its manifests."""
        self._misplaced: set = set()
        """Folders with lines in a manifest other than their own (the top-level one)."""

    def fetch(self, names: list) -> None:
        """Start fetching the manifests of the folders ``names`` are in, those not asked for
        yet (and, the first time, the top-level one)."""
        folders = {folder_of(name) for name in names} - self._asked
        if TOP not in self._asked:
            folders.add(TOP)  # the first time: an earlier version's manifest, if there is one
        if not folders:
            return
        self._asked |= folders
        wanted = sorted(posixpath.join(folder, MANIFEST) for folder in folders)
        scratch = self.rclone.scratch_folder()
        self._fetches.append((self.mover().download(wanted, scratch), scratch))

    def read(self) -> None:
        """Wait for the fetches and sort their lines by folder, one line in memory at a time."""
        for fetch, scratch in self._fetches:
            if fetch.wait().error is not None:
                raise SyncFailed(fetch.error)
            for manifest in sorted(scratch.rglob(MANIFEST)):
                own = manifest.parent.relative_to(scratch).as_posix()
                own = TOP if own == "." else own
                self.top_found = self.top_found or own == TOP
                self._gather(manifest, own)
        self._fetches = []

    def _gather(self, manifest: Path, own: str) -> None:
        with open(manifest, "rb") as lines:
            # Checked like the card's own lines: a damaged line there is skipped with a warning.
            for entry in line_entries(lines, posixpath.join(self.remote, own, MANIFEST)):
                if is_tombstone(entry):
                    continue
                folder = folder_of(entry["file"])
                if folder != own:
                    self._misplaced.add(folder)
                # Opened per line: a year split once costs a second or two, a day's lines nothing.
                with open(self._lines_file(folder), "a") as out:
                    out.write(json.dumps(entry) + "\n")

    def _lines_file(self, folder: str) -> Path:
        return self._lines / f"{folder.replace('/', '%')}.jsonl"

    def stage(self, names: list, local: dict) -> tuple:
        """Write the index files of every folder that gets a new line or holds lines from
        elsewhere: the remote's lines of that folder merged with the manifest lines of
        ``names``, and its SHA256SUMS (names relative to the folder, for `sha256sum -c` run
        there). Returns (scratch folder, {path under it: SHA-256})."""
        wanted = set(names)
        new: dict = {}
        # New lines in the card's order after those already there (seq alone cannot order
        # them: it starts again at 1 once every segment has left the card).
        for name in local:
            if name in wanted:
                new.setdefault(folder_of(name), []).append(local[name])
        folder_out = self.rclone.scratch_folder()
        index = {}
        for folder in sorted(set(new) | self._misplaced):
            existing = []
            if (there := self._lines_file(folder)).exists():
                with open(there) as lines:
                    existing = [json.loads(line) for line in lines]  # checked when gathered
            merged = list(merge_manifest(existing, new.get(folder, [])))
            (folder_out / folder).mkdir(exist_ok=True)
            for name, lines in ((MANIFEST, [json.dumps(entry) for entry in merged]),
                                (SUMS, sha256sums([{**e, "file": posixpath.basename(e["file"])} for e in merged]))):
                path = posixpath.join(folder, name)
                data = "".join(line + "\n" for line in lines).encode()
                (folder_out / path).write_bytes(data)
                index[path] = hashlib.sha256(data).hexdigest()
        return folder_out, index

    def leftover(self) -> list:
        """What to remove from the top of the remote once the day folders' index files are in
        place: the earlier layout's SHA256SUMS, then its manifest (whose presence makes
        readers look nowhere else). Nothing while it still lists files of its own folder."""
        if not self.top_found or self._lines_file(TOP).exists():
            return []
        return [SUMS, MANIFEST]
