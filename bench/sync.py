"""python -m bench.sync [--gb 1.0]: a week's backlog synced over SFTP on 127.0.0.1, `edge sync`
beside plain `rclone copy` of the same folder, in one run.

The backlog is made the way a card fills: a handful of segments written by the real
SegmentWriter, then copied under new names and sequence numbers (with their manifest lines)
until the folder holds ``--gb`` gigabytes over five school days. Both runs go to the same
sshd (tests/servers.py) with no bandwidth limit, each into an empty folder, and each starts
with the backlog's pages dropped from the cache (posix_fadvise, for these files only: the
machine is shared). Time is wall time; memory is the largest peak RSS of any process of
the run (rclone's, or edge's own Python).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edge.storage import MANIFEST, SegmentEnd, SegmentStart, SegmentWriter, read_manifest

from .recorders import REPO

sys.path.insert(0, str(REPO))
from tests.servers import SftpServer  # noqa: E402  (the same server the sync tests use)

DEVICE = "room-12"
TEMPLATE_SECONDS = (2.0, 4.5, 7.0, 11.0, 16.0, 24.0, 38.0, 60.0)  # mean 20 s, 650 kB
DAYS = ("2026-11-23", "2026-11-24", "2026-11-25", "2026-11-26", "2026-11-27")
GOAL_RATIO = 1.2

# Runs a command in a child and reports the largest peak RSS among its processes.
MEASURE = """
import json, resource, subprocess, sys, time
start = time.monotonic()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(json.dumps({"code": code, "seconds": time.monotonic() - start,
                  "rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def synthesize_backlog(root: Path, total_bytes: int) -> tuple[int, int]:
    """A recordings folder of about ``total_bytes``; returns (segments, bytes)."""
    templates_dir = root.parent / "templates"
    writer = SegmentWriter(templates_dir, DEVICE, model_sha256="0" * 64, version="bench")
    writer.prepare()
    rng = np.random.default_rng(13)
    for number, seconds in enumerate(TEMPLATE_SECONDS):
        writer.open(SegmentStart(source="mic", start_s=0.0, start=f"{DAYS[0]}T08:00:{number:02d}.000+01:00",
                                 monotonic_s=1.0, boot_id="bench", clock_synced=True))
        writer.append(rng.integers(-4000, 4000, int(16000 * seconds), dtype=np.int16))
        writer.close(SegmentEnd(prob_mean=0.7, prob_max=0.95, overflows=0, dropped_frames=0))
    templates = read_manifest(templates_dir / MANIFEST)
    root.mkdir(parents=True)
    mean = sum((templates_dir / t["file"]).stat().st_size for t in templates) / len(templates)
    expected = max(1, int(total_bytes / mean))
    lines, size, seq = [], 0, 0
    while size < total_bytes:
        template = templates[seq % len(templates)]
        day = DAYS[min(len(DAYS) - 1, seq * len(DAYS) // expected)]
        seq += 1
        clock = f"{8 + seq // 3600 % 8:02d}{seq // 60 % 60:02d}{seq % 60:02d}"
        name = f"{day.replace('-', '')}/{seq:06d}_{clock}_{DEVICE}.wav"
        (root / name).parent.mkdir(exist_ok=True)
        shutil.copyfile(templates_dir / template["file"], root / name)
        start = f"{day}T{clock[:2]}:{clock[2:4]}:{clock[4:]}.000+01:00"
        lines.append(json.dumps({**template, "file": name, "seq": seq, "start": start}))
        size += (root / name).stat().st_size
    (root / MANIFEST).write_text("".join(line + "\n" for line in lines))
    shutil.rmtree(templates_dir)
    return seq, size


def drop_from_cache(root: Path) -> None:
    for path in root.rglob("*.wav"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def measure(command: list[str], root: Path) -> dict:
    drop_from_cache(root)
    result = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True)
    figures = json.loads(result.stdout)
    if figures["code"] != 0:
        raise SystemExit(f"bench.sync: {' '.join(command[:3])}... failed ({figures['code']}): {result.stderr[-2000:]}")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sync", description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="size of the synthesized backlog (default 1 GB)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="edge-bench-sync-", dir="/var/tmp"))
    server = None
    try:
        recordings = work / "card" / "recordings"
        count, size = synthesize_backlog(recordings, int(args.gb * 1e9))
        served = work / "server"
        served.mkdir()
        (work / "ssh").mkdir()
        server = SftpServer(work / "ssh")
        config = work / "rclone.conf"
        config.write_text(server.rclone_section("nas"))
        server.start()
        edge_config = work / "edge.yaml"
        edge_config.write_text(json.dumps({
            "storage": {"recordings_dir": str(recordings), "device_name": DEVICE},
            "service": {"status_file": str(work / "status.json")}, "led": {"pin": None},
            "sync": {"remote": f"nas:{served}/edge/{{device}}", "rclone_config": str(config), "bwlimit": None}}))
        bare = measure(["rclone", "--config", str(config), "copy", str(recordings), f"nas:{served}/bare/{DEVICE}"],
                       recordings)
        edge = measure([sys.executable, "-m", "edge", "sync", "--once", "--config", str(edge_config)], recordings)
        again = measure([sys.executable, "-m", "edge", "sync", "--once", "--config", str(edge_config)], recordings)
    finally:
        if server is not None:
            server.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    gb = size / 1e9
    ratio = edge["seconds"] / bare["seconds"]
    print(f"backlog: {count} segments, {gb:.2f} GB over {len(DAYS)} days, SFTP to sshd on 127.0.0.1")
    print(f"{'':34}{'s/GB':>8}{'MB/s':>8}{'peak RSS MB':>13}")
    for name, figures in (("rclone copy (bare)", bare), ("edge sync --once", edge),
                          ("edge sync --once, nothing to do", again)):
        print(f"{name:34}{figures['seconds'] / gb:8.1f}{size / 1e6 / figures['seconds']:8.1f}"
              f"{figures['rss_kb'] / 1024:13.0f}")
    print(f"edge sync / rclone copy: {ratio:.2f}x (goal <= {GOAL_RATIO}x): {'met' if ratio <= GOAL_RATIO else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
