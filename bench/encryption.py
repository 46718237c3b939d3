"""What encryption at rest (privacy.recipients) costs: `edge process` and the daemon with it
off and on, in the same run, on the same audio."""

from __future__ import annotations

import shutil
import statistics
import subprocess
from pathlib import Path

import numpy as np
import yaml

from . import report
from .recorders import ChildRun, edge_process
from .speed import DaemonRun, measure_daemon

GOAL_DAEMON_CPU_INCREASE = 0.10
"""Encryption may add at most this fraction to the daemon's CPU time."""


def _age_key(work: Path) -> str:
    key = work / "bench-key.txt"
    if not key.exists():
        subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    return subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True,
                          text=True).stdout.strip()


def _configs(work: Path, base: Path | None, public: str) -> dict[str, Path]:
    settings = yaml.safe_load(base.read_text()) if base else {}
    configs = {}
    for name, privacy in (("off", {"recipients": []}), ("on", {"recipients": [public]})):
        path = work / f"edge-encryption-{name}.yaml"
        path.write_text(yaml.safe_dump({**(settings or {}), "privacy": privacy}))
        configs[name] = path
    return configs


def measure(stream: Path, samples: np.ndarray, work: Path, base_config: Path | None, rounds: int,
            daemon_s: float | None) -> tuple[dict[str, list[ChildRun]], dict[str, DaemonRun]]:
    """``edge process`` on ``stream`` ``rounds`` times each way (taking turns, so a slow spell
    of the machine hits both), then the daemon each way for ``daemon_s`` (None: not run)."""
    work.mkdir(parents=True, exist_ok=True)
    public = _age_key(work)
    configs = _configs(work, base_config, public)
    process: dict[str, list[ChildRun]] = {"off": [], "on": []}
    for _ in range(rounds):
        for name, config in configs.items():
            out = work / f"process-{name}"
            shutil.rmtree(out, ignore_errors=True)
            _, run = edge_process([stream], out, config)
            process[name].append(run)
            shutil.rmtree(out)
    daemon: dict[str, DaemonRun] = {}
    if daemon_s is not None:
        daemon["off"] = measure_daemon(samples, daemon_s, work / "daemon-off")
        daemon["on"] = measure_daemon(samples, daemon_s, work / "daemon-on",
                                      sections={"privacy": {"recipients": [public]}})
    return process, daemon


def section(results, stream: Path, samples: np.ndarray, audio_s: float, work: Path,
            base_config: Path | None, rounds: int, daemon_s: float | None) -> None:
    """Adds the "Encryption" section and its goal to the benchmark's results."""
    process, daemon = measure(stream, samples, work, base_config, rounds, daemon_s)
    rows = []
    for name in ("off", "on"):
        wall = statistics.median(run.wall_s / audio_s for run in process[name])
        cpu = statistics.median(run.cpu_s / audio_s for run in process[name])
        row = [name, f"{wall:.4f}", f"{cpu:.4f}"]
        if daemon:
            run = daemon[name]
            row += [f"{100 * run.cpu_share:.3f} %", f"{run.segments}", f"{run.peak_rss_mb:.1f} MB"]
        rows.append(row)
    header = ["encryption", "edge process RTF (wall)", "edge process RTF (CPU, incl. age)"]
    if daemon:
        header += ["daemon CPU (incl. age)", "segments", "daemon peak RSS"]
    results.lines += [
        "## Encryption at rest (age)",
        "",
        f"The same {audio_s / 60:.1f} min stream (10 dB SNR) through `edge process`, median of {rounds} "
        "run(s) each way taking turns, and through the daemon at real time "
        + (f"({daemon_s:.0f} s each way, the first 10 s not counted). " if daemon else "(not run). ")
        + "CPU times include the `age` processes that encrypt the segments.",
        "",
        *report.table(header, rows),
        "",
    ]
    if daemon:
        off, on = daemon["off"].cpu_share, daemon["on"].cpu_share
        increase = (on - off) / off if off else float("inf")
        results.goal(f"encryption adds <= {100 * GOAL_DAEMON_CPU_INCREASE:.0f} % to the daemon's CPU",
                     f"{100 * off:.3f} % -> {100 * on:.3f} % of one core ({100 * increase:+.1f} %)",
                     increase <= GOAL_DAEMON_CPU_INCREASE)
