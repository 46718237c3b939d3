"""A microphone that fails, vanishes and comes back, on the real PyAudio/ALSA path: the
recorder reopens the same named device with backoff, records the gap, and resets the
detector; the LED shows the outage."""

from __future__ import annotations

import threading
import time

import pytest
from gpiozero.pins.mock import MockFactory

from cardcheck import assert_card_consistent
from conftest import WINDOW, make_recorder, wait_until
from edge.audio import CaptureError, MicrophoneSource
from edge.config import settings_from_dict
from edge.indicator import LedIndicator, LedPattern
from edge.status import RecorderState
from edge.vad import WindowByWindow

PIN = 17


class FailingMicrophone:
    """The real microphone source, with a fault of the test's choosing once ``unplugged``
    is set: ``raise`` (what PortAudio reports when a USB mic is pulled) or ``stall`` (a
    driver that stops delivering: alive but deaf). Counts opens that failed."""

    def __init__(self, source: MicrophoneSource, fault: str):
        self.source, self.fault = source, fault
        self.name = source.name
        self.unplugged = threading.Event()
        self.delivered = 0
        self.failed_opens = 0
        self.opens = 0

    def __getattr__(self, name):
        return getattr(self.source, name)

    def open(self):
        try:
            self.source.open()
        except CaptureError:
            self.failed_opens += 1
            raise
        self.opens += 1

    def close(self):
        self.source.close()

    def read(self, timeout):
        if self.opens == 1 and self.unplugged.is_set():
            if self.fault == "raise":
                raise CaptureError("Unanticipated host error")
            time.sleep(timeout)  # a stalled driver: the read waits its time and gets nothing
            return None
        frames = self.source.read(timeout)
        if frames is not None:
            self.delivered += len(frames) // WINDOW
        return frames


class CountingDetector(WindowByWindow):
    def __init__(self, detector):
        self.detector = detector
        self.resets = 0
        self.sha256 = detector.sha256

    def __call__(self, frame):
        return self.detector(frame)

    def reset(self):
        self.resets += 1
        self.detector.reset()


def first_frame_s(settings) -> float:
    """How long this machine takes from opening the device (AudioSettings) to its first frame."""
    probe = MicrophoneSource(settings)
    began = time.monotonic()
    probe.open()
    try:
        assert probe.read(timeout=30) is not None
    finally:
        probe.close()
    return time.monotonic() - began


@pytest.mark.parametrize("fault", ["raise", "stall"])
def test_lost_microphone_is_reopened_and_the_gap_recorded(alsa, lesson, detector, tmp_path, fault):
    raw = alsa.add("testmic", lesson)
    audio = {"device": "testmic", "buffer_s": 120, "reopen_backoff_s": 0.05, "reopen_backoff_max_s": 0.2}
    # Short, to keep the test short, but far longer than a healthy device ever takes to
    # deliver on this machine: a slow machine must not see a stall where there is none.
    stall = max(0.3, 20 * first_frame_s(settings_from_dict({"audio": audio}).audio))
    settings = settings_from_dict({"audio": {**audio, "stall_timeout_s": min(stall, 60)},
                                   "led": {"pin": PIN, "heartbeat": False}})
    factory = MockFactory()
    led = LedIndicator(PIN, heartbeat=False, pin_factory=factory)
    counting = CountingDetector(detector)
    recorder = make_recorder(settings, counting, tmp_path / "rec", indicator=led)
    source = FailingMicrophone(MicrophoneSource(settings.audio), fault=fault)
    stop = threading.Event()
    thread = threading.Thread(target=recorder.run, args=(source, stop))
    hidden = raw.with_name("unplugged.raw")
    thread.start()
    try:
        wait_until(lambda: source.delivered >= 100, "audio before the fault")
        raw.rename(hidden)  # the device cannot be opened again until it is "plugged back"
        source.unplugged.set()
        wait_until(lambda: source.failed_opens >= 2, "failed attempts to reopen the microphone")
        assert recorder.state() is RecorderState.MIC_MISSING
        assert led._pattern is LedPattern.MIC_MISSING
        assert thread.is_alive()
        hidden.rename(raw)
        wait_until(lambda: source.opens == 2, "the microphone to be reopened")
        # A segment open at the loss is stored then: wait for one that began after the gap.
        wait_until(lambda: any(e["mic_gaps"] for e in recorder.entries), "speech after the gap")
    finally:
        stop.set()
        thread.join(timeout=30)
        led.close()
        factory.reset()
    assert not thread.is_alive(), "the recorder did not stop within 30 s of being asked"
    assert counting.resets == 2  # fresh detector state at the start and after the reopen
    gaps = [e["mic_gaps"] for e in recorder.entries if e["mic_gaps"]]
    assert len(gaps) == 1 and len(gaps[0]) == 1
    assert gaps[0][0]["start"] < gaps[0][0]["end"]
    # The first segment began before the loss; everything after the gap is whole too.
    assert_card_consistent(tmp_path / "rec")
