"""python -m bench.sync [--rounds 3]: `edge sync` beside a bare `rclone copy` of the same files
to the same SFTP server on 127.0.0.1, for large segments and for many small ones, in one run.

Two backlogs are made the way a card fills: segments written by the real SegmentWriter, then
copied under new names and sequence numbers (with their manifest lines). "large" is 43
five-minute segments (9.6 MB each, about 410 MB), "small" a mix of 2 to 60 s segments (mean
650 kB) over five day folders. Both commands go to the same sshd (tests/servers.py) with no
bandwidth limit, each time into an empty folder (and `edge sync` with no sync state: a first
sync of the whole backlog), and each starts with the backlog's pages dropped from the cache
(posix_fadvise, for these files only: the machine may be shared). The pairs run interleaved,
``--rounds`` times, which of the two goes first alternating, so load that comes and goes
falls on both; the ratio reported is the median of the rounds' ratios. Time is wall time;
memory is the largest peak RSS of any process of the run (rclone's, or edge's own Python). CPU
time, client and server side together, is shown beside it: on a machine shared with other
work it varies far less from run to run than wall time does.

Then one short segment is sent into a device folder that already holds 0, 30 and 365 days
of a busy classroom's history (360 segments a day, a manifest per day folder as sync writes
them): a run must cost the same at a year as on the first day.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge.storage import MANIFEST, SegmentEnd, SegmentStart, SegmentWriter, read_manifest

from .recorders import REPO

sys.path.insert(0, str(REPO))
from tests.servers import SftpServer, descendants  # noqa: E402  (the same server the sync tests use)

DEVICE = "room-12"
HISTORY_DAYS = (0, 30, 365)  # of a busy classroom on the remote: 360 segments a day
SEGMENTS_A_DAY = 360
SMALL_SECONDS = (2.0, 4.5, 7.0, 11.0, 16.0, 24.0, 38.0, 60.0)  # mean 20 s, 650 kB
LARGE_SECONDS = (300.0,)  # 9.6 MB
DAYS = ("2026-11-23", "2026-11-24", "2026-11-25", "2026-11-26", "2026-11-27")
GOAL_RATIO = 1.1

# Runs a command in a child and reports the largest peak RSS among its processes.
MEASURE = """
import json, resource, subprocess, sys, time
start = time.monotonic()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"code": code, "seconds": time.monotonic() - start, "rss_kb": usage.ru_maxrss,
                  "cpu_s": usage.ru_utime + usage.ru_stime}))
