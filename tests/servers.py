"""Real network servers on 127.0.0.1 for the sync tests: OpenSSH's sshd (SFTP) with a
throwaway host key and user key, and `rclone serve webdav`. Each is started by a fixture,
waited for by polling its port (bounded), and killed with every process it forked, so a
test can also kill one in the middle of a transfer and start it again on the same port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
START_TIMEOUT_S = 15.0
WEBDAV_USER, WEBDAV_PASSWORD = "edge", "correct horse"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {START_TIMEOUT_S} s")
            time.sleep(0.02)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (sshd forks a session process per connection, which
    calls setsid: killing the process group would miss it)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return  # a zombie holds no file and no socket any more
        except OSError:
            return
        assert time.monotonic() < deadline, f"process {pid} still alive after {timeout} s"
        time.sleep(0.01)


class Server:
    port: int
    process: subprocess.Popen | None = None
    log: Path

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.process = subprocess.Popen(self.command(), stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        wait_for_port(self.port, self.process, self.log)

    def kill(self) -> None:
        """SIGKILL the server and everything it forked, like a NAS losing power."""
        if self.process is None:
            return
        victims = [self.process.pid] + descendants(self.process.pid)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=10)
        for pid in victims[1:]:
            wait_gone(pid)
        self.process = None


class SftpServer(Server):
    """sshd -D on a loopback port; logs in as the current user with a key made here."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.log = folder / "sshd.log"
        self.user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True,
                                                              text=True).stdout.strip()
        for key in ("host_key", "user_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)], check=True)
        (folder / "authorized_keys").write_text((folder / "user_key.pub").read_text())
        host_key = (folder / "host_key.pub").read_text().split()[:2]
        (folder / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {' '.join(host_key)}\n")
        (folder / "sshd_config").write_text("\n".join([
            f"ListenAddress 127.0.0.1:{self.port}",
            f"HostKey {folder / 'host_key'}",
            f"AuthorizedKeysFile {folder / 'authorized_keys'}",
            "PidFile none",
            "StrictModes no",
            "UsePAM no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            # In-process SFTP; rclone's hashes run md5sum/sha1sum through an exec channel.
            "Subsystem sftp internal-sftp",
            # Those run in the user's shell, which would read this machine's ~/.bashrc (here
            # root's, with pyenv: a SIGKILLed server can leave pyenv's lock behind, and every
            # later shell then waits a minute). A NAS's shell starts bare.
            f"SetEnv HOME={folder}",
            "LogLevel INFO",  # a line per login ("Accepted publickey"): what a client costs the server
        ]) + "\n")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory

    def command(self) -> list[str]:
        return [SSHD, "-D", "-e", "-f", str(self.folder / "sshd_config")]

    def rclone_section(self, name: str) -> str:
        return "\n".join([
            f"[{name}]", "type = sftp", "host = 127.0.0.1", f"port = {self.port}", f"user = {self.user}",
            f"key_file = {self.folder / 'user_key'}", f"known_hosts_file = {self.folder / 'known_hosts'}",
        ]) + "\n"


class WebdavServer(Server):
    """`rclone serve webdav` of ``root`` on a loopback port, with a user and password."""

    def __init__(self, folder: Path, root: Path):
        self.folder = folder
        self.root = root
        self.port = free_port()
        self.log = folder / "webdav.log"

    def command(self) -> list[str]:
        # No directory cache: the tests change files on its disk behind its back, like a NAS
        # whose disk is also shared over SMB. Each request is logged (-v): what a client read.
        return ["rclone", "serve", "webdav", "-v", "--addr", f"127.0.0.1:{self.port}", "--dir-cache-time", "0s",
                "--user", WEBDAV_USER,
                "--pass", WEBDAV_PASSWORD, str(self.root)]

    def rclone_section(self, name: str, password: str = WEBDAV_PASSWORD) -> str:
        obscured = subprocess.run(["rclone", "obscure", password], capture_output=True, text=True,
                                  check=True).stdout.strip()
        return "\n".join([
            f"[{name}]", "type = webdav", f"url = http://127.0.0.1:{self.port}/", "vendor = other",
            f"user = {WEBDAV_USER}", f"pass = {obscured}",
        ]) + "\n"


def missing_server_binaries() -> str | None:
    """Why the servers cannot run here, or None."""
    if shutil.which("rclone") is None:
        return "rclone is not installed (make test installs it when run as root)"
    if not Path(SSHD).exists():
        return "OpenSSH's sshd is not installed (make test installs openssh-server when run as root)"
    return None
