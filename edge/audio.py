"""Where frames come from: a microphone through PyAudio/ALSA, or a WAV file.

Both give the pipeline the same thing: 512-sample int16 frames at 16 kHz, one at a time,
with counts of what was lost on the way.
"""

from __future__ import annotations

import logging
import os
import queue
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Protocol

import numpy as np

from .config import AudioSettings
from .logs import quiet_stderr
from .resample import TARGET_RATE, StreamingResampler
from .wavio import iter_wav_16k

log = logging.getLogger(__name__)

WINDOW = 512


class EndOfInput(Exception):
    """The source has no more audio (end of a file)."""


class CaptureError(Exception):
    """The microphone failed or vanished; the caller may reopen it."""


class FrameSource(Protocol):
    name: str
    overflows: int
    """Times the device delivered audio faster than it was read (audio lost in the driver)."""
    dropped_frames: int
    """32 ms frames thrown away because the detector fell behind the capture buffer."""

    def open(self) -> None: ...

    def read(self, timeout: float) -> Optional[np.ndarray]:
        """The next frame; None when none came within ``timeout`` seconds.

        Raises EndOfInput after the last frame, CaptureError when the device failed."""

    def close(self) -> None: ...


class FrameAssembler:
    """Cuts blocks of any length into 512-sample frames."""

    def __init__(self):
        self._pending = np.zeros(0, dtype=np.int16)

    def add(self, block: np.ndarray) -> list[np.ndarray]:
        data = np.concatenate([self._pending, block]) if len(self._pending) else block
        count = len(data) // WINDOW
        self._pending = data[count * WINDOW:]
        return [data[i * WINDOW:(i + 1) * WINDOW] for i in range(count)]


class WavFileSource:
    """A WAV file read as fast as the CPU allows. A trailing partial frame (under 32 ms) is
    left out, as the detector cannot score it; stored audio is always audio of the file."""

    overflows = 0
    dropped_frames = 0

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.name = str(path)
        self._frames: Optional[Iterator[np.ndarray]] = None

    def open(self) -> None:
        self._frames = self._generate()

    def _generate(self) -> Iterator[np.ndarray]:
        assembler = FrameAssembler()
        for block in iter_wav_16k(self.path):
            yield from assembler.add(block)

    def read(self, timeout: float) -> Optional[np.ndarray]:
        try:
            return next(self._frames)
        except StopIteration:
            raise EndOfInput from None

    def close(self) -> None:
        self._frames = None


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    channels: int
    default_rate: int
    rates: tuple


PROBE_RATES = (16000, 44100, 48000)
HW_NAME = re.compile(r"^(?:plug)?hw:(?:CARD=)?([^,]+)(?:,(?:DEV=)?(\d+))?$")


def list_input_devices(pa) -> list[InputDevice]:
    import pyaudio

    devices = []
    for index in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(index)
        if info["maxInputChannels"] < 1:
            continue
        rates = []
        for rate in PROBE_RATES:
            try:
                if pa.is_format_supported(rate, input_device=index, input_channels=1,
                                          input_format=pyaudio.paInt16):
                    rates.append(rate)
            except ValueError:
                pass
        devices.append(InputDevice(index, info["name"], int(info["maxInputChannels"]),
                                   int(info["defaultSampleRate"]), tuple(rates)))
    return devices


def _alsa_card_number(card: str) -> Optional[str]:
    """ALSA card id (as in CARD=Device) to its number, through /proc/asound/<id> -> cardN."""
    if card.isdigit():
        return card
    try:
        return os.readlink(f"/proc/asound/{card}").removeprefix("card")
    except OSError:
        return None


def pick_device(devices: list[InputDevice], wanted: str) -> Optional[InputDevice]:
    """The device a config name means: an exact PortAudio name, an ALSA hw/plughw name
    (PortAudio lists those as '... (hw:N,M)'), or else a unique-enough substring."""
    for device in devices:
        if device.name == wanted:
            return device
    match = HW_NAME.match(wanted)
    if match:
        number = _alsa_card_number(match.group(1))
        tag = f"(hw:{number},{match.group(2) or 0})"
        for device in devices:
            if number is not None and device.name.endswith(tag):
                return device
    for device in devices:
        if wanted.lower() in device.name.lower():
            return device
    return None


