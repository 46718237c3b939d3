"""The system calls a piece of Python makes on files, under strace, in order.

A missing fsync of a file, or of its folder after a rename, is invisible to a test that
reads the data back: the page cache has it either way, and only a power cut would tell.
What can be seen is the order of the calls: the data written, the file fsynced, then renamed,
then its folder fsynced. ``trace()`` runs a snippet in a fresh interpreter under ``strace -f
-y`` (every file descriptor shown with its path) and returns the calls; the ``assert_*``
helpers check the order on one path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

TRACED = "openat,write,pwrite64,fsync,fdatasync,rename,renameat,renameat2,unlink,unlinkat,close"
LINE = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\((.*)\)\s+=\s+(-?\d+)")
FD_PATH = re.compile(r"\d+<([^>]*)>")
STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Call:
    name: str
    paths: tuple
    """Paths named by the call: those of its file descriptors (-y) and its string arguments."""
    result: int

    def on(self, path) -> bool:
        return str(path) in self.paths


def needs_strace():
    return pytest.mark.skipif(shutil.which("strace") is None,
                              reason="strace is not installed (make test installs it when run as root)")


def trace(code: str, cwd: Path) -> list[Call]:
    """Run ``code`` in a new interpreter under strace; its calls on files, in order."""
    log = cwd / "strace.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    if env.get("MUTANT_UNDER_TEST") == "stats":
        # `make mutate`'s first pass (which tests call what) would make the child record its
        # calls too, which needs mutmut's config in the child's working directory: the child
        # runs the original code then (mutants are still applied in it when they run).
        env["MUTANT_UNDER_TEST"] = ""
    result = subprocess.run(["strace", "-f", "-y", "-qq", "-s", "4096", "-e", f"trace={TRACED}", "-o", str(log),
                             sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    calls = []
    for line in log.read_text().splitlines():
        match = LINE.match(line)
        if match is None:
            continue  # unfinished/resumed halves, signals
        name, args, value = match.groups()
        paths = tuple(FD_PATH.findall(args)) + tuple(STRING.findall(args))
        calls.append(Call(name, paths, int(value)))
    log.unlink()
    return calls


def indexes(calls: list[Call], names: tuple, path) -> list[int]:
    return [i for i, call in enumerate(calls) if call.name in names and call.on(path) and call.result >= 0]


def last(calls, names, path, what: str) -> int:
    found = indexes(calls, names, path)
    assert found, f"no {what} of {path}"
    return found[-1]


def first_after(calls, names, path, after: int, what: str) -> int:
    found = [i for i in indexes(calls, names, path) if i > after]
    assert found, f"no {what} of {path} after call {after} ({calls[after].name} {calls[after].paths})"
    return found[0]


WRITES = ("write", "pwrite64")
SYNCS = ("fsync", "fdatasync")
RENAMES = ("rename", "renameat", "renameat2")


def assert_written_then_synced(calls: list[Call], path) -> int:
    """Every write to ``path`` is followed by an fsync of it; returns that fsync's index."""
    written = last(calls, WRITES, path, "write")
    return first_after(calls, SYNCS, path, written, "fsync after the last write")


def assert_durably_renamed(calls: list[Call], temporary, final) -> int:
    """write(temporary) ... fsync(temporary) < rename(temporary, final) < fsync(final's folder);
    returns the index of the folder's fsync."""
    synced = assert_written_then_synced(calls, temporary)
    renames = [i for i in indexes(calls, RENAMES, temporary) if calls[i].on(final)]
    assert renames, f"{temporary} never renamed to {final}"
    renamed = renames[-1]
    assert synced < renamed, f"{temporary} renamed before its data was fsynced"
    return first_after(calls, SYNCS, Path(final).parent, renamed, "fsync of the folder after the rename")


def assert_durably_appended(calls: list[Call], path) -> list[int]:
    """Each write to ``path`` is fsynced before anything else is written to it."""
    writes = indexes(calls, WRITES, path)
    assert writes, f"nothing written to {path}"
    syncs = indexes(calls, SYNCS, path)
    for write, following in zip(writes, writes[1:] + [len(calls)]):
        assert any(write < s < following for s in syncs), f"a write to {path} (call {write}) was not fsynced"
    return syncs
