"""The `edge` command: run the recorder, process files, inspect and export recordings."""

from __future__ import annotations

import argparse
import glob
import importlib
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

from . import __version__
from .config import (ServiceSettings, Settings, add_config_argument, load_config, resolve_data_path,
                     resolve_runtime_path)
from .errors import DEVICE_MODULES, EdgeError, missing_device_module, permission_denied
from .indicator import GPIO_CHIPS, make_indicator
from .logs import setup_logging
from .notify import ServiceNotifier, watchdog_interval

COMMAND_MODULES = ("detector", "doctor", "export", "listing", "plot", "decrypt", "sync", "controls")
"""The modules that add commands of their own (``add_command``), in the order help lists them."""
STANDALONE = {"sync": "sync", "list": "listing"}
"""Commands whose module is all they import: `edge sync`, started by a timer every hour, and
`edge list`, asked of a fleet at the office, are not kept waiting for the recorder's numerical
stack (numpy, the model) they never use."""


def run_command(args: argparse.Namespace) -> int:
    from .supervisor import publish_start_failure

    # Until the config is read, the status goes where the default config (and the installed
    # one) keeps it, which is where `edge status` looks on a recorder whose config is broken.
    status_path = resolve_runtime_path(ServiceSettings.status_file)
    try:
        settings = load_config(args.config)
        status_path = resolve_runtime_path(settings.service.status_file)
        return record(settings, status_path)
    except Exception as exc:
        publish_start_failure(status_path, error_line(exc) or f"stopped by an error: {exc!r}")
        raise


def record(settings: Settings, status_path: Path) -> int:
    from . import controls, detector, export_state
    from .audio import CaptureError, MicrophoneSource
    from .recorder import Recorder, make_writer
    from .status import make_status_folder

    notifier = ServiceNotifier()
    notifier.extend_start()
    vad = detector.make_detector(settings)
    notifier.extend_start()
    writer = make_writer(settings, resolve_data_path(settings.storage.recordings_dir), vad)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    indicator = make_indicator(settings.led)
    export_file = export_state.export_state_file(settings)
    make_status_folder(status_path)
    requests = controls.ControlQueue()
    button = controls.make_button(settings.controls, requests)
    socket_path = controls.control_socket(settings)
    server = controls.ControlServer(socket_path, requests)
    server.start()
    recorder = Recorder(
        settings, vad, writer, indicator=indicator, notifier=notifier,
        watchdog_every=watchdog_interval(), status_path=status_path,
        extra_pattern=lambda: export_state.export_led_pattern(export_file, recorder.clock.wall()),
        controls=requests, export_state=export_file, pause_file=socket_path.with_name("paused.json"))
    recorder.status.button = button.name if button is not None else None  # for `edge doctor`
    try:
        recorder.run(MicrophoneSource(settings.audio, stopping=stop), stop, wait_for_device=notifier.enabled)
    except CaptureError as exc:
        raise EdgeError(f"{exc}; no microphone here? 'make demo' runs the same pipeline "
                        "on bundled audio") from None
    finally:
        server.close()
        if button is not None:
            button.close()
        indicator.close()
        notifier.close()
    return 0


def process_command(args: argparse.Namespace) -> int:
    from . import detector
    from .audio import WavFileSource
    from .recorder import Recorder, make_writer

    settings = load_config(args.config)
    vad = detector.make_detector(settings)
    writer = make_writer(settings, args.out, vad)
    recorder = Recorder(settings, vad, writer)
    for path in args.inputs:
        print(recorder.process_file(WavFileSource(path)).line(), flush=True)
    return 0


def led_off_command(args: argparse.Namespace) -> int:
    """What the service runs after the daemon ended, however it ended (ExecStopPost=)."""
    settings = load_config(args.config)
    if settings.led.pin is None or not glob.glob(GPIO_CHIPS):
        return 0  # no LED to switch off; the daemon has said so in the log already
    make_indicator(settings.led).close()  # made with the LED off; closing releases the pin
    return 0


def devices_command(args: argparse.Namespace) -> int:
    from .audio import describe_devices

    settings = load_config(args.config)
    for line in describe_devices(settings.audio):
        print(line)
    return 0


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The whole command line, or only ``command``'s when it is one of :data:`STANDALONE`."""
    parser = argparse.ArgumentParser(prog="edge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if command in STANDALONE:
        importlib.import_module(f".{STANDALONE[command]}", __package__).add_command(sub)
        return parser

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        add_config_argument(p)
        return p

    run = with_config(sub.add_parser("run", help="listen to the microphone and store the speech"))
    run.set_defaults(func=run_command)

    process = with_config(sub.add_parser(
        "process", help="run the same pipeline on WAV files, as fast as the CPU allows"))
    process.add_argument("inputs", nargs="+", type=Path, metavar="IN.wav")
    process.add_argument("--out", type=Path, required=True, metavar="DIR",
                         help="folder for the segments and manifest.jsonl")
    process.set_defaults(func=process_command)

    devices = with_config(sub.add_parser("devices", help="list capture devices and their rates"))
    devices.set_defaults(func=devices_command)

    led_off = with_config(sub.add_parser(
        "led-off", help="switch the LED off: dark means the recorder is not running"))
    led_off.set_defaults(func=led_off_command)

    for name in COMMAND_MODULES:
        importlib.import_module(f".{name}", __package__).add_command(sub)
    return parser


def command_named(argv: list) -> Optional[str]:
    """The command ``argv`` names (its first word that is no option nor an option's value)."""
    words = iter(argv)
    for word in words:
        if word == "--log-level":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main(argv: Optional[list] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(command_named(argv)).parse_args(argv)
    try:
        setup_logging(args.log_level)
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        line = error_line(exc)
        if line is None:
            raise
        print(f"edge: {line}", file=sys.stderr)
        return 2


def error_line(exc: Exception) -> Optional[str]:
    """The one line that says what a person can fix; None for a bug (its traceback is shown)."""
    if isinstance(exc, EdgeError):
        return str(exc)
    if isinstance(exc, PermissionError):
        # Files of the service (recordings, status) read by a user who may not read them.
        return permission_denied(exc.filename)
    if isinstance(exc, OSError):
        # The last net for a file that is not what its name says (a folder named
        # manifest.jsonl, recordings_dir naming a file): still one line that names it.
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    if isinstance(exc, ModuleNotFoundError) and exc.name in DEVICE_MODULES:
        return missing_device_module(exc.name)
    return None
