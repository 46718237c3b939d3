"""Pause and forget: the privacy button and `edge pause|resume|forget` over a Unix socket.

Both are inputs only: they hand a ``ControlRequest`` to the recorder, which applies it
between two frames (Recorder.apply_controls), so the pipeline stays one-way and the open
segment ends where the request found it.

The button is a push button from a GPIO pin to ground (internal pull-up, debounced):
- pressed while recording: pause at once;
- released before ``forget_hold_s`` while paused by an earlier press: resume;
- held for ``forget_hold_s``: forget the last ``forget_minutes`` (then paused).
Acting on the press, not the release, means nothing is recorded while a hand is on it.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import queue
import socket
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .config import ControlsSettings, add_config_argument, load_config, resolve_runtime_path
from .errors import EdgeError, permission_denied

log = logging.getLogger(__name__)

BOUNCE_S = 0.05
SOCKET_MODE = 0o660  # root and the edge-recorder group
ANSWER_TIMEOUT_S = 15.0
MAX_REQUEST_BYTES = 4096


@dataclass
class ControlRequest:
    """What the recorder is asked to do: ``action`` one of PRESSED, RELEASED, HELD (the
    button) or pause, resume, forget (a command, with ``minutes``)."""

    action: str
    minutes: Optional[float] = None
    answer: Optional[dict] = None
    """Set by the recorder once applied: {"ok": bool, "message": str}."""
    answered: threading.Event = field(default_factory=threading.Event)

    def reply(self, ok: bool, message: str) -> None:
        self.answer = {"ok": ok, "message": message}
        self.answered.set()


PRESSED, RELEASED, HELD = "pressed", "released", "held"
COMMANDS = ("pause", "resume", "forget")


class ControlQueue:
    """Requests from the button's and the socket's threads to the recorder's."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()

    def put(self, request: ControlRequest) -> ControlRequest:
        self._queue.put(request)
        return request

    def take(self) -> list[ControlRequest]:
        requests = []
        while True:
            try:
                requests.append(self._queue.get_nowait())
            except queue.Empty:
                return requests


class PrivacyButton:
    """A gpiozero Button on ``pin``, wired to ground, feeding PRESSED/RELEASED/HELD."""

    def __init__(self, pin: int, hold_s: float, requests: ControlQueue, pin_factory=None):
        from gpiozero import Button

        self._button = Button(pin, pull_up=True, bounce_time=BOUNCE_S, hold_time=hold_s,
                              pin_factory=pin_factory)
        self.name = f"GPIO{pin}"
        self._button.when_pressed = lambda: requests.put(ControlRequest(PRESSED))
        self._button.when_released = lambda: requests.put(ControlRequest(RELEASED))
        self._button.when_held = lambda: requests.put(ControlRequest(HELD))

    def close(self) -> None:
        self._button.close()


def make_button(settings: ControlsSettings, requests: ControlQueue, pin_factory=None) -> Optional[PrivacyButton]:
    """The configured button, or None (said in the log) where there is none or no GPIO."""
    if settings.button_pin is None:
        log.info("no privacy button configured (controls.button_pin is null)")
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gpiozero warns once per pin library it tries
            return PrivacyButton(settings.button_pin, settings.forget_hold_s, requests, pin_factory)
    except Exception as exc:  # gpiozero raises many kinds when there is no GPIO at all
        log.warning("privacy button on GPIO%d unavailable, running without it: %s", settings.button_pin, exc)
        return None


