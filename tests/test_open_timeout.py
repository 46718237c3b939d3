"""An open that hangs (a device whose driver never answers) fails after audio.open_timeout_s,
and leaves no capture process behind."""

from __future__ import annotations

import threading
import time

import pytest

from conftest import child_processes as capture_processes, wait_until
from edge.audio import CaptureError, MicrophoneSource
from edge.config import AudioSettings


def test_an_open_that_hangs_fails_after_open_timeout_s(alsa):
    # A FIFO nobody writes to: the capture process blocks opening it, inside ALSA's open,
    # as it would in a driver that never answers.
    alsa.add_fifo("hangingmic")
    timeout = 2.0
    source = MicrophoneSource(AudioSettings(device="hangingmic", open_timeout_s=timeout))
    before = capture_processes()
    began = time.monotonic()
    with pytest.raises(CaptureError, match=r"opening 'hangingmic' did not finish within 2 s \(audio.open_timeout_s\)"):
        source.open()
    waited = time.monotonic() - began
    # Not before the timeout; after it, only as long as killing the process takes.
    assert timeout <= waited < timeout + 1.0
    assert capture_processes() - before == set(), "the hung capture process was left running"
    source.close()  # a second close is harmless


def test_a_stop_ends_an_open_that_hangs_at_once(alsa):
    """`systemctl stop` while the device does not answer: the open gives up when told, not
    after open_timeout_s."""
    alsa.add_fifo("hangingmic")
    stopping = threading.Event()
    source = MicrophoneSource(AudioSettings(device="hangingmic", open_timeout_s=10.0), stopping=stopping)
    before = capture_processes()
    outcome = {}

    def open_it():
        try:
            source.open()
        except CaptureError as exc:
            outcome["error"] = str(exc)
        outcome["ended"] = time.monotonic()

    opener = threading.Thread(target=open_it, daemon=True)
    opener.start()
    wait_until(lambda: capture_processes() - before, "the capture process opening the device")
    stopped = time.monotonic()
    stopping.set()
    opener.join(timeout=15)
    assert outcome.get("error") == "opening 'hangingmic' given up: the recorder is stopping"
    # The time to notice and to kill the process, far from the 10 s of the timeout.
    assert outcome["ended"] - stopped < 3.0
    assert capture_processes() - before == set(), "the capture process was left running"
