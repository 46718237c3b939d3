"""The status LED: solid while speech is being recorded, distinct blinks for everything else.

The daemon owns the LED. Whatever else wants to show something (the USB export) tells the
daemon, which picks the pattern; two processes never drive one GPIO line.
"""

from __future__ import annotations

import enum
import logging
import warnings
from typing import Iterator, Optional, Protocol

from .config import LedSettings

log = logging.getLogger(__name__)

GPIO_CHIPS = "/dev/gpiochip*"


class LedPattern(enum.Enum):
    """What the LED shows, with its blink timing: seconds on, off, on, off... repeated.

    ``None`` timing is steady: SPEECH is steady on, OFF steady off.
    """

    OFF = None
    SPEECH = (1.0, 0.0)
    LISTENING = (0.05, 2.95)
    MIC_MISSING = (0.1, 0.1)
    DISK_FULL = (1.0, 1.0)
    EXPORTING = (0.25, 0.25)
    EXPORT_DONE = (2.0, 0.2)
    EXPORT_FAILED = (0.1, 0.9)
    PAUSED = (0.15, 0.15, 0.15, 1.55)  # a double flash every 2 s: nothing is being recorded
    FORGOTTEN = (0.6, 0.2, 0.6, 0.2, 0.6, 0.8)  # three long flashes: the last minutes are gone


class Indicator(Protocol):
    name: Optional[str]
    """The GPIO line it holds ("GPIO17"), None for none: `edge doctor` must not open it again."""

    def show(self, pattern: LedPattern) -> None:
        """Switch to ``pattern``; showing the pattern already shown changes nothing."""

    def close(self) -> None:
        """Turn the LED off and release the pin."""


class NullIndicator:
    """Where there is no LED: every pattern is accepted and nothing happens."""

    name = None

    def show(self, pattern: LedPattern) -> None:
        pass

    def close(self) -> None:
        pass


class LedIndicator:
    """A gpiozero LED showing one pattern at a time."""

    def __init__(self, pin: int, active_high: bool = True, heartbeat: bool = True, pin_factory=None):
        from gpiozero import LED

        self._led = LED(pin, active_high=active_high, initial_value=False, pin_factory=pin_factory)
        self.name = f"GPIO{pin}"
        self._heartbeat = heartbeat
        self._pattern: Optional[LedPattern] = LedPattern.OFF

    def show(self, pattern: LedPattern) -> None:
        if pattern is LedPattern.LISTENING and not self._heartbeat:
            pattern = LedPattern.OFF
        if pattern is self._pattern:
            return
        if self._pattern is not None and self._pattern.value is not None and len(self._pattern.value) > 2:
            self._led.source = None  # ends the sequence's thread before the next pattern starts
        self._pattern = pattern
        if pattern is LedPattern.OFF:
            self._led.off()
        elif pattern is LedPattern.SPEECH:
            self._led.on()
        elif len(pattern.value) == 2:
            on_time, off_time = pattern.value
            self._led.blink(on_time=on_time, off_time=off_time)
        else:
            self._led.source = self._sequence(pattern.value)

    def _sequence(self, timing: tuple) -> Iterator[bool]:
        """On/off values for gpiozero's ``source`` loop, which holds each value for its
        ``source_delay``: set here to the duration of the value about to be yielded."""
        while True:
            for index, seconds in enumerate(timing):
                self._led.source_delay = seconds
                yield index % 2 == 0

    def close(self) -> None:
        self._led.close()


def make_indicator(settings: LedSettings, pin_factory=None) -> Indicator:
    """The configured LED, or a no-op indicator (said once in the log) where there is none."""
    if settings.pin is None:
        log.info("no LED configured (led.pin is null)")
        return NullIndicator()
    try:
        with warnings.catch_warnings():
            # gpiozero warns once per pin library it tries; the outcome is logged below.
            warnings.simplefilter("ignore")
            return LedIndicator(settings.pin, settings.active_high, settings.heartbeat, pin_factory)
    except Exception as exc:  # gpiozero raises many kinds when there is no GPIO at all
        log.warning("LED on GPIO%d unavailable, running without it: %s", settings.pin, exc)
        return NullIndicator()
