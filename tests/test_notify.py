"""sd_notify over a real AF_UNIX datagram socket standing in for systemd's."""

import logging
import os
import socket
import uuid

import pytest

from edge.notify import ServiceNotifier, watchdog_interval


@pytest.fixture
def systemd_socket(tmp_path, monkeypatch):
    """A bound datagram socket at a path, announced in $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.settimeout(2)  # a missing datagram fails the test instead of hanging it
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield receiver
    receiver.close()


def received(receiver: socket.socket) -> bytes:
    return receiver.recv(4096)


def test_each_call_sends_its_exact_datagram(systemd_socket):
    notifier = ServiceNotifier()
    assert notifier.enabled
    notifier.ready()
    notifier.watchdog()
    notifier.status("listening · 3 segments today · 12.4 GB free")
    notifier.stopping()
    notifier.extend_start()
    assert received(systemd_socket) == b"READY=1"
    assert received(systemd_socket) == b"WATCHDOG=1"
    assert received(systemd_socket) == "STATUS=listening · 3 segments today · 12.4 GB free".encode()
    assert received(systemd_socket) == b"STOPPING=1"
    assert received(systemd_socket) == b"EXTEND_TIMEOUT_USEC=120000000"
    notifier.close()


def test_send_puts_several_fields_in_one_datagram(systemd_socket):
    notifier = ServiceNotifier()
    assert notifier.send(READY=1, STATUS="listening")
    assert received(systemd_socket) == b"READY=1\nSTATUS=listening"


def test_status_keeps_to_one_line(systemd_socket):
    ServiceNotifier().status("microphone lost\nretrying in 4 s")
    assert received(systemd_socket) == b"STATUS=microphone lost retrying in 4 s"


def test_abstract_socket(monkeypatch):
    name = f"edge-recorder-test-{uuid.uuid4().hex}"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind("\0" + name)
    receiver.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        ServiceNotifier().ready()
        assert received(receiver) == b"READY=1"
    finally:
        receiver.close()


def test_without_notify_socket_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = ServiceNotifier()
    assert not notifier.enabled
    assert notifier.send(READY=1) is False
    notifier.ready()
    notifier.watchdog()
    notifier.status("listening")
    notifier.stopping()


def test_a_vanished_socket_is_logged_once_and_never_raises(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    notifier = ServiceNotifier()
    with caplog.at_level(logging.WARNING, logger="edge.notify"):
        assert notifier.send(READY=1) is False
        notifier.watchdog()
        notifier.status("still here")
    warnings = [r for r in caplog.records if r.name == "edge.notify"]
    assert len(warnings) == 1
    assert str(tmp_path / "gone") in warnings[0].getMessage()


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 15.0


def test_watchdog_interval_for_our_pid(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 2.0


@pytest.mark.parametrize(
    "usec, pid",
    [
        (None, None),  # no watchdog configured
        ("30000000", "1"),  # meant for another process
        ("30000000", "not-a-pid"),
        ("thirty", None),
        ("0", None),
    ],
)
def test_no_watchdog_interval(monkeypatch, usec, pid):
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert watchdog_interval() is None


def test_after_close_sends_are_dropped(systemd_socket):
    notifier = ServiceNotifier()
    notifier.close()
    assert notifier.send(WATCHDOG=1) is False
