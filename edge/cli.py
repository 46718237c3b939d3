"""The `edge` command: run the recorder, process files, inspect and export recordings."""

from __future__ import annotations

import argparse
import glob
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

from . import __version__, controls, decrypt, detector, doctor, export, listing, plot, sync
from .audio import CaptureError, MicrophoneSource, WavFileSource, describe_devices
from .config import add_config_argument, load_config, resolve_data_path, resolve_runtime_path
from .errors import DEVICE_MODULES, EdgeError, missing_device_module, permission_denied
from .indicator import GPIO_CHIPS, make_indicator
from .logs import setup_logging
from .notify import ServiceNotifier, watchdog_interval
from .recorder import Recorder, make_writer

log = logging.getLogger("edge")


def run_command(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    vad = detector.make_detector(settings)
    writer = make_writer(settings, resolve_data_path(settings.storage.recordings_dir), vad)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    indicator = make_indicator(settings.led)
    export_state = export.export_state_file(settings)
    notifier = ServiceNotifier()
    status_path = resolve_runtime_path(settings.service.status_file)
    try:
        # systemd makes $RUNTIME_DIRECTORY; a login session's runtime directory is made here.
        status_path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("%s: cannot create the folder for the status (%s)", status_path.parent, exc.strerror)
    requests = controls.ControlQueue()
    button = controls.make_button(settings.controls, requests)
    socket_path = controls.control_socket(settings)
    server = controls.ControlServer(socket_path, requests)
    server.start()
    recorder = Recorder(
        settings, vad, writer, indicator=indicator, notifier=notifier,
        watchdog_every=watchdog_interval(), status_path=status_path,
        extra_pattern=lambda: export.export_led_pattern(export_state, recorder.clock.wall()),
        controls=requests, export_state=export_state, pause_file=socket_path.with_name("paused.json"))
    recorder.status.button = button.name if button is not None else None  # for `edge doctor`
    try:
        recorder.run(MicrophoneSource(settings.audio), stop, wait_for_device=notifier.enabled)
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
    settings = load_config(args.config)
    for line in describe_devices(settings.audio):
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    for module in (detector, doctor, export, listing, plot, decrypt, sync, controls):
        module.add_command(sub)
    return parser


def main(argv: Optional[list] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        setup_logging(args.log_level)
        return args.func(args)
    except EdgeError as exc:
        print(f"edge: {exc}", file=sys.stderr)
        return 2
    except PermissionError as exc:
        # Files of the service (recordings, status) read by a user who may not read them.
        print(f"edge: {permission_denied(exc.filename)}", file=sys.stderr)
        return 2
    except OSError as exc:
        # The last net for a file that is not what its name says (a folder named
        # manifest.jsonl, recordings_dir naming a file): still one line that names it.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"edge: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name not in DEVICE_MODULES:
            raise
        print(f"edge: {missing_device_module(exc.name)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
