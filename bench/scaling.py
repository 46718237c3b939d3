"""python -m bench.scaling [--days 1 30 365] [--per-day 360] [--rounds 5] [--no-before]: what
the card's history costs (issue 24, docs/card-layout.md).

A synthetic history (manifest lines of about 680 bytes like a real segment's, each with a tiny
WAV file, hard links of one per day) is generated for 1 day, 1 month and 1 year, and each is
measured in child processes, the sizes in turns, ``--rounds`` times: a time shown is the
least of its rounds (what the code costs when the machine lets it run), memory the median:

- start: what start-up costs that depends on the card (the segment writer's preparation and
  the recorder's construction);
- process: wall time of `edge process` of a 6-second file into that folder (start-up, model
  load, 3 segments stored); PSS: that child's proportional set size at the end
  (/proc/self/smaps_rollup), and its peak resident size (VmHWM);
- sweep: the first retention sweep after start and a steady one (the median of 5 in a row,
  each the mean of 1000 when a sweep takes microseconds), with ``keep_days`` null ("off") and
  with a ``keep_days`` nothing has reached yet ("on");
- list: wall time and peak memory of `edge list DIR` (one device, the office side), once:
  the catalogue's first build (bench.office measures the office side further).

"before" is the code at BASELINE (the last commit with a single manifest.jsonl), extracted
with `git archive` into a temporary folder, given the same history in its own layout; it is
left out when that commit is not at hand. Wall times on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASELINE = "99ab166"
SPEECH = REPO / "tests" / "data" / "silero_test_6s.wav"
START = datetime(2025, 9, 1, 8, 0, tzinfo=timezone(timedelta(hours=1)))
TINY_WAV = b"RIFF" + (36 + 64).to_bytes(4, "little") + b"WAVEfmt " + bytes.fromhex(
    "1000000001000100803e0000007d00000200100064617461") + (64).to_bytes(4, "little") + bytes(64)
DEVICE = "room1"


def make_history(root: Path, days: int, per_day: int = 360, layout: str = "day") -> int:
    """A card holding ``days`` days of ``per_day`` segments each; returns the segments.

    ``layout`` "day": a manifest per day folder, card-state.json and days.jsonl (this version);
    "single": one manifest.jsonl at the top (the layout before it)."""
    root.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256(TINY_WAV).hexdigest()
    seq = 0
    single = open(root / "manifest.jsonl", "w") if layout == "single" else None
    folder = None
    # The last day is this boot's, as on a recorder that runs: CLOCK_BOOTTIME ages it.
    boot_now = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    uptime = time.clock_gettime(time.CLOCK_BOOTTIME)
    for day in range(days):
        date = START + timedelta(days=day)
        folder = date.strftime("%Y%m%d")
        (root / folder).mkdir()
        lines = []
        model = root / folder / ".tiny.wav"  # every file of the day is a hard link to it: fast, no space
        model.write_bytes(TINY_WAV)
        for index in range(per_day):
            seq += 1
            start = date + timedelta(seconds=60 * index)
            name = f"{folder}/{seq:06d}_{start.strftime('%H%M%S')}_{DEVICE}.wav"
            os.link(model, root / name)
            lines.append(json.dumps({
                "file": name, "seq": seq, "device": DEVICE, "source": "mic:plughw:CARD=Device,DEV=0",
                "start": start.isoformat(timespec="milliseconds"),
                "end": (start + timedelta(seconds=4.2)).isoformat(timespec="milliseconds"),
                "start_s": 3600.0 + 60 * index, "end_s": 3604.2 + 60 * index, "duration_s": 4.2,
                "samples": 67200, "sample_rate": 16000, "sha256": sha, "prob_mean": 0.8123,
                "prob_max": 0.9987, "clock_synced": True,
                "boot_id": boot_now if day == days - 1 else "0c7e0f7a-5d1e-4b83-9a55-3f0d2f1d9e11",
                "monotonic_s": round(uptime - 60 * (per_day - index), 3) if day == days - 1 else 1234.5 + 60 * index, "overflows": 0, "dropped_frames": 0, "mic_gaps": [],
                "recovered": False, "model_sha256": "9b0a2d5c" * 8, "version": "0.9.0"}))
        text = "".join(line + "\n" for line in lines)
        model.unlink()
        if single is not None:
            single.write(text)
        else:
            (root / folder / "manifest.jsonl").write_text(text)
            with open(root / "days.jsonl", "a") as days_begun:
                days_begun.write(json.dumps({"folder": folder, "seq": seq - per_day + 1}) + "\n")
    if single is not None:
        single.close()
    elif folder is not None:
        first = seq - per_day + 1
        (root / "card-state.json").write_text(json.dumps({"seq": first, "folder": folder}))
    return seq


# Run in a child with PYTHONPATH set to the code measured; prints one JSON object.
CHILD = r"""
import json, os, sys, time, contextlib, io
from pathlib import Path
what, root = sys.argv[1], Path(sys.argv[2])

