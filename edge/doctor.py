"""`edge status` (what the running daemon published) and `edge doctor` (is this machine
ready to record: one line per check, OK or FAIL with how to fix it)."""

from __future__ import annotations

import argparse
import glob
import importlib.util
import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .audio import CaptureError, MicrophoneSource
from .clock import SystemClock
from .config import (Settings, add_config_argument, default_config_path, load_config, resolve_data_path,
                     resolve_runtime_path)
from .detector import make_detector
from .encryption import recipient_arguments
from .errors import DEVICE_MODULES, EdgeError, permission_denied
from .indicator import GPIO_CHIPS
from .manifest import moved_aside
from .status import RecorderState, is_recorder_process, read_status, state_line, status_age_s
from .storage import FreeSpaceGuard
from .sync import SyncFailed, make_rclone
from .sync_state import configured_remote, split_remote, status_lines
from .vad import SileroVad

STALE_AFTER_S = 30.0


def status_locations(settings: Settings) -> tuple[Path, Path]:
    """Where the daemon publishes its status (in memory), and where earlier versions
    published it on the card: status.json in the state directory, the recordings' parent."""
    return (resolve_runtime_path(settings.service.status_file),
            resolve_data_path(settings.storage.recordings_dir).parent / "status.json")


def find_status(settings: Settings, now: datetime) -> tuple[Path, Optional[dict]]:
    """The status to show and its file: the one published in memory, unless it shows no
    recorder running and the old place on the card shows one that runs (an upgrade whose
    daemon has not restarted yet). A file left at the old place by a daemon that has since
    stopped is never taken for the current one."""
    current, legacy = status_locations(settings)
    status = read_status(current)
    if legacy != current:
        try:
            old = read_status(legacy)
        except PermissionError:
            old = None
        if old is not None and daemon_state(old, now)[0] and (
                status is None or not daemon_state(status, now)[0]):
            return legacy, old
    return current, status


