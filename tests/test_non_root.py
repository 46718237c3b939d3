"""The commands as a real user who is not root, on files laid out with the installed
permissions: one line naming the file and how to run the command, exit code 2, and joining
the group that line names is enough for what the group may read."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from pathlib import Path

import pytest

from edge.status import RecorderState, RecorderStatus, publish_status

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("setpriv") is None,
    reason="needs root with useradd and setpriv to create and become another user")


class OtherUser:
    """A fresh user and group, run as with setpriv; removed afterwards."""

    def __init__(self):
        suffix = uuid.uuid4().hex[:6]
        self.name, self.group = f"edge-t-{suffix}", f"edge-g-{suffix}"
        subprocess.run(["groupadd", self.group], check=True)
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", self.name], check=True)
        self.python = self._interpreter()

    def _interpreter(self) -> list[str]:
        """This Python if the user may run it, else the system's of the same version with this
        venv's packages (a venv over a Python under /root cannot be run by others)."""
        # The recorder starts children with its own interpreter (the VAD runtime probe, the
        # capture process): the user must be able to run it again from inside, too.
        check = "import subprocess, sys; subprocess.run([sys.executable, '-c', ''], check=True); import edge.cli"
        if self._run([sys.executable, "-c", check]).returncode == 0:
            return [sys.executable]
        system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
        if os.path.exists(system):
            self.env = {"PYTHONPATH": f"{REPO}:{sysconfig.get_paths()['purelib']}"}
            if self._run([system, "-c", check]).returncode == 0:
                return [system]
        pytest.skip(f"no Python with this project's packages that {self.name} may run")

    env: dict = {}

    def _run(self, command: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["setpriv", f"--reuid={self.name}", f"--regid={self.name}", "--init-groups", "--", *command],
            capture_output=True, text=True, timeout=120, cwd="/",
            env={"PATH": "/usr/bin:/bin", "HOME": "/", **self.env})

    def edge(self, *args: str) -> subprocess.CompletedProcess:
        return self._run([*self.python, "-m", "edge", *args])

    def edge_default_config(self, config: Path, *args: str) -> subprocess.CompletedProcess:
        """With ``config`` in place of /etc/edge-recorder/edge.yaml, as when installed."""
        code = ("import sys; from pathlib import Path; import edge.config as c; "
                "c.SYSTEM_CONFIG = Path(sys.argv[1]); from edge.cli import main; sys.exit(main(sys.argv[2:]))")
        return self._run([*self.python, "-c", code, str(config), *args])

    def join(self, group: str) -> None:
        subprocess.run(["usermod", "--append", "--groups", group, self.name], check=True)

    def remove(self) -> None:
        subprocess.run(["userdel", self.name], check=False)
        subprocess.run(["groupdel", self.group], check=False)


@pytest.fixture
def installed():
    """/etc/edge-recorder and /var/lib/edge-recorder as install.sh and the unit leave them:
    config root:GROUP 0750/0640, state GROUP 0750 with status.json 0640, recordings 0700."""
    base = Path(tempfile.mkdtemp(prefix="edge-non-root-"))
    user = OtherUser()
    try:
        base.chmod(0o755)
        etc, state = base / "etc", base / "state"
        etc.mkdir(mode=0o750)
        state.mkdir(mode=0o750)
        (state / "recordings").mkdir(mode=0o700)
        (state / "recordings" / "manifest.jsonl").write_text("")
        config = etc / "edge.yaml"
        config.write_text(f"storage: {{recordings_dir: {state / 'recordings'}}}\nled: {{pin: null}}\n"
                          f"service: {{status_file: {state / 'status.json'}}}\n")
        config.chmod(0o640)
        status = RecorderStatus(state=RecorderState.STOPPED.value, since="2026-11-24T09:00:00+00:00",
                                updated="2026-11-24T09:00:00+00:00", pid=1)
        publish_status(state / "status.json", status)
        for path in (etc, config, state, state / "status.json"):
            shutil.chown(path, "root", user.group)
        yield user, config, state
    finally:
        user.remove()
        shutil.rmtree(base)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["status", "doctor", "list"])
def test_an_unreadable_config_is_one_line_saying_how_to_run_it(installed, command):
    user, config, _ = installed
    for result in (user.edge(command, "--config", str(config)), user.edge_default_config(config, command)):
        line = one_line_error(result)
        assert line == (f"edge: {config}: permission denied for user {user.name}: run it with sudo, "
                        f"or join the group {user.group} (sudo adduser {user.name} {user.group}, "
                        "then log in again)")


def test_the_group_the_line_names_may_read_the_status_not_the_recordings(installed):
    user, config, state = installed
    user.join(user.group)
    status = user.edge("status", "--config", str(config))
    assert status.returncode == 1, status.stderr  # it read the status: a daemon that stopped
    assert "recorder:       not running since 2026-11-24T09:00:00+00:00" in status.stdout
    # The recordings stay private to the service: sudo only.
    line = one_line_error(user.edge("list", "--config", str(config)))
    manifest = state / "recordings" / "manifest.jsonl"
    assert line == f"edge: {manifest}: permission denied for user {user.name}: run it with sudo"
    doctor = user.edge("doctor", "--config", str(config))
    assert "Traceback" not in doctor.stderr
    assert doctor.stdout.startswith(f"OK   config: {config}\n")
    checks = [line.split()[1].rstrip(":") for line in doctor.stdout.splitlines()]
    assert checks == ["config", "model", "microphone", "gpio", "button", "storage", "clock", "encryption", "sync"], \
        doctor.stdout + doctor.stderr


def test_only_root_and_the_group_may_pause_the_recorder(installed, lesson, detector):
    import threading

    from conftest import PacedSource, make_recorder
    from edge.config import settings_from_dict
    from edge.controls import ControlQueue, ControlServer

    user, _, state = installed
    run = state.parent / "run"
    run.mkdir(mode=0o755)
    config = state.parent / "controls.yaml"  # readable by all: the socket is what is tested
    config.write_text(f"service: {{control_socket: {run / 'control.sock'}}}\nled: {{pin: null}}\n")
    config.chmod(0o644)
    requests = ControlQueue()
    recorder = make_recorder(settings_from_dict({"led": {"pin": None}}), detector, state / "recordings",
                             controls=requests)
    server = ControlServer(run / "control.sock", requests)
    assert server.start()
    shutil.chown(run / "control.sock", "root", user.group)  # the daemon's own group, as installed
    stop = threading.Event()
    thread = threading.Thread(target=recorder.run, args=(PacedSource(lesson, speed=6, loop=True), stop))
    thread.start()
    try:
        line = one_line_error(user.edge("pause", "--config", str(config)))
        assert line == (f"edge: {run / 'control.sock'}: permission denied for user {user.name}: run it with "
                        f"sudo, or join the group {user.group} (sudo adduser {user.name} {user.group}, "
                        "then log in again)")
        assert recorder.status.paused_until is None
        user.join(user.group)
        paused = user.edge("pause", "2", "--config", str(config))
        assert (paused.returncode, paused.stderr) == (0, "")
        assert paused.stdout.startswith("paused until ") and recorder.status.paused_until is not None
    finally:
        stop.set()
        thread.join(timeout=30)
        server.close()
