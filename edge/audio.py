"""Where frames come from: a microphone through PyAudio/ALSA, or a WAV file.

Both give the pipeline the same thing: 512-sample int16 frames at 16 kHz, as many whole
frames at a time as came in together (a capture block: four), with counts of what was lost
on the way.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, Optional, Protocol

import numpy as np

from .capture import BLOCK_WINDOWS, HEADER, WINDOW, list_input_devices, pick_device
from .config import AudioSettings
from .logs import quiet_stderr
from .resample import TARGET_RATE, StreamingResampler
from .wavio import iter_wav_16k

log = logging.getLogger(__name__)

KILL_WAIT_S = 5.0
STOP_CHECK_S = 0.1
"""How often an open in progress looks whether the recorder is stopping."""


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
        """The next frames (one or more whole frames in one array); None when none came
        within ``timeout`` seconds.

        Raises EndOfInput after the last frame, CaptureError when the device failed."""

    def close(self) -> None: ...


class FrameAssembler:
    """Cuts blocks of any length into whole 512-sample frames."""

    def __init__(self):
        self._pending = np.zeros(0, dtype=np.int16)

    def add(self, block: np.ndarray) -> np.ndarray:
        """The whole frames completed by ``block``, in one array (empty when none)."""
        data = np.concatenate([self._pending, block]) if len(self._pending) else block
        whole = len(data) // WINDOW * WINDOW
        self._pending = data[whole:]
        return data[:whole]


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
            frames = assembler.add(block)
            if len(frames):
                yield frames

    def read(self, timeout: float) -> Optional[np.ndarray]:
        try:
            return next(self._frames)
        except StopIteration:
            raise EndOfInput from None

    def close(self) -> None:
        self._frames = None


class MicrophoneSource:
    """An ALSA capture device through PyAudio, captured in a process of its own.

    The capture process (edge.capture) only forwards raw blocks; conversion and resampling
    happen in the reader. A thread here drains its pipe into a queue of ``buffer_s``
    seconds: a full queue means the detector fell behind, and those blocks are counted, not
    hidden. Neither opening nor closing can block for long: an open that does not finish
    within ``open_timeout_s`` fails (or as soon as ``stopping`` is set: a service being
    stopped does not wait for a device that does not answer), and closing kills the
    process, whatever state its driver is in.
    """

    def __init__(self, settings: AudioSettings, stopping: Optional[threading.Event] = None):
        self.settings = settings
        self.stopping = stopping
        self.name = f"mic:{settings.device}"
        self.overflows = 0
        self.dropped_frames = 0
        self.device_name = ""
        self.driver_buffer_s = 0.0
        """How far the capture process may fall behind the device before audio is lost in the driver."""
        self._process: Optional[subprocess.Popen] = None
        self._drain: Optional[threading.Thread] = None
        self._failure: Optional[str] = None
        self._queue: queue.Queue = queue.Queue()
        self._assembler = FrameAssembler()
        self._resampler: Optional[StreamingResampler] = None
        self._channels = 1
        self.rate = TARGET_RATE

    def open(self) -> None:
        params = {"device": self.settings.device, "capture_rate": self.settings.capture_rate,
                  "parent": os.getpid()}
        self._failure = None
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "edge.capture", json.dumps(params)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        except OSError as exc:
            raise CaptureError(f"cannot start the capture process {sys.executable}: {exc.strerror}") from None
        opened: queue.Queue = queue.Queue()
        self._queue = queue.Queue()  # sized once the rate is known; nothing arrives before
        self._drain = threading.Thread(target=self._forward, args=(self._process.stdout, opened),
                                       name="capture-drain", daemon=True)
        self._drain.start()
        timeout = self.settings.open_timeout_s
        deadline = time.monotonic() + timeout
        while True:
            try:
                kind, payload = opened.get(timeout=min(STOP_CHECK_S, max(0.0, deadline - time.monotonic())))
                break
            except queue.Empty:
                if self.stopping is not None and self.stopping.is_set():
                    self.close()
                    raise CaptureError(f"opening '{self.settings.device}' given up: the recorder is stopping") from None
                if time.monotonic() >= deadline:
                    self.close()
                    raise CaptureError(f"opening '{self.settings.device}' did not finish within {timeout:g} s "
                                       "(audio.open_timeout_s)") from None
        if kind != b"R":
            self.close()
            raise CaptureError(payload.decode(errors="replace"))
        info = json.loads(payload)
        self.device_name, self.rate = info["name"], info["rate"]
        self.driver_buffer_s = info["driver_buffer_s"]
        self._channels = info["channels"]
        self._assembler = FrameAssembler()
        self._resampler = StreamingResampler(self.rate) if self.rate != TARGET_RATE else None
        log.info("capturing from '%s' at %d Hz%s (driver buffer %.2f s)", self.device_name, self.rate,
                 "" if self._resampler is None else ", resampled to 16000 Hz", self.driver_buffer_s)

    def _forward(self, pipe, opened: queue.Queue) -> None:
        """The drain thread: messages from the capture process to the queues."""
        audio = None  # made when the format is known, before the first block
        while True:
            header = pipe.read(HEADER.size)
            if len(header) < HEADER.size:
                break
            kind, length = HEADER.unpack(header)
            payload = pipe.read(length)
            if len(payload) < length:
                break  # the process ended in the middle of a message: a torn block is no audio
            if kind in (b"A", b"O"):
                if kind == b"O":
                    self.overflows += 1
                try:
                    audio.put_nowait(payload)
                except queue.Full:
                    # A block holds BLOCK_WINDOWS windows once at 16 kHz, whatever the device's rate.
                    self.dropped_frames += BLOCK_WINDOWS
            elif kind == b"R":
                info = json.loads(payload)
                audio = queue.Queue(maxsize=max(2, int(self.settings.buffer_s * info["rate"] / info["block"])))
                self._queue = audio
                opened.put((kind, payload))
            else:
                self._failure = payload.decode(errors="replace")
                opened.put((kind, payload))
                return
        self._failure = self._failure or "the capture process ended"
        opened.put((b"E", self._failure.encode()))

    def read(self, timeout: float) -> Optional[np.ndarray]:
        while True:
            try:
                data = self._queue.get(timeout=timeout)
            except queue.Empty:
                if self._failure is not None:
                    raise CaptureError(self._failure) from None
                return None
            block = np.frombuffer(data, dtype="<i2")
            if self._channels > 1:
                block = block.reshape(-1, self._channels).mean(axis=1).astype(np.int16)
            if self._resampler is not None:
                block = self._resampler.process(block)
            frames = self._assembler.add(block)
            if len(frames):
                return frames

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        # SIGKILL, not a polite stop: a process stuck in the driver cannot run a handler.
        process.kill()
        try:
            process.wait(timeout=KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            # Unkillable for now (uninterruptible sleep in a driver): not worth blocking on;
            # subprocess reaps it later.
            log.warning("capture process %d did not end within %g s", process.pid, KILL_WAIT_S)
        else:
            self._drain.join(timeout=KILL_WAIT_S)
            process.stdout.close()


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
