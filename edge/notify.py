"""Telling systemd how the daemon is doing: the sd_notify protocol, spoken directly.

The protocol is one datagram of ``KEY=value`` lines sent to the AF_UNIX socket named in
``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace). Speaking it here saves a
dependency on libsystemd and its Python binding, which a venv on the Pi would have to build.

Outside systemd (a terminal, the tests of other modules) ``$NOTIFY_SOCKET`` is unset and
every call does nothing. A failed send never stops recording: it is logged once and the
daemon goes on.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Optional

log = logging.getLogger(__name__)

START_PART_S = 120
"""Seconds each part of a start (loading the model, finishing what a power cut interrupted,
opening the microphone) may take: the unit's TimeoutStartSec."""


class ServiceNotifier:
    """A connection to the service manager's notification socket, if there is one."""

    def __init__(self, socket_path: Optional[str] = None):
        """``socket_path`` defaults to ``$NOTIFY_SOCKET``, read once now."""
        self._path = os.environ.get("NOTIFY_SOCKET") if socket_path is None else socket_path
        self._address: Optional[str] = _socket_address(self._path) if self._path else None
        self._socket: Optional[socket.socket] = None
        self._failure_logged = False
        if self._address is not None:
            # Made once here, so threads sending watchdog pings and status share it safely.
            try:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            except OSError as exc:
                self._log_failure(exc)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def ready(self) -> None:
        self.send(READY=1)

    def watchdog(self) -> None:
        self.send(WATCHDOG=1)

    def extend_start(self) -> None:
        """A part of the start begins: systemd gives it START_PART_S more, so a start that
        moves on slowly (a Pi Zero, a busy card) finishes instead of being killed and begun
        again from scratch every time, while one that hangs in a part is still stopped."""
        self.send(EXTEND_TIMEOUT_USEC=START_PART_S * 1_000_000)

    def status(self, text: str) -> None:
        """One line for `systemctl status`; line breaks would end the field early."""
        self.send(STATUS=" ".join(text.splitlines()))

    def stopping(self) -> None:
        self.send(STOPPING=1)

    def send(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines in one datagram; True when it was sent."""
        sock = self._socket  # close() from another thread must not turn this into a crash
        if sock is None or not fields:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            sock.sendto(message, self._address)
        except OSError as exc:
            self._log_failure(exc)
            return False
        return True

    def _log_failure(self, exc: OSError) -> None:
        if not self._failure_logged:
            self._failure_logged = True
            log.warning("cannot notify systemd at %s: %s", self._path, exc)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _socket_address(path: str) -> str:
    # Python takes an abstract address as a str starting with NUL.
    return "\0" + path[1:] if path.startswith("@") else path


def watchdog_interval() -> Optional[float]:
    """Seconds between watchdog pings: half of systemd's WatchdogSec, or None when off.

    ``$WATCHDOG_PID``, when set, names the process the watchdog is meant for; a child that
    inherited the environment must not ping on its parent's behalf.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            log.warning("ignoring watchdog: WATCHDOG_PID=%r is not a process id", pid)
            return None
    try:
        interval_us = int(usec)
    except ValueError:
        log.warning("ignoring watchdog: WATCHDOG_USEC=%r is not a number of microseconds", usec)
        return None
    if interval_us <= 0:
        return None
    return interval_us / 2 / 1_000_000
