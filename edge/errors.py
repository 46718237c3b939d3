"""The errors users see: one line that names the file or key at fault and what was expected
(or how to run the command). The CLI prints it as ``edge: <message>`` and exits 2."""

import grp
import os
import pwd
import stat
from pathlib import Path


class EdgeError(Exception):
    """A user-facing error with a one-line message."""


def shown(value, limit: int = 40) -> str:
    """A value from a file, as a one-line message may quote it: repr, shortened (a terminal
    must not be handed a megabyte, a newline or an escape sequence from a damaged file)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def printable(text: str) -> str:
    """A name from a file (a key), its unprintable characters escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


DEVICE_MODULES = ("pyaudio", "gpiozero", "lgpio", "tflite_runtime", "ai_edge_litert")
"""What the device extra (requirements.txt) brings: absent on an office install (pip install .)."""


def missing_device_module(module: str) -> str:
    """One line for a recorder's command run where a device package is not installed."""
    return (f"{module} is not installed: this is an office install (pip install .), which has "
            "the office commands only; the recorder needs pip install '.[device]' (make install on the Pi)")


def permission_denied(path) -> str:
    """One line for a file this user may not read: which, and how to run the command
    (sudo, or the group that may read it where there is one)."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    path = Path(path)
    join = ""
    # The first folder (or the file) on the way that keeps this user out decides.
    for part in [*reversed(path.parents), path]:
        try:
            info = part.stat()
        except OSError:
            break
        wanted = os.R_OK | (os.X_OK if stat.S_ISDIR(info.st_mode) else 0)
        if os.access(part, wanted):
            continue
        needed = stat.S_IRGRP | (stat.S_IXGRP if stat.S_ISDIR(info.st_mode) else 0)
        if info.st_mode & needed == needed:
            try:
                group = grp.getgrgid(info.st_gid).gr_name
            except KeyError:
                break
            join = f", or join the group {group} (sudo adduser {user} {group}, then log in again)"
        break
    return f"{path}: permission denied for user {user}: run it with sudo{join}"