"""


def synthesize_backlog(root: Path, count: int, template_seconds: tuple) -> int:
    """A recordings folder of ``count`` segments cycling through ``template_seconds``; returns its bytes."""
    templates_dir = root.parent / f"{root.name}-templates"
    writer = SegmentWriter(templates_dir, DEVICE, model_sha256="0" * 64, version="bench")
    writer.prepare()
    rng = np.random.default_rng(13)
    for number, seconds in enumerate(template_seconds):
        writer.open(SegmentStart(source="mic", start_s=0.0, start=f"{DAYS[0]}T08:00:{number:02d}.000+01:00",
                                 monotonic_s=1.0, boot_id="bench", clock_synced=True))
        writer.append(rng.integers(-4000, 4000, int(16000 * seconds), dtype=np.int16))
        writer.close(SegmentEnd(prob_mean=0.7, prob_max=0.95, overflows=0, dropped_frames=0))
    templates = read_manifest(templates_dir / MANIFEST)
    root.mkdir(parents=True)
    lines, size = [], 0
    for seq in range(1, count + 1):
        template = templates[(seq - 1) % len(templates)]
        day = DAYS[min(len(DAYS) - 1, (seq - 1) * len(DAYS) // count)]
        clock = f"{8 + seq // 3600 % 8:02d}{seq // 60 % 60:02d}{seq % 60:02d}"
        name = f"{day.replace('-', '')}/{seq:06d}_{clock}_{DEVICE}.wav"
        (root / name).parent.mkdir(exist_ok=True)
        shutil.copyfile(templates_dir / template["file"], root / name)
        start = f"{day}T{clock[:2]}:{clock[2:4]}:{clock[4:]}.000+01:00"
        lines.append(json.dumps({**template, "file": name, "seq": seq, "start": start}))
        size += (root / name).stat().st_size
    (root / MANIFEST).write_text("".join(line + "\n" for line in lines))
    shutil.rmtree(templates_dir)
    return size


def drop_from_cache(root: Path) -> None:
    for path in root.rglob("*.wav"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def server_cpu_s(pid: int) -> float:
    """CPU time of the sshd ``pid`` and of every session it forked and reaped (the remote's
    side: SFTP, the shell and md5sum of each remote hash)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def measure(command: list[str], root: Path, server_pid: int) -> dict:
    drop_from_cache(root)
    before = server_cpu_s(server_pid)
    result = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True)
    figures = json.loads(result.stdout)
    deadline = time.monotonic() + 10
    while descendants(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # the sessions rclone left end and are reaped: their CPU is counted then
    figures["cpu_s"] += server_cpu_s(server_pid) - before
    if figures["code"] != 0:
        raise SystemExit(f"bench.sync: {' '.join(command[:3])}... failed ({figures['code']}): {result.stderr[-2000:]}")
    return figures


class Backlog:
    """One card's backlog, its edge config, and the two commands that send it."""

    def __init__(self, work: Path, name: str, count: int, template_seconds: tuple, rclone_config: Path):
        self.name = name
        self.recordings = work / name / "recordings"
        self.size = synthesize_backlog(self.recordings, count, template_seconds)
        self.count = count
        self.served = work / "server" / name
        self.config = work / name / "edge.yaml"
        self.config.write_text(json.dumps({
            "storage": {"recordings_dir": str(self.recordings), "device_name": DEVICE},
            "service": {"status_file": str(work / name / "status.json")}, "led": {"pin": None},
            "sync": {"remote": f"nas:{self.served}/edge/{{device}}", "rclone_config": str(rclone_config),
                     "bwlimit": None}}))
        self.bare = ["rclone", "--config", str(rclone_config), "copy", str(self.recordings),
                     f"nas:{self.served}/bare/{DEVICE}"]
        self.edge = [sys.executable, "-m", "edge", "sync", "--once", "--config", str(self.config)]

    def fresh(self) -> None:
        """Empty remote folders and no sync state: every run sends the whole backlog."""
        shutil.rmtree(self.served, ignore_errors=True)
        self.served.mkdir(parents=True)
        (self.recordings / "sync-state.json").unlink(missing_ok=True)

    def pair(self, edge_first: bool, server_pid: int) -> tuple[dict, dict]:
        runs = {}
        for which in (("edge", "bare") if edge_first else ("bare", "edge")):
            self.fresh()
            runs[which] = measure(getattr(self, which), self.recordings, server_pid)
        return runs["bare"], runs["edge"]


def with_history(backlog: "Backlog", days: int, server_pid: int) -> dict:
    """`edge sync` of the backlog (one short segment) into a device folder that already holds
    ``days`` days of synced history: each day's manifest.jsonl, as sync writes them."""
    backlog.fresh()
    line = json.loads((backlog.recordings / MANIFEST).read_text().splitlines()[0])
    device = backlog.served / "edge" / DEVICE
    for day in range(days):
        folder = device / f"{20250101 + day:08d}"  # day folders before the backlog's, by name
        folder.mkdir(parents=True)
        first = day * SEGMENTS_A_DAY
        (folder / MANIFEST).write_text("".join(
            json.dumps({**line, "file": f"{folder.name}/{first + n:06d}_080000_{DEVICE}.wav", "seq": first + n + 1,
                        "sha256": f"{first + n:064x}"}) + "\n" for n in range(SEGMENTS_A_DAY)))
    return measure(backlog.edge, backlog.recordings, server_pid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sync", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved pairs per backlog (default 3)")
    parser.add_argument("--large", type=int, default=43, help="five-minute segments in the large backlog")
    parser.add_argument("--small", type=int, default=300, help="segments in the small backlog")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="edge-bench-sync-", dir="/var/tmp"))
    server = None
    results = {}
    try:
        (work / "ssh").mkdir()
        server = SftpServer(work / "ssh")
        config = work / "rclone.conf"
        config.write_text(server.rclone_section("nas"))
        server.start()
        backlogs = [Backlog(work, "large", args.large, LARGE_SECONDS, config),
                    Backlog(work, "small", args.small, SMALL_SECONDS, config)]
        for number in range(args.rounds):
            for backlog in backlogs:
                bare, edge = backlog.pair(edge_first=number % 2 == 1, server_pid=server.process.pid)
                results.setdefault(backlog.name, []).append((bare, edge))
                print(f"round {number + 1} {backlog.name:5}: rclone copy {bare['seconds']:7.2f} s "
                      f"({bare['cpu_s']:.1f} s CPU), edge sync {edge['seconds']:7.2f} s ({edge['cpu_s']:.1f} s CPU), "
                      f"{edge['seconds'] / bare['seconds']:.2f}x", flush=True)
        idle = {}
        for backlog in backlogs:  # the last edge run left everything synced
            idle[backlog.name] = measure(backlog.edge, backlog.recordings, server.process.pid)
        one = Backlog(work, "one", 1, (20.0,), config)
        history = {days: with_history(one, days, server.process.pid) for days in HISTORY_DAYS}
    finally:
        if server is not None:
            server.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"SFTP to sshd on 127.0.0.1, {args.rounds} interleaved rounds; median of each round's ratio; CPU is "
          "client and server together (less affected by other load than wall time)")
    print(f"{'backlog':34}{'rclone s':>9}{'edge s':>9}{'ratio':>7}{'CPU ratio':>10}{'MB/s':>8}"
          f"{'peak RSS MB (rclone/edge)':>27}")
    verdicts = []
    for backlog in backlogs:
        pairs = results[backlog.name]
        ratio = statistics.median(edge["seconds"] / bare["seconds"] for bare, edge in pairs)
        bare_s = statistics.median(bare["seconds"] for bare, _ in pairs)
        edge_s = statistics.median(edge["seconds"] for _, edge in pairs)
        cpu_ratio = statistics.median(edge["cpu_s"] / bare["cpu_s"] for bare, edge in pairs)
        rss = (max(bare["rss_kb"] for bare, _ in pairs) / 1024, max(edge["rss_kb"] for _, edge in pairs) / 1024)
        label = f"{backlog.name}: {backlog.count} segments, {backlog.size / 1e6:.0f} MB"
        print(f"{label:34}{bare_s:9.2f}{edge_s:9.2f}{ratio:6.2f}x{cpu_ratio:9.2f}x{backlog.size / 1e6 / edge_s:8.1f}"
              f"{f'{rss[0]:.0f} / {rss[1]:.0f}':>27}")
        verdicts.append((backlog.name, ratio))
    for name, figures in idle.items():
        print(f"{'edge sync, nothing to send (' + name + ')':34}{'':9}{figures['seconds']:9.2f}")
    print(f"one 20 s segment sent beside the remote's history ({SEGMENTS_A_DAY} segments a day, a manifest per day):")
    for days, figures in history.items():
        print(f"  {days:4d} days on the remote: {figures['seconds']:5.2f} s, peak RSS {figures['rss_kb'] / 1024:.0f} MB, "
              f"{figures['cpu_s']:.2f} s CPU")
    for name, ratio in verdicts:
        print(f"edge sync / rclone copy, {name} segments: {ratio:.2f}x (goal <= {GOAL_RATIO}x): "
              f"{'met' if ratio <= GOAL_RATIO else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