def memory():
    pss = hwm = None
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("Pss:"):
            pss = int(line.split()[1]) / 1024
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return pss, hwm

from edge.cli import main
if what == "start":
    # What starting costs that depends on the card: the writer's preparation (repair,
    # recovery, the next number) and the recorder's construction (today's count, retention).
    from edge.config import settings_from_dict
    from edge.recorder import Recorder
    from edge.storage import SegmentWriter
    settings = settings_from_dict({})
    t0 = time.perf_counter()
    writer = SegmentWriter(root, "room1", "0" * 64, "bench")
    writer.prepare()
    Recorder(settings, None, writer)
    took = time.perf_counter() - t0
    pss, hwm = memory()
    print(json.dumps({"s": took, "pss_mb": pss, "hwm_mb": hwm}))
elif what == "process":
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["process", sys.argv[3], "--out", str(root)])
    took = time.perf_counter() - t0
    pss, hwm = memory()
    print(json.dumps({"code": code, "s": took, "pss_mb": pss, "hwm_mb": hwm}))
elif what == "sweep":
    from edge.clock import SystemClock
    from edge.retention import SegmentRetention
    keep = None if sys.argv[3] == "off" else float(sys.argv[3])
    retention = SegmentRetention(root, keep, SystemClock())
    t0 = time.perf_counter()
    retention.sweep()  # the first one after start
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    retention.sweep()
    # A sweep of microseconds is timed by the thousand: one alone is below the timer's noise.
    batch = 1 if time.perf_counter() - t0 > 0.001 else 1000
    steady = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(batch):
            retention.sweep()
        steady.append((time.perf_counter() - t0) / batch)
    print(json.dumps({"first_s": first, "s": sorted(steady)[2]}))
elif what == "list":
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["list", str(root)])
    took = time.perf_counter() - t0
    pss, hwm = memory()
    print(json.dumps({"code": code, "s": took, "hwm_mb": hwm}))
