"""The card's side of `edge sync`'s proof: each waiting segment read back from the medium and
compared with its manifest SHA-256 before its copy may count."""

from __future__ import annotations

from pathlib import Path

from .storage import file_sha256


class CardCheck:
    """Whether waiting segments still hold on the card the bytes their manifest SHA-256 was
    computed from, read from the medium (not the page cache) one file at a time, so rclone
    can be started between two files; what rclone reads next comes from the cache it fills."""

    def __init__(self, root: Path, local: dict, problems: list):
        self.root = root
        self.local = local
        self.problems = problems
        self.result: dict = {}
        """file -> True (as recorded) or False (not to be sent; a line in ``problems`` says why,
        unless it was deleted under us by a full card's rotation)."""

    def check(self, names: list, until=None) -> None:
        """Check ``names`` not checked yet, stopping early once ``until()`` is true."""
        for name in names:
            if until is not None and until():
                return
            if name not in self.result:
                self.result[name] = self._matches(name)

    def sound(self, names: list) -> list:
        self.check(names)
        return [name for name in names if self.result[name]]

    def _matches(self, name: str) -> bool:
        try:
            if file_sha256(self.root / name, from_medium=True) == self.local[name]["sha256"]:
                return True
        except FileNotFoundError:
            return False  # deleted under us (a full card's rotation): nothing left to send
        except OSError as exc:
            self.problems.append(f"{name}: cannot read it on the card ({exc.strerror}), not synced")
            return False
        self.problems.append(f"{name}: corrupted on the card (its SHA-256 does not match the manifest), not synced")
        return False
