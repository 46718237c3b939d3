"""The capture process: PortAudio/ALSA in a child process of its own, raw blocks to stdout.

Why a process: a read stuck in the driver cannot be stopped from inside the process. When
the file behind ALSA's file plugin (or a driver) stops delivering without failing, PortAudio
blocks in read(), and closing the stream waits for it forever (PortAudio joins a thread that
has cancellation disabled): the stream, its device and PortAudio's global state stay held, so
no reopen can succeed. A process can always be ended: SIGKILL frees the device and every
file it held, and the next open is a fresh process with a fresh PortAudio that rescans ALSA.

Run as ``python -m edge.capture PARAMS_JSON``. Messages on stdout are a 5-byte header (kind,
payload length as little-endian uint32) and the payload:

- ``R`` ready: JSON with the device's ``name``, ``rate``, ``channels``, ``block`` frames and
  ``driver_buffer_s``, the driver's buffer as PortAudio reports it;
- ``A`` a block of little-endian int16 audio; ``O`` the same after a driver overflow;
- ``E`` an error, as one line of text; the process then exits.

Only the standard library and PyAudio are imported here: this process lives as long as the
microphone and should cost little memory.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import struct
import sys
from dataclasses import dataclass
from typing import Optional

from .errors import missing_device_module
from .logs import quiet_stderr

HEADER = struct.Struct("<cI")
TARGET_RATE = 16000
WINDOW = 512
PROBE_RATES = (16000, 44100, 48000)
HW_NAME = re.compile(r"^(?:plug)?hw:(?:CARD=)?([^,]+)(?:,(?:DEV=)?(\d+))?$")
PR_SET_PDEATHSIG = 1
PA_INT16 = 0x8
PA_INPUT_OVERFLOWED = -9981
# How far the capture process may fall behind the card before audio is lost in the driver.
# A stall of the whole machine (the kernel included) longer than the buffer loses audio
# that ALSA may not even report: the card's position is known only modulo the buffer, so a
# jump of more than one buffer can pass for less and no overrun is seen. The virtual Pi,
# stopped for 0.7-1.0 s at a time, lost audio silently with 0.5 s and nothing with 2 s
# (docs/virtual-pi.md). Cards that allow less give what they allow (the log says what).
DRIVER_BUFFER_S = 2.0
# Audio comes in blocks of this many detector windows (128 ms): every block wakes this
# process and the recorder, and each wake-up costs more than the work it brings (cold caches,
# thread hand-offs), so four windows a wake-up halve the daemon's CPU against one (bench).
# The LED lights up to three windows later; the detector still scores every window.
BLOCK_WINDOWS = 4
BLOCK = BLOCK_WINDOWS * WINDOW  # samples of a block at 16 kHz


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    channels: int
    default_rate: int
    rates: tuple


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


def send(kind: bytes, payload: bytes) -> None:
    os.write(1, HEADER.pack(kind, len(payload)) + payload)


def _die_with_parent(parent: int) -> None:
    # A capture process outliving a SIGKILLed daemon would hold the microphone forever.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        sys.exit(0)


class PortAudioStream:
    """A blocking PortAudio input stream with a driver buffer of ``DRIVER_BUFFER_S``.

    PyAudio opens every stream with PortAudio's *low* default latency, and ALSA's buffer
    follows it: two periods of a block, so the capture process could fall behind by a single
    period before the card overran. A busy or emulated CPU, a stall of the
    SD card or a burst from a USB microphone is longer than that (the virtual Pi lost audio
    at every segment). PyAudio cannot ask for more, so the stream is opened here through
    PortAudio's own API, in the library PyAudio loaded (one PortAudio, one device list).
    """

    class Parameters(ctypes.Structure):
        _fields_ = [("device", ctypes.c_int), ("channelCount", ctypes.c_int),
                    ("sampleFormat", ctypes.c_ulong), ("suggestedLatency", ctypes.c_double),
                    ("hostApiSpecificStreamInfo", ctypes.c_void_p)]

    class Info(ctypes.Structure):
        _fields_ = [("structVersion", ctypes.c_int), ("inputLatency", ctypes.c_double),
                    ("outputLatency", ctypes.c_double), ("sampleRate", ctypes.c_double)]

    def __init__(self, device: InputDevice, rate: int, channels: int, block: int):
        self._lib = _portaudio_library()
        self._lib.Pa_GetErrorText.restype = ctypes.c_char_p
        self._lib.Pa_GetStreamInfo.restype = ctypes.POINTER(self.Info)
        self._lib.Pa_ReadStream.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ulong]
        self._stream = ctypes.c_void_p()
        self.block = block
        self._buffer = ctypes.create_string_buffer(block * channels * 2)
        parameters = self.Parameters(device.index, channels, PA_INT16, DRIVER_BUFFER_S, None)
        self._check(self._lib.Pa_OpenStream(ctypes.byref(self._stream), ctypes.byref(parameters), None,
                                            ctypes.c_double(rate), ctypes.c_ulong(block),
                                            ctypes.c_ulong(0), None, None))
        self.latency_s = self._lib.Pa_GetStreamInfo(self._stream).contents.inputLatency

    def _check(self, error: int) -> None:
        if error < 0:
            raise OSError(self._lib.Pa_GetErrorText(error).decode(errors="replace"))

    def start(self) -> None:
        self._check(self._lib.Pa_StartStream(self._stream))

    def read(self) -> tuple[bytes, bool]:
        """The next block and whether the driver overran before it; OSError when the device fails."""
        error = self._lib.Pa_ReadStream(self._stream, self._buffer, self.block)
        if error != PA_INPUT_OVERFLOWED:
            self._check(error)
        return self._buffer.raw, error == PA_INPUT_OVERFLOWED


def _portaudio_library() -> ctypes.CDLL:
    """The PortAudio that PyAudio's extension loaded (dlopen gives back the same copy)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "libportaudio" in os.path.basename(path):
                return ctypes.CDLL(path)
    return ctypes.CDLL("libportaudio.so.2")


