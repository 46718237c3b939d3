"""An open that hangs (a device whose driver never answers) fails after audio.open_timeout_s,
and leaves no capture process behind."""

from __future__ import annotations

import time

import pytest

from conftest import child_processes as capture_processes
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
