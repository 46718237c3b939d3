"""LazyFS: a FUSE filesystem with its own page cache, which ``clear_cache`` drops like a
power cut drops an SD card's unsynced writes (a SIGKILL alone leaves the kernel's page cache
intact). Built once by `make lazyfs` (part of `make test`) into $EDGE_LAZYFS_DIR."""

from __future__ import annotations

import os
import select
import subprocess
import time
from pathlib import Path
from typing import Optional

LAZYFS_DIR = Path(os.environ.get("EDGE_LAZYFS_DIR", "/var/tmp/edge-lazyfs"))


def unavailable() -> Optional[str]:
    """Why LazyFS cannot run here, with what would enable it; or None."""
    if os.geteuid() != 0:
        return "LazyFS power cuts: mounting LazyFS (FUSE) needs root"
    if not os.path.exists("/dev/fuse"):
        return "LazyFS power cuts: FUSE is unavailable here (no /dev/fuse)"
    if not (LAZYFS_DIR / "lazyfs").exists():
        return (f"LazyFS power cuts: LazyFS is not built in {LAZYFS_DIR} "
                "(`make lazyfs LAZYFS_SRC=<LazyFS sources with build.sh>` as root builds it)")
    return None


class LazyFs:
    """A LazyFS mount at ``folder/mnt`` over ``folder/backing``."""

    def __init__(self, folder: Path):
        binary = LAZYFS_DIR / "lazyfs"
        assert binary.exists(), f"{binary} missing: `make lazyfs` builds it (as root; LAZYFS_SRC names its sources)"
        self.folder = folder
        self.mount = folder / "mnt"
        self.backing = folder / "backing"
        self.mount.mkdir(parents=True)
        self.backing.mkdir()
        self.faults = folder / "faults.fifo"
        self.done = folder / "done.fifo"
        config = folder / "lazyfs.toml"
        config.write_text(
            f'[faults]\nfifo_path="{self.faults}"\nfifo_path_completed="{self.done}"\n'
            '[cache]\napply_eviction=false\n[cache.simple]\ncustom_size="256mb"\nblocks_per_page=1\n'
            '[filesystem]\nlog_all_operations=false\nlogfile=""\n')
        self.log = open(folder / "lazyfs.log", "wb")
        self.process = subprocess.Popen(
            # Relative: LazyFS takes a config path containing "-o" (pytest-of-root) for an option.
            [str(binary), str(self.mount), "--config-path", config.name, "-o", "allow_other",
             "-o", "modules=subdir", "-o", f"subdir={self.backing}"],
            env={**os.environ, "LD_LIBRARY_PATH": str(LAZYFS_DIR)}, stdout=self.log, stderr=self.log,
            cwd=folder)
        deadline = time.monotonic() + 60
        while not (os.path.ismount(self.mount) and self.faults.exists() and self.done.exists()):
            assert self.process.poll() is None, (folder / "lazyfs.log").read_text()
            assert time.monotonic() < deadline, "LazyFS did not mount within 60 s"
            time.sleep(0.01)

    def clear_cache(self, timeout: float = 60.0) -> None:
        """Drop every write not fsynced; returns once LazyFS says it has."""
        done = os.open(self.done, os.O_RDONLY | os.O_NONBLOCK)
        try:
            with open(self.faults, "w") as faults:
                faults.write("lazyfs::clear-cache\n")
            received = b""
            deadline = time.monotonic() + timeout
            while b"\n" not in received:
                left = deadline - time.monotonic()
                assert left > 0, f"LazyFS did not confirm clear-cache within {timeout} s"
                if select.select([done], [], [], left)[0]:
                    received += os.read(done, 4096)
            assert b"finished::clear-cache" in received, received
        finally:
            os.close(done)

    def close(self) -> None:
        if subprocess.run(["fusermount3", "-u", str(self.mount)], capture_output=True).returncode:
            subprocess.run(["fusermount3", "-uz", str(self.mount)], capture_output=True)  # busy: detach
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
