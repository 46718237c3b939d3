"""The LED on gpiozero's MockFactory pins: patterns, and solid light that follows speech."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from conftest import PacedSource, make_recorder, pin_time_tolerance_s, wait_until
from edge.config import LedSettings, neg_threshold, settings_from_dict
from edge.indicator import LedIndicator, LedPattern, NullIndicator, make_indicator
from edge.segmenter import SegmentClosed, SegmentOpened, SpeechSegmenter
from edge.vad import window_probabilities

PIN = 17


@pytest.fixture
def factory():
    factory = MockFactory()
    yield factory
    factory.reset()


def wait_for_states(pin, count: int, timeout: float = 10.0) -> None:
    """Until the pin has gone through ``count`` states (the blink runs in its own thread)."""
    deadline = time.monotonic() + timeout
    while len(pin.states) < count:
        assert time.monotonic() < deadline, f"only {len(pin.states)} pin states after {timeout} s"
        time.sleep(0.01)


def test_speech_is_solid_and_off_is_off(factory):
    led = LedIndicator(PIN, pin_factory=factory)
    pin = factory.pin(PIN)
    led.show(LedPattern.SPEECH)
    led.show(LedPattern.SPEECH)  # showing the same pattern again changes nothing
    led.show(LedPattern.OFF)
    assert [s.state for s in pin.states] == [False, True, False]
    led.close()


def test_active_low_led_inverts_the_pin(factory):
    led = LedIndicator(PIN, active_high=False, pin_factory=factory)
    pin = factory.pin(PIN)
    led.show(LedPattern.SPEECH)
    # The mock pin starts low; "off" drives it high, "on" low.
    assert [s.state for s in pin.states] == [False, True, False]
    led.close()


@pytest.mark.parametrize("pattern", [LedPattern.MIC_MISSING, LedPattern.EXPORTING, LedPattern.LISTENING])
def test_blink_patterns_have_their_timing(factory, pattern):
    led = LedIndicator(PIN, pin_factory=factory)
    pin = factory.pin(PIN)
    pin.clear_states()
    led.show(pattern)
    on, off = pattern.value
    tolerance = pin_time_tolerance_s()
    wait_for_states(pin, 4)
    led.close()
    assert [state.state for state in pin.states[:4]] == [False, True, False, True]
    for state, expected in zip(pin.states, [0.0, 0.0, on, off]):
        assert abs(state.timestamp - expected) <= tolerance, (pin.states[:4], tolerance)


def test_patterns_are_distinct():
    # Iterating an Enum skips aliases (a member whose value repeats another's): count names.
    timings = [member.value for member in LedPattern.__members__.values()]
    assert len(LedPattern.__members__) == 10
    assert len(set(timings)) == len(timings)


def pin_behaviour(pattern: LedPattern, pin) -> tuple:
    """What the pin did once ``pattern`` was shown: its steady level, or the durations of
    one whole cycle of on and off, as measured."""
    if is_steady(pattern):
        return (pin.states[-1].state,)
    return tuple(state.timestamp for state in pin.states[2:len(pattern.value) + 2])


def is_steady(pattern: LedPattern) -> bool:
    """OFF, and SPEECH: on for good (no time off)."""
    return pattern.value is None or pattern.value[-1] == 0


def differ(a: tuple, b: tuple, tolerance: float) -> bool:
    """Whether two behaviours (see pin_behaviour) can be told apart over time: a steady
    level from a blink or the other level, or two blinks whose durations, repeated to a
    common length, differ by more than the timing tolerance somewhere."""
    if len(a) == 1 or len(b) == 1:
        return a != b
    return any(abs(x - y) > tolerance for x, y in zip(a * len(b), b * len(a)))


def test_every_pair_of_patterns_differs_in_what_the_pin_does_over_time(factory):
    # All at once, each on its own pin: the longest cycle (3 s) is the test's length.
    patterns = list(LedPattern.__members__.values())
    leds = {pattern: LedIndicator(PIN + 1 + index, pin_factory=factory) for index, pattern in enumerate(patterns)}
    pins = {pattern: factory.pin(PIN + 1 + index) for index, pattern in enumerate(patterns)}
    tolerance = pin_time_tolerance_s()
    for pin in pins.values():
        pin.clear_states()
    for pattern, led in leds.items():
        led.show(pattern)
    for pattern, pin in pins.items():
        if not is_steady(pattern):
            wait_for_states(pin, len(pattern.value) + 3)  # a whole cycle and the next one begun
    for led in leds.values():
        led.close()
    seen = {pattern: pin_behaviour(pattern, pins[pattern]) for pattern in patterns}
    for pattern, behaviour in seen.items():  # each does what it says, within the tolerance
        expected = (pattern is LedPattern.SPEECH,) if is_steady(pattern) else pattern.value
        assert not differ(behaviour, expected, tolerance), (pattern, behaviour, tolerance)
    for index, a in enumerate(patterns):
        for b in patterns[index + 1:]:
            assert differ(seen[a], seen[b], tolerance), (a, seen[a], b, seen[b], tolerance)


def test_heartbeat_off_leaves_the_led_dark_while_listening(factory):
    led = LedIndicator(PIN, heartbeat=False, pin_factory=factory)
    led.show(LedPattern.LISTENING)
    assert [s.state for s in factory.pin(PIN).states] == [False]
    led.close()


def test_no_pin_means_no_led():
    assert isinstance(make_indicator(LedSettings(pin=None)), NullIndicator)


def test_configured_pin_gives_a_real_led(factory):
    indicator = make_indicator(LedSettings(pin=PIN), pin_factory=factory)
    assert isinstance(indicator, LedIndicator)
    indicator.close()


def windows_led_on(settings, detector, samples) -> tuple:
    """From the same detector and segmenter run over plain data: (the first window whose
    segment is open, the first after it closed), the windows the LED must be lit for."""
    segmenter = SpeechSegmenter(settings.segmenter, settings.detector.threshold, neg_threshold(settings.detector))
    changes = []
    probs = window_probabilities(detector, samples)
    for index, prob in enumerate(probs):
        for event in segmenter.push(samples[index * 512:(index + 1) * 512], prob):
            if isinstance(event, (SegmentOpened, SegmentClosed)):
                changes.append(index)
    return changes[0], changes[1]


class LedWatchedSource(PacedSource):
    """The microphone's pace, and the LED's state each time the recorder asks for a window:
    by then it has handled every window before it."""

    def __init__(self, samples, pin):
        super().__init__(samples)
        self.pin = pin
        self.led_at_read: list = []

    def read(self, timeout):
        self.led_at_read.append(self.pin.state)
        return super().read(timeout)


@pytest.mark.parametrize("lead", [0, 1], ids=["as recorded", "a window later"])
def test_led_is_on_while_a_segment_is_open_following_the_audio(factory, lesson, detector, tmp_path, lead):
    # One sentence (1.55 s to 2.69 s), and the same a window later: an LED that followed
    # every other window only would be right half of the time.
    samples = np.concatenate([lesson[:lead * 512], lesson[: int(4.5 * 16000)]])
    settings = settings_from_dict({"led": {"pin": PIN, "heartbeat": False}})
    opened, closed = windows_led_on(settings, detector, samples)
    led = LedIndicator(PIN, heartbeat=False, pin_factory=factory)
    recorder = make_recorder(settings, detector, tmp_path / "rec", indicator=led)
    pin = factory.pin(PIN)
    source = LedWatchedSource(samples, pin)
    pin.clear_states()
    recorder.run(source, threading.Event())
    led.close()
    assert [s.state for s in pin.states] == [False, True, False]
    # Window by window, whatever else the machine is doing: lit once the window that opened
    # the segment has been handled, before the next one is read, and dark likewise.
    windows = len(source.frames)
    expected = [opened < n <= closed for n in range(windows)]
    assert source.led_at_read[:windows] == expected, (opened, closed, source.led_at_read)
    assert len(recorder.entries) == 1


def test_the_led_follows_the_speech_before_the_card_stores_it(factory, lesson, detector, tmp_path):
    # A slow card (a worn SD card's fsync) must not keep the LED lit after speech ended, nor
    # keep it dark while the segment's file is being made: the pin has changed by the time
    # the writer is asked to open or close.
    settings = settings_from_dict({"led": {"pin": PIN, "heartbeat": False}})
    led = LedIndicator(PIN, heartbeat=False, pin_factory=factory)
    recorder = make_recorder(settings, detector, tmp_path / "rec", indicator=led)
    pin = factory.pin(PIN)
    writer = recorder.writer
    seen = []

    def opening(start, open_=writer.open):
        seen.append(("open", pin.state))
        return open_(start)

    def closing(end, close=writer.close):
        seen.append(("close", pin.state))
        return close(end)

    writer.open, writer.close = opening, closing
    recorder.run(PacedSource(lesson[: int(4.5 * 16000)]), threading.Event())
    led.close()
    assert seen == [("open", True), ("close", False)]
    assert len(recorder.entries) == 1


def test_daemon_led_shows_the_usb_export_while_it_listens(factory, detector, tmp_path):
    from edge.clock import SystemClock
    from edge.export_state import ExportStatePublisher, export_led_pattern

    state_file = tmp_path / "export.json"
    export = ExportStatePublisher(state_file)
    export.publish("copying", 0, 10)
    led = LedIndicator(PIN, heartbeat=False, pin_factory=factory)
    recorder = make_recorder(settings_from_dict({"led": {"pin": PIN, "heartbeat": False}}), detector,
                             tmp_path / "rec", indicator=led,
                             extra_pattern=lambda: export_led_pattern(state_file, SystemClock().wall()))
    stop = threading.Event()
    silence = PacedSource(np.zeros(16000, np.int16), speed=20, loop=True)
    thread = threading.Thread(target=recorder.run, args=(silence, stop))
    thread.start()
    try:
        wait_until(lambda: led._pattern is LedPattern.EXPORTING, "the export pattern")
        export.publish("failed", 3, 10)
        wait_until(lambda: led._pattern is LedPattern.EXPORT_FAILED, "the failed-export pattern")
    finally:
        stop.set()
        thread.join(timeout=30)
        led.close()
    assert not thread.is_alive(), "the recorder did not stop within 30 s of being asked"


@pytest.mark.parametrize("active_high", [True, False])
def test_led_off_after_a_crash_leaves_the_led_dark_for_either_wiring(factory, tmp_path, monkeypatch, active_high):
    from gpiozero import Device

    from edge.cli import main

    # The daemon died while recording speech: the line kept the level that lit the LED.
    pin = factory.pin(PIN)
    pin.function = "output"
    pin.state = lit = active_high
    config = tmp_path / "edge.yaml"
    config.write_text(f"led: {{pin: {PIN}, active_high: {str(active_high).lower()}}}\n")
    monkeypatch.setattr(Device, "pin_factory", factory)
    (tmp_path / "gpiochip0").touch()  # the machine has GPIO (the mock's)
    monkeypatch.setattr("edge.cli.GPIO_CHIPS", str(tmp_path / "gpiochip*"))
    assert main(["led-off", "--config", str(config)]) == 0
    assert factory.pin(PIN).state == (not lit)


def test_led_off_where_there_is_no_gpio_does_nothing_and_says_nothing(tmp_path, monkeypatch, capsys):
    from edge.cli import main

    config = tmp_path / "edge.yaml"
    config.write_text(f"led: {{pin: {PIN}}}\n")
    monkeypatch.setattr("edge.cli.GPIO_CHIPS", str(tmp_path / "gpiochip*"))
    assert main(["led-off", "--config", str(config)]) == 0
    assert capsys.readouterr().err == ""  # not a warning in the journal at every restart