class MicrophoneSource:
    """An ALSA capture device through PyAudio, read in PortAudio's own thread.

    The callback only queues the raw block: conversion and resampling happen in the reader.
    A full queue means the detector fell behind; those blocks are counted, not hidden.
    """

    def __init__(self, settings: AudioSettings):
        self.settings = settings
        self.name = f"mic:{settings.device}"
        self.overflows = 0
        self.dropped_frames = 0
        self._pa = None
        self._stream = None
        self._queue: queue.Queue = queue.Queue()
        self._assembler = FrameAssembler()
        self._ready: list = []
        self._resampler: Optional[StreamingResampler] = None
        self._channels = 1
        self._block_windows = 1.0
        self.rate = TARGET_RATE

    def open(self) -> None:
        import pyaudio

        with quiet_stderr():
            # A new PortAudio instance rescans ALSA, so a re-plugged USB mic is found again.
            self._pa = pyaudio.PyAudio()
            devices = list_input_devices(self._pa)
        device = pick_device(devices, self.settings.device)
        if device is None:
            self._terminate()
            names = "; ".join(d.name for d in devices) or "none"
            raise CaptureError(f"audio.device '{self.settings.device}' not found "
                               f"(capture devices: {names})")
        self.rate = self.settings.capture_rate or (
            TARGET_RATE if TARGET_RATE in device.rates else device.default_rate)
        self._channels = 1 if device.rates or device.channels == 1 else min(2, device.channels)
        block = round(WINDOW * self.rate / TARGET_RATE)
        self._block_windows = block * TARGET_RATE / self.rate / WINDOW
        self._queue = queue.Queue(maxsize=max(2, int(self.settings.buffer_s * self.rate / block)))
        self._assembler = FrameAssembler()
        self._ready = []
        self._resampler = StreamingResampler(self.rate) if self.rate != TARGET_RATE else None
        try:
            with quiet_stderr():
                self._stream = self._pa.open(
                    format=pyaudio.paInt16, channels=self._channels, rate=self.rate, input=True,
                    input_device_index=device.index, frames_per_buffer=block,
                    stream_callback=self._on_audio)
        except (OSError, ValueError) as exc:
            self._terminate()
            raise CaptureError(f"cannot open '{device.name}' at {self.rate} Hz: {exc}") from None
        log.info("capturing from '%s' at %d Hz%s", device.name, self.rate,
                 "" if self._resampler is None else ", resampled to 16000 Hz")

    def _on_audio(self, data, frame_count, time_info, status):
        import pyaudio

        if status & pyaudio.paInputOverflow:
            self.overflows += 1
        try:
            self._queue.put_nowait(data)
        except queue.Full:
            self.dropped_frames += round(self._block_windows)
        return None, pyaudio.paContinue

    def read(self, timeout: float) -> Optional[np.ndarray]:
        while not self._ready:
            try:
                data = self._queue.get(timeout=timeout)
            except queue.Empty:
                if self._stream is not None and not self._stream.is_active():
                    raise CaptureError("the capture stream stopped") from None
                return None
            block = np.frombuffer(data, dtype="<i2")
            if self._channels > 1:
                block = block.reshape(-1, self._channels).mean(axis=1).astype(np.int16)
            if self._resampler is not None:
                block = self._resampler.process(block)
            self._ready.extend(self._assembler.add(block))
        return self._ready.pop(0)

    def close(self) -> None:
        if self._stream is not None:
            try:
                # Closing an active stream aborts it, which also ends a read stuck in the driver.
                self._stream.close()
            except OSError as exc:
                log.debug("closing the capture stream: %s", exc)
            self._stream = None
        self._terminate()

    def _terminate(self) -> None:
        if self._pa is not None:
            self._pa.terminate()
            self._pa = None


def describe_devices(settings: AudioSettings) -> list[str]:
    """One line per capture device with its rates, marking the one the config picks."""
    import pyaudio

    with quiet_stderr():
        pa = pyaudio.PyAudio()
        try:
            devices = list_input_devices(pa)
        finally:
            pa.terminate()
    chosen = pick_device(devices, settings.device)
    lines = []
    for device in devices:
        mark = "*" if device == chosen else " "
        rates = ", ".join(str(r) for r in device.rates) or f"{device.default_rate} (default)"
        lines.append(f"{mark} {device.name}  [{device.channels} ch; {rates} Hz]")
    if chosen is None:
        lines.append(f"audio.device '{settings.device}' matches none of these")
    return lines