"""


def measure(code_root: Path, what: str, root: Path, *args: str) -> dict:
    # `edge list DIR` keeps a catalogue in the user's cache folder: here one beside the card,
    # so that the list figure is its first build, as it is for a card just copied off.
    env = {**os.environ, "PYTHONPATH": str(code_root), "XDG_CACHE_HOME": f"{root}-cache"}
    done = subprocess.run([sys.executable, "-c", CHILD, what, str(root), *args], env=env, cwd=code_root,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} in {root} failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result.get("code", 0) != 0:
        raise RuntimeError(f"{what} in {root} exited {result['code']}: {done.stderr[-2000:]}")
    return result


def baseline_tree(into: Path) -> Path | None:
    """The code at BASELINE, extracted (edge/ and models/), or None when git cannot give it."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BASELINE, "edge", "models", "config"],
                             capture_output=True, check=False)
    if archive.returncode != 0:
        return None
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def run(days_list: list, per_day: int, before: bool, keep_days: float, rounds: int) -> list:
    """A row per code and history size. The sizes of one code are measured in turns, round
    after round, and each time is the least of its rounds, each memory figure the median: a
    busy moment of the machine falls on one round of every size, not on one size."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="edge-scaling-", dir=os.environ.get("EDGE_BENCH_TMP")) as tmp:
        tmp = Path(tmp)
        trees = [("after", REPO, "day", rounds)]
        old = baseline_tree(tmp / "baseline") if before else None
        if old is not None:
            # Its figures are seconds, not milliseconds: one round says enough, and more take minutes.
            trees.insert(0, ("before", old, "single", 1))
        for label, tree, layout, turns in trees:
            cards = {days: tmp / f"{label}-{days}" for days in days_list}
            runs = {days: [] for days in days_list}
            segments = {days: make_history(card, days, per_day, layout) for days, card in cards.items()}
            for _ in range(turns):
                for days, card in cards.items():
                    runs[days].append({
                        "start": measure(tree, "start", card),
                        "sweep_off": measure(tree, "sweep", card, "off"),
                        "sweep_on": measure(tree, "sweep", card, str(keep_days)),
                        "process": measure(tree, "process", card, str(SPEECH)),
                    })
            for days, card in cards.items():
                def least(what: str, key: str) -> float:
                    return min(turn[what][key] for turn in runs[days])

                def median(what: str, key: str) -> float:
                    return statistics.median(turn[what][key] for turn in runs[days])
                listed = measure(tree, "list", card)
                row = {"code": label, "days": days, "segments": segments[days],
                       "start_ms": 1000 * least("start", "s"), "process_s": least("process", "s"),
                       "pss_mb": median("process", "pss_mb"), "hwm_mb": median("process", "hwm_mb"),
                       "list_s": listed["s"], "list_hwm_mb": listed["hwm_mb"]}
                for retention in ("off", "on"):
                    row[f"first_sweep_{retention}_ms"] = 1000 * least(f"sweep_{retention}", "first_s")
                    row[f"sweep_{retention}_ms"] = 1000 * least(f"sweep_{retention}", "s")
                rows.append(row)
                print(_line(row), flush=True)
                shutil.rmtree(card)
    return rows


COLUMNS = (("code", "{}"), ("days", "{}"), ("segments", "{}"), ("start_ms", "{:.1f}"), ("process_s", "{:.2f}"),
           ("pss_mb", "{:.1f}"), ("hwm_mb", "{:.1f}"), ("first_sweep_off_ms", "{:.2f}"), ("sweep_off_ms", "{:.3f}"),
           ("first_sweep_on_ms", "{:.2f}"), ("sweep_on_ms", "{:.3f}"), ("list_s", "{:.2f}"), ("list_hwm_mb", "{:.1f}"))


def _line(row: dict) -> str:
    return "  ".join(fmt.format(row[key]).rjust(max(len(key), 7)) for key, fmt in COLUMNS)


def table(rows: list) -> str:
    header = "  ".join(key.rjust(max(len(key), 7)) for key, _ in COLUMNS)
    return "\n".join([header] + [_line(row) for row in rows])


def verdict(rows: list) -> list:
    """The device-side goal: one-year figures within 10 % of one-day figures (after). A first
    sweep reads the oldest day's manifest and the newest's (on a card of one day, the same one
    twice), and the next day's only for a segment its own stamps cannot date; it is also set
    against the next size."""
    after = {row["days"]: row for row in rows if row["code"] == "after"}
    if not after:
        return []
    large = after[max(after)]
    middle = [days for days in after if min(after) < days < max(after)]
    lines = []
    for key in ("start_ms", "process_s", "pss_mb", "first_sweep_off_ms", "sweep_off_ms", "first_sweep_on_ms",
                "sweep_on_ms"):
        for base in [min(after)] + (middle[:1] if key.startswith("first_sweep") else []):
            ratio = large[key] / after[base][key] if after[base][key] else float("inf")
            lines.append(f"{key}: {max(after)} days / {base} day{'s' if base > 1 else ''} = {ratio:.2f} "
                         f"({'within' if ratio <= 1.10 else 'NOT within'} 10 %)")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, nargs="+", default=[1, 30, 365])
    parser.add_argument("--per-day", type=int, default=360, help="segments a day (360: 131,400 a year)")
    parser.add_argument("--keep-days", type=float, default=3650.0,
                        help="keep_days of the 'on' sweep (longer than the history: nothing is due)")
    parser.add_argument("--rounds", type=int, default=5, help="turns of this version's measurements")
    parser.add_argument("--no-before", action="store_true", help="measure this version only")
    args = parser.parse_args(argv)
    print(f"card history scaling, {args.per_day} segments a day; wall times are noisy on a shared machine")
    print(table([]))
    rows = run(args.days, args.per_day, not args.no_before, args.keep_days, args.rounds)
    print()
    print(table(sorted(rows, key=lambda row: (row["days"], row["code"] != "before"))))
    for line in verdict(rows):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