class ControlServer:
    """The daemon's end of the socket: one JSON request line in, one JSON answer line out."""

    def __init__(self, path: Path, requests: ControlQueue):
        self.path = Path(path)
        self.requests = requests
        self._sock: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> bool:
        """Listen on the socket; False (logged) when it cannot, which costs the commands only."""
        try:
            if _answers(self.path):
                log.warning("%s: another recorder answers there; not taking commands", self.path)
                return False
            self.path.unlink(missing_ok=True)  # left by a daemon that was killed
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(self.path))  # 0700 under the service's UMask=0077 until the chmod
            os.chmod(self.path, SOCKET_MODE)
            sock.listen(4)
        except OSError as exc:
            log.warning("%s: cannot take commands (%s)", self.path, exc.strerror or exc)
            return False
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="edge-controls", daemon=True)
        self._thread.start()
        return True

    def close(self) -> None:
        if self._sock is None:
            return
        # close() alone does not wake a thread blocked in accept() on Linux; shutdown() does.
        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        try:
            self.path.unlink()
        except OSError:
            pass
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(ANSWER_TIMEOUT_S)
            try:
                request = parse_request(_read_line(conn))
            except ValueError as exc:
                answer = {"ok": False, "message": str(exc)}
            except OSError:
                return
            else:
                self.requests.put(request)
                if request.answered.wait(ANSWER_TIMEOUT_S):
                    answer = request.answer
                else:
                    answer = {"ok": False, "message": "the recorder did not get to it in time"}
            try:
                conn.sendall((json.dumps(answer) + "\n").encode())
            except OSError:
                pass  # the caller gave up


def parse_request(line: bytes) -> ControlRequest:
    try:
        data = json.loads(line)
        action, minutes = data["command"], data.get("minutes")
    except (ValueError, KeyError, TypeError):
        raise ValueError("not a request: expected {\"command\": ..., \"minutes\": ...}") from None
    if action not in COMMANDS:
        raise ValueError(f"unknown command {action!r} (expected one of: {', '.join(COMMANDS)})")
    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float))
                                or not 0 < minutes <= 1440):
        raise ValueError(f"minutes must be a number above 0 and at most 1440, got {minutes!r}")
    if action == "forget" and minutes is None:
        raise ValueError("forget needs the minutes to forget")
    return ControlRequest(action, minutes)


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < MAX_REQUEST_BYTES:
        chunk = conn.recv(MAX_REQUEST_BYTES)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
    return True


def send_command(path: Path, command: str, minutes: Optional[float] = None) -> dict:
    """Ask the running recorder; one clear line (EdgeError) when it cannot be asked."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(ANSWER_TIMEOUT_S + 5)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise EdgeError(f"the recorder is not running (nothing answers on {path}); "
                            "start it: sudo systemctl start edge-recorder") from None
        except PermissionError:
            raise EdgeError(permission_denied(path)) from None
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                raise EdgeError(f"{path}: not a socket the recorder made") from None
            raise EdgeError(f"{path}: cannot reach the recorder ({exc.strerror})") from None
        try:
            sock.sendall((json.dumps({"command": command, "minutes": minutes}) + "\n").encode())
            answer = _read_line(sock)
        except socket.timeout:
            raise EdgeError(f"the recorder did not answer within {ANSWER_TIMEOUT_S + 5:g} s") from None
        except OSError as exc:
            raise EdgeError(f"{path}: the recorder hung up ({exc.strerror})") from None
    try:
        return json.loads(answer)
    except ValueError:
        raise EdgeError(f"{path}: the recorder gave no answer (was it stopping?)") from None


def control_socket(settings) -> Path:
    """The socket's path: service.control_socket, a relative one beside the status file
    (under systemd's RuntimeDirectory for the service)."""
    path = Path(settings.service.control_socket)
    if path.is_absolute():
        return path
    return resolve_runtime_path(settings.service.status_file).parent / path


def _positive_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of minutes, got {text!r}") from None
    if not 0 < value <= 1440:
        raise argparse.ArgumentTypeError(f"expected minutes above 0 and at most 1440, got {text}")
    return value


def run_control_command(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    answer = send_command(control_socket(settings), args.command, getattr(args, "minutes", None))
    print(answer["message"])
    return 0 if answer["ok"] else 1


def add_command(subparsers) -> None:
    pause = subparsers.add_parser("pause", help="stop recording for a while (controls.pause_minutes by default)")
    pause.add_argument("minutes", nargs="?", type=_positive_minutes, metavar="MINUTES")
    resume = subparsers.add_parser("resume", help="record again after a pause")
    forget = subparsers.add_parser("forget", help="delete what was recorded in the last MINUTES, then pause")
    forget.add_argument("minutes", type=_positive_minutes, metavar="MINUTES")
    for parser in (pause, resume, forget):
        add_config_argument(parser)
        parser.set_defaults(func=run_control_command)
