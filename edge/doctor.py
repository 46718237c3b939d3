"""`edge status` (what the running daemon published) and `edge doctor` (is this machine
ready to record: one line per check, OK or FAIL with how to fix it)."""

from __future__ import annotations

import argparse
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .audio import CaptureError, MicrophoneSource
from .clock import SystemClock
from .config import Settings, add_config_argument, default_config_path, load_config, resolve_data_path
from .errors import EdgeError
from .status import read_status, status_age_s
from .storage import FreeSpaceGuard
from .vad import SileroVad, configured_model

STALE_AFTER_S = 30.0


def status_command(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    path = resolve_data_path(settings.service.status_file)
    try:
        status = read_status(path)
    except PermissionError:
        raise EdgeError(f"{path}: permission denied (the recorder's files are private: sudo edge status)") from None
    if status is None:
        raise EdgeError(f"{path}: no status published; is the recorder running? "
                        "(systemctl status edge-recorder)")
    age = status_age_s(status, SystemClock().wall())
    running = "running" if age < STALE_AFTER_S else f"NOT RUNNING? last update {age:.0f} s ago"
    free = status.get("free_mb")
    print(f"recorder:       {running} (pid {status['pid']})")
    print(f"state:          {status['state']} since {status['since']}")
    print(f"last speech:    {status['last_speech'] or 'none yet'}")
    print(f"segments today: {status['segments_today']}")
    print(f"free space:     {'unknown' if free is None else f'{free:.0f} MB'}")
    print(f"audio lost:     {status['overflows']} overflows, {status['dropped_frames']} dropped frames")
    for error in status["errors"] or ["none"]:
        print(f"recent problem: {error}")
    return 0 if age < STALE_AFTER_S else 1


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str
    fix: str = ""

    def line(self, name: str) -> str:
        text = f"{'OK  ' if self.ok else 'FAIL'} {name}: {self.detail}"
        return text if self.ok or not self.fix else f"{text} -> {self.fix}"


def check_model(settings: Settings) -> CheckResult:
    try:
        detector = SileroVad(configured_model(settings.detector))
        detector(np.zeros(SileroVad.WINDOW, np.int16))
    except EdgeError as exc:
        return CheckResult(False, str(exc), "set detector.model to a Silero .tflite file or reinstall")
    return CheckResult(True, f"{detector.model_path.name} loads and runs")


def check_microphone(settings: Settings) -> CheckResult:
    source = MicrophoneSource(settings.audio)
    try:
        source.open()
        frame = source.read(timeout=2.0)
    except CaptureError as exc:
        return CheckResult(False, str(exc), "plug in the microphone or set audio.device (see: edge devices)")
    finally:
        source.close()
    if frame is None:
        return CheckResult(False, f"'{settings.audio.device}' opened but gave no audio in 2 s",
                           "check the cable or choose another device (edge devices)")
    return CheckResult(True, f"'{settings.audio.device}' gives audio at {source.rate} Hz")


def check_gpio(settings: Settings) -> CheckResult:
    if settings.led.pin is None:
        return CheckResult(True, "no LED configured")
    try:
        from gpiozero import LED
        from gpiozero.exc import BadPinFactory

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one per pin library gpiozero tries; the outcome is below
            LED(settings.led.pin).close()
    except BadPinFactory:
        return CheckResult(False, f"GPIO{settings.led.pin}: no GPIO here (no pin library could drive it)",
                           "on a Raspberry Pi: sudo apt install python3-lgpio, then rm -rf .venv; "
                           "elsewhere set led.pin: null")
    except Exception as exc:  # gpiozero has many ways to say there is no GPIO
        return CheckResult(False, f"GPIO{settings.led.pin}: {exc}",
                           "add the user to the gpio group, or set led.pin: null")
    return CheckResult(True, f"LED on GPIO{settings.led.pin}")


def check_storage(settings: Settings) -> CheckResult:
    root = resolve_data_path(settings.storage.recordings_dir)
    existing = next((p for p in [root, *root.parents] if p.exists()), Path("/"))
    if not os.access(existing, os.W_OK):
        return CheckResult(False, f"{existing} is not writable by this user",
                           "run as the edge-recorder user or fix the folder's owner")
    free = FreeSpaceGuard(existing, settings.storage.min_free_mb, "stop").free_mb()
    if free < settings.storage.min_free_mb:
        return CheckResult(False, f"{free:.0f} MB free under {existing}, below the "
                           f"{settings.storage.min_free_mb} MB floor", "copy recordings off (edge export)")
    return CheckResult(True, f"{root} writable, {free:.0f} MB free")


def check_clock(settings: Settings) -> CheckResult:
    if SystemClock().synced():
        return CheckResult(True, "synchronised by systemd-timesyncd")
    return CheckResult(False, "not synchronised (no network time yet): wall times may be off, "
                       "file order is still right", "connect to a network once, or add an RTC")


CHECKS: dict[str, Callable[[Settings], CheckResult]] = {
    "model": check_model,
    "microphone": check_microphone,
    "gpio": check_gpio,
    "storage": check_storage,
    "clock": check_clock,
}


def doctor_command(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    print(f"OK   config: {args.config or default_config_path()}")
    failed = 0
    for name, check in CHECKS.items():
        result = check(settings)
        failed += not result.ok
        print(result.line(name), flush=True)
    return 1 if failed else 0


def add_command(subparsers) -> None:
    for name, func, text in (
        ("status", status_command, "what the running recorder is doing"),
        ("doctor", doctor_command, "check microphone, model, GPIO, storage and clock"),
    ):
        parser = subparsers.add_parser(name, help=text)
        add_config_argument(parser)
        parser.set_defaults(func=func)