def capture(device_name: str, capture_rate: Optional[int]) -> str:
    """Open the device, stream its blocks to stdout until the device fails; the reason."""
    import pyaudio

    with quiet_stderr():
        # A new PortAudio instance rescans ALSA, so a re-plugged USB mic is found again.
        pa = pyaudio.PyAudio()
        devices = list_input_devices(pa)
    device = pick_device(devices, device_name)
    if device is None:
        names = "; ".join(d.name for d in devices) or "none"
        return f"audio.device '{device_name}' not found (capture devices: {names})"
    rate = capture_rate or (TARGET_RATE if TARGET_RATE in device.rates else device.default_rate)
    channels = 1 if device.rates or device.channels == 1 else min(2, device.channels)
    block = round(BLOCK * rate / TARGET_RATE)
    try:
        with quiet_stderr():
            stream = PortAudioStream(device, rate, channels, block)
    except OSError as exc:
        return f"cannot open '{device.name}' at {rate} Hz: {exc}"
    # Ready before the first block, so the reader knows the format of every block.
    send(b"R", json.dumps({"name": device.name, "rate": rate, "channels": channels,
                           "block": block, "driver_buffer_s": stream.latency_s}).encode())
    try:
        stream.start()
        while True:
            data, overran = stream.read()
            send(b"O" if overran else b"A", data)
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        return f"the capture stream failed: {exc}"


def main(argv: list[str]) -> int:
    params = json.loads(argv[0])
    # The recorder ends this process (SIGKILL) when it closes the microphone. A stop of the
    # service (SIGTERM to every process of the unit) or Ctrl-C at a terminal (SIGINT to the
    # whole process group) is the recorder's to handle: its audio must not end first.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(params["parent"])
    try:
        send(b"E", capture(params["device"], params["capture_rate"]).encode())
    except BrokenPipeError:
        return 0  # the recorder closed the microphone
    except ModuleNotFoundError as exc:  # an office install (no device extra)
        send(b"E", missing_device_module(exc.name).encode())
    return 1


if __name__ == "__main__":
    # Run as the module edge.capture, not as __main__: mutation testing (tests/mutate.py)
    # swaps a function for its mutant by the module's name, in this process too.
    from edge.capture import main as module_main

    sys.exit(module_main(sys.argv[1:]))