def status_command(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    now = SystemClock().wall()
    path, status = find_status(settings, now)
    if status is None:
        raise EdgeError(f"{path}: no status published; is the recorder running? "
                        "(systemctl status edge-recorder)")
    running, line = daemon_state(status, now)
    free = status.get("free_mb")
    print(f"recorder:       {line}")
    print(f"state:          {state_line(status)} since {status['since']}")
    print(f"last speech:    {status['last_speech'] or 'none yet'}")
    print(f"segments today: {status['segments_today']}")
    print(f"free space:     {'unknown' if free is None else f'{free:.0f} MB'}")
    print(f"audio lost:     {status['overflows']} overflows, {status['dropped_frames']} dropped frames")
    print(f"oldest segment: {_oldest_segment(status, settings.storage.keep_days)}")
    if status.get("retention_paused"):
        print(f"retention:      paused, nothing is deleted: {status['retention_paused']}")
    for error in status["errors"] or ["none"]:
        print(f"recent problem: {error}")
    for line in status_lines(settings):
        print(line)
    return 0 if running else 1


def daemon_state(status: dict, now) -> tuple[bool, str]:
    """Whether the daemon that published ``status`` runs, and the line that says so.

    Its process must be alive and be `edge run` (the file outlives the daemon, and its pid
    may be reused); a live daemon whose status stopped changing is hung."""
    pid = status["pid"]
    alive = is_recorder_process(pid)
    age = status_age_s(status, now)
    if alive is None:  # this user cannot see the process: the file's age is all there is
        alive = age < STALE_AFTER_S
    if not alive:
        since = status["since"] if status["state"] == RecorderState.STOPPED.value else status["updated"]
        errors = status["errors"]
        last = f"; last error: {errors[-1]}" if errors else ""
        return False, f"not running since {since} (was pid {pid}{last})"
    if age >= STALE_AFTER_S:
        return False, f"NOT RESPONDING (pid {pid}): last update {age:.0f} s ago"
    return True, f"running (pid {pid})"


def _oldest_segment(status: dict, keep_days) -> str:
    policy = (f"deleted after {keep_days:g} days" if keep_days is not None
              else "kept until exported (storage.keep_days: null)")
    name, days = status.get("oldest_segment"), status.get("oldest_segment_days")
    if name is None:
        return "none on the card"
    if days is None:
        return f"{name}, age unknown (recorded before the clock was synchronised); {policy}"
    return f"{name}, recorded {days:.1f} days ago; {policy}"


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str
    fix: str = ""

    def line(self, name: str) -> str:
        text = f"{'OK  ' if self.ok else 'FAIL'} {name}: {self.detail}"
        return text if self.ok or not self.fix else f"{text} -> {self.fix}"


def check_model(settings: Settings, daemon: Optional[dict]) -> CheckResult:
    try:
        detector = make_detector(settings)
        detector(np.zeros(SileroVad.WINDOW, np.int16))
    except EdgeError as exc:
        return CheckResult(False, str(exc), "set detector.model to a Silero .tflite file or reinstall")
    hears = "through the noise suppressor" if settings.denoise.enabled else "without noise suppression"
    return CheckResult(True, f"{detector.model_path.name} loads and runs ({hears})")


def check_microphone(settings: Settings, daemon: Optional[dict]) -> CheckResult:
    device = settings.audio.device
    if daemon is not None:
        # The recorder holds the device: a second open would fail as busy on a real card.
        if daemon["state"] == RecorderState.MIC_MISSING.value:
            last = daemon["errors"][-1] if daemon["errors"] else "no details"
            return CheckResult(False, f"the recorder (pid {daemon['pid']}) has been waiting for '{device}' "
                               f"since {daemon['since']} ({last})",
                               "plug in the microphone or set audio.device (see: edge devices)")
        return CheckResult(True, f"'{device}' in use by the recorder (pid {daemon['pid']}), audio arriving")
    if not _installed("pyaudio"):
        return CheckResult(False, "PyAudio is not installed", "reinstall the recorder (make install)")
    source = MicrophoneSource(settings.audio)
    try:
        source.open()
        frame = source.read(timeout=2.0)
    except CaptureError as exc:
        return CheckResult(False, str(exc), "plug in the microphone or set audio.device (see: edge devices)")
    finally:
        source.close()
    if frame is None:
        return CheckResult(False, f"'{device}' opened but gave no audio in 2 s",
                           "check the cable or choose another device (edge devices)")
    return CheckResult(True, f"'{device}' gives audio at {source.rate} Hz")


def check_gpio(settings: Settings, daemon: Optional[dict]) -> CheckResult:
    pin = settings.led.pin
    if pin is None:
        return CheckResult(True, "no LED configured")
    if daemon is not None:
        if daemon.get("led") == f"GPIO{pin}":
            return CheckResult(True, f"LED on GPIO{pin}, driven by the recorder (pid {daemon['pid']})")
        return CheckResult(False, f"the recorder (pid {daemon['pid']}) runs without its LED on GPIO{pin}",
                           "see why: journalctl -u edge-recorder -p warning")
    return _try_pin(lambda gpiozero: gpiozero.LED(pin).close(), pin, "led.pin", "LED") or CheckResult(True, f"LED on GPIO{pin}")


def check_button(settings: Settings, daemon: Optional[dict]) -> CheckResult:
    pin = settings.controls.button_pin
    paused = ""
    if daemon is not None and daemon["state"] == RecorderState.PAUSED.value:
        paused = f"; the recorder is {state_line(daemon)} (edge resume records again)"
    if pin is None:
        return CheckResult(True, f"no privacy button (controls.button_pin is null){paused}")
    if daemon is not None:
        if daemon.get("button") == f"GPIO{pin}":
            return CheckResult(True, f"privacy button on GPIO{pin}, watched by the recorder (pid {daemon['pid']}){paused}")
        return CheckResult(False, f"the recorder (pid {daemon['pid']}) runs without its button on GPIO{pin}{paused}",
                           "see why: journalctl -u edge-recorder -p warning")
    return (_try_pin(lambda gpiozero: gpiozero.Button(pin, pull_up=True).close(), pin, "controls.button_pin", "button")
            or CheckResult(True, f"privacy button on GPIO{pin}"))


def _try_pin(open_and_close: Callable, pin: int, key: str, what: str) -> Optional[CheckResult]:
    """Why GPIO ``pin`` (set by ``key``) cannot be used here, or None when it can;
    ``open_and_close`` gets the gpiozero module."""
    if not _installed("gpiozero"):
        return CheckResult(False, f"gpiozero is not installed ({key}: {pin})",
                           f"reinstall the recorder (make install), or set {key}: null")
    import gpiozero
    from gpiozero import Device
    from gpiozero.exc import BadPinFactory

    # The chips are what a real pin library drives; a chosen factory (a mock) needs none.
    if Device.pin_factory is None and not os.environ.get("GPIOZERO_PIN_FACTORY"):
        chips = sorted(glob.glob(GPIO_CHIPS))
        if not chips:
            return CheckResult(False, f"no GPIO on this machine ({key}: {pin})",
                               f"set {key}: null where there is no {what}")
        if not any(os.access(chip, os.R_OK | os.W_OK) for chip in chips):
            return CheckResult(False, f"{chips[0]} is not accessible to this user",
                               f"add the user to the gpio group, or set {key}: null")
    try:
        open_and_close(gpiozero)
    except BadPinFactory:
        return CheckResult(False, f"GPIO{pin}: no pin library could drive it",
                           "on a Raspberry Pi: sudo apt install python3-lgpio, then reinstall (make install)")
    except Exception as exc:  # gpiozero has many ways to say there is no usable GPIO
        return CheckResult(False, f"GPIO{pin}: {exc}", f"check {key} (BCM numbering), or set {key}: null")
    return None


def check_storage(settings: Settings, daemon: Optional[dict]) -> CheckResult:
    root = resolve_data_path(settings.storage.recordings_dir)
    try:
        existing = next((p for p in [root, *root.parents] if p.exists()), Path("/"))
    except PermissionError as exc:
        return CheckResult(False, permission_denied(exc.filename))
    if not os.access(existing, os.W_OK):
        return CheckResult(False, f"{existing} is not writable by this user",
                           "run as the edge-recorder user or fix the folder's owner")
    free = FreeSpaceGuard(existing, settings.storage.min_free_mb, "stop").free_mb()
    if free < settings.storage.min_free_mb:
        return CheckResult(False, f"{free:.0f} MB free under {existing}, below the "
                           f"{settings.storage.min_free_mb} MB floor", "copy recordings off (edge export)")
    try:
        aside = moved_aside(root)
    except PermissionError:
        aside = []  # the recordings are the service's: the daemon's status says what it repaired
    if aside:
        return CheckResult(False, f"{root} writable, {free:.0f} MB free; damaged manifest lines were moved to "
                           f"{', '.join(map(str, aside))} (recording goes on, no audio was deleted)",
                           "read them (damage that comes back means a failing card: copy it off), "
                           "then remove those files")
    return CheckResult(True, f"{root} writable, {free:.0f} MB free")


def check_clock(settings: Settings, daemon: Optional[dict]) -> CheckResult:
    if SystemClock().synced():
        return CheckResult(True, "synchronised by systemd-timesyncd")
    return CheckResult(False, "not synchronised (no network time yet): wall times may be off, "
                       "file order is still right", "connect to a network once, or add an RTC")


def check_sync(settings: Settings, daemon: Optional[dict]) -> CheckResult:
    if settings.sync.remote is None:
        return CheckResult(True, "off (no sync.remote)")
    try:
        remote, _ = split_remote(configured_remote(settings))
        rclone = make_rclone(settings.sync)
        rclone.check_ready()
        if rclone.config.stat().st_mode & 0o077:
            return CheckResult(False, f"{rclone.config} (the remote's credentials) is readable by other users",
                               f"chmod 600 {rclone.config}")
        # Listing the folder (absent before the first sync: exit 3) proves host and login.
        rclone.run("lsf", "--max-depth", "1", "--dirs-only", remote, allow=(3,),
                   timeout=2 * settings.sync.timeout_s + 5)
    except (EdgeError, SyncFailed) as exc:
        return CheckResult(False, str(exc), "check sync.remote and the rclone config (rclone config --config FILE)")
    return CheckResult(True, f"{remote} reachable")


def check_encryption(settings: Settings, daemon: Optional[dict]) -> CheckResult:
    recipients = settings.privacy.recipients
    if not recipients:
        return CheckResult(True, "off: segments are stored as plain WAV files (privacy.recipients is empty)")
    try:
        arguments = recipient_arguments(recipients)
    except EdgeError as exc:
        return CheckResult(False, str(exc), "give the 'age1...' public key that edge keygen printed")
    keys = arguments.count("-r")
    files = arguments.count("-R")
    return CheckResult(True, f"segments are encrypted with age to {keys} public keys and "
                       f"{files} recipients files")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


DEVICE_CHECKS = ("model", "microphone", "gpio", "button", "clock")
"""What needs the device extra: not checked on an office install."""


CHECKS: dict[str, Callable[[Settings, Optional[dict]], CheckResult]] = {
    "model": check_model,
    "microphone": check_microphone,
    "gpio": check_gpio,
    "button": check_button,
    "storage": check_storage,
    "clock": check_clock,
    "encryption": check_encryption,
    "sync": check_sync,
}


def running_daemon(settings: Settings) -> Optional[dict]:
    """The status of the recorder if it runs, else None (also when this user cannot read it)."""
    now = SystemClock().wall()
    try:
        status = find_status(settings, now)[1]
    except (PermissionError, EdgeError):  # the checks then look at the machine itself
        return None
    if status is None or not daemon_state(status, now)[0]:
        return None
    return status


@contextmanager
def quiet_libraries():
    """Only the check lines on the terminal: gpiozero's fallback warnings and the info lines
    of what the checks open say nothing the lines do not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.INFO)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def doctor_command(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    print(f"OK   config: {args.config or default_config_path()}")
    daemon = running_daemon(settings)
    checks = CHECKS
    if not any(_installed(module) for module in DEVICE_MODULES):
        print(f"office install (pip install . without the device extra): {', '.join(DEVICE_CHECKS)} "
              "not checked here; a recorder needs pip install '.[device]' (make install on the Pi)")
        checks = {name: check for name, check in CHECKS.items() if name not in DEVICE_CHECKS}
    failed = 0
    with quiet_libraries():
        for name, check in checks.items():
            result = check(settings, daemon)
            failed += not result.ok
            print(result.line(name), flush=True)
    return 1 if failed else 0


def add_command(subparsers) -> None:
    for name, func, text in (
        ("status", status_command, "what the running recorder is doing"),
        ("doctor", doctor_command, "check microphone, model, GPIO, button, storage, clock, encryption keys and the sync remote"),
    ):
        parser = subparsers.add_parser(name, help=text)
        add_config_argument(parser)
        parser.set_defaults(func=func)
