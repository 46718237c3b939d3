"""The status LED: solid while speech is being recorded, distinct blinks for everything else.

The daemon owns the LED. Whatever else wants to show something (the USB export) tells the
daemon, which picks the pattern; two processes never drive one GPIO line.
"""

from __future__ import annotations

import enum
import logging
import warnings
from typing import Optional, Protocol

from .config import LedSettings

log = logging.getLogger(__name__)

GPIO_CHIPS = "/dev/gpiochip*"


class LedPattern(enum.Enum):
    """What the LED shows, with its (on seconds, off seconds) blink timing.

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


class Indicator(Protocol):
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
        self._pattern = pattern
        if pattern is LedPattern.OFF:
            self._led.off()
        elif pattern is LedPattern.SPEECH:
            self._led.on()
        else:
            on_time, off_time = pattern.value
            self._led.blink(on_time=on_time, off_time=off_time)

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
