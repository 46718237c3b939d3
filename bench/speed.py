"""Speed and memory: microseconds per 32 ms window of each detector, the real-time factor and
peak memory of ``edge process``, and the daemon listening to a microphone paced at real time."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from edge.capture import BLOCK
from edge.storage import read_manifest

from .labels import SAMPLE_RATE, WINDOW
from .recorders import REPO, edge_command, peak_rss_mb

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def microseconds_per_window(detectors: dict[str, object], samples: np.ndarray, rounds: int) -> dict[str, float]:
    """Median over ``rounds`` of the mean time per window, each detector called as the
    recorder calls it, a capture block (four windows) at a time; detectors take turns within
    each round so that a slow spell of the machine hits them all alike."""
    blocks = samples[: len(samples) // BLOCK * BLOCK].reshape(-1, BLOCK)
    times: dict[str, list[float]] = {name: [] for name in detectors}
    for _ in range(rounds):
        for name, vad in detectors.items():
            vad.reset()
            vad.probabilities(blocks[0])  # first call allocates; not what a long-running recorder pays
            start = time.perf_counter()
            for block in blocks:
                vad.probabilities(block)
            times[name].append((time.perf_counter() - start) / (blocks.size // WINDOW) * 1e6)
    return {name: statistics.median(values) for name, values in times.items()}


ALSA_CONFIG = """pcm.null {{ type null }}
pcm.default "benchmic"
pcm.benchmic {{ type plug slave.pcm {{ type file slave.pcm "null" file "/dev/null" infile "{infile}" format "raw" }} }}
"""


class RealTimeFeeder(threading.Thread):
    """Writes int16 audio into a FIFO no faster than real time, looping it. ALSA's file plugin
    opens the FIFO when the PCM is opened, and PortAudio opens and closes the device while
    probing, so a closed reader (EPIPE) just means: wait for the next open."""

    # The capture's block: ALSA's file plugin pads a read the FIFO cannot fill with silence.
    CHUNK = BLOCK

    def __init__(self, fifo: Path, samples: np.ndarray):
        super().__init__(daemon=True)
        self.fifo = fifo
        self.data = np.ascontiguousarray(samples, dtype="<i2")
        self.stop = threading.Event()
        self.opens = 0
        self.samples_sent = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: nobody has it open for reading yet
                    raise
                self.stop.wait(0.005)
                continue
            os.set_blocking(fd, True)
            self.opens += 1
            try:
                self._feed(fd)
            except BrokenPipeError:
                pass
            finally:
                os.close(fd)

    def _feed(self, fd: int) -> None:
        # The pace restarts at each open: a reader that comes back gets no burst of backlog.
        started = time.monotonic()
        sent_here = 0
        while not self.stop.is_set():
            delay = started + (sent_here + self.CHUNK) / SAMPLE_RATE - time.monotonic()
            if delay > 0 and self.stop.wait(delay):
                return
            position = self.samples_sent % (len(self.data) - self.CHUNK)
            os.write(fd, self.data[position : position + self.CHUNK].tobytes())
            sent_here += self.CHUNK
            self.samples_sent += self.CHUNK


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and of its children, those it has waited for and those still
    running (the age process that encrypts the open segment)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])
    for child in process_tree(pid)[1:]:
        try:
            child_fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended and waited for in between: counted in the parent's fields
        ticks += int(child_fields[11]) + int(child_fields[12])
    return ticks / CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """``pid`` and its running children (the capture process, an age process)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            pids += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def tree_memory_mb(pid: int) -> tuple[float, float]:
    """Of ``pid`` and its children: the sum of their peak RSS (pages they share, such as the
    Python interpreter, counted in each), and their PSS now (each shared page split between
    the processes that map it: what the tree costs the machine)."""
    peak = pss = 0.0
    for member in process_tree(pid):
        peak += peak_rss_mb(member)
        try:
            rollup = Path(f"/proc/{member}/smaps_rollup").read_text()
        except OSError:
            continue
        pss += next((int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")), 0) / 1024
    return peak, pss


@dataclass(frozen=True)
class DaemonRun:
    seconds: float
    warmup_s: float
    cpu_share: float
    """CPU time / wall time after warm-up, as a fraction of one core."""
    peak_rss_mb: float
    """Peak RSS of the daemon and its capture process, added up."""
    pss_mb: float
    """PSS of the daemon and its capture process at the end of the run."""
    segments: int
    audio_fed_s: float
    feeder_opens: int


def measure_daemon(samples: np.ndarray, seconds: float, work_dir: Path, warmup_s: float = 10.0,
                   sections: dict | None = None) -> DaemonRun:
    """``edge run`` capturing ``samples`` through ALSA's file plugin from a FIFO fed at real
    time, for ``seconds``, then stopped with SIGTERM as systemd would; ``sections``: more
    config sections (privacy for encryption, denoise)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    fifo = work_dir / "mic.fifo"
    if fifo.exists():
        fifo.unlink()
    os.mkfifo(fifo)
    alsa_config = work_dir / "asound.conf"
    alsa_config.write_text(ALSA_CONFIG.format(infile=fifo))
    config = work_dir / "edge.yaml"
    recordings = work_dir / "recordings"
    shutil.rmtree(recordings, ignore_errors=True)
    config.write_text(yaml.safe_dump({
        "audio": {"device": "default"},
        "storage": {"recordings_dir": str(recordings), "min_free_mb": 0},
        "led": {"pin": None},
        "service": {"status_file": str(work_dir / "status.json")},
        **(sections or {}),
    }))
    feeder = RealTimeFeeder(fifo, samples)
    feeder.start()
    env = dict(os.environ, ALSA_CONFIG_PATH=str(alsa_config))
    log_file = (work_dir / "daemon.log").open("wb")
    child = subprocess.Popen(edge_command("run", "--config", str(config)), env=env, cwd=REPO,
                             stdout=log_file, stderr=subprocess.STDOUT)
    try:
        time.sleep(warmup_s)
        if child.poll() is not None:
            raise RuntimeError(f"edge run exited early: {(work_dir / 'daemon.log').read_text()[-300:]}")
        cpu_start, wall_start = cpu_seconds(child.pid), time.monotonic()
        time.sleep(seconds - warmup_s)
        cpu_end, wall_end = cpu_seconds(child.pid), time.monotonic()
        peak, pss = tree_memory_mb(child.pid)
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)
    finally:
        if child.returncode is None:
            child.kill()
            child.wait()
        feeder.stop.set()
        feeder.join(timeout=5)
        log_file.close()
        fifo.unlink()
    return DaemonRun(
        seconds=seconds,
        warmup_s=warmup_s,
        cpu_share=(cpu_end - cpu_start) / (wall_end - wall_start),
        peak_rss_mb=peak,
        pss_mb=pss,
        segments=len(read_manifest(recordings / "manifest.jsonl")),
        audio_fed_s=feeder.samples_sent / SAMPLE_RATE,
        feeder_opens=feeder.opens,
    )
