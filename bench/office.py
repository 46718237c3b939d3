"""python -m bench.office [--devices 1 100] [--days 1 30 365] [--per-day 360]: `edge list DIR`
over a fleet with the catalogue (edge.catalogue) beside the plain reader (issue 24's office side).

One device's history is generated with bench.scaling.make_history (360 segments a day of about
680-byte manifest lines, tiny WAV files as hard links). A fleet of N devices is N device folders
whose day folders are symbolic links to that one device's: each device's manifests and folders
are read through their own paths (N times the same bytes, from the page cache: a real fleet's
first build also waits for its disk). For each fleet size and history, in fresh processes with
stdout to /dev/null, wall time and peak resident memory (VmHWM, from wait4) of:

- build: `edge list DIR` with no catalogue yet (reads every manifest once);
- warm: `edge list DIR` again, nothing changed: every segment, one line each (a year of a
  hundred devices is 13 million lines, a gigabyte: its printing is most of the time);
- week: `edge list --since D --until D+6 DIR`, the history's last week, nothing changed: the
  question an office asks of a fleet (which classes recorded what, lately), answered from
  a range of the catalogue's index;
- days: `edge list --days DIR`, nothing changed: a line per device and day of the whole
  history (what every class recorded, and how much), from the manifests' summaries;
- new day: `edge list DIR` after one more day (a real folder of 360 segments) on every device;
- plain: `edge list --no-catalogue DIR` (every manifest read, every row held: today's reader
  before the catalogue). Run where it is affordable (at most --plain-max segments); above that
  it is extrapolated from the largest run of the same history length (time and memory scale
  with the rows), and marked "~".
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .scaling import make_history

GOAL_S = 5.0
WEEK = 7
"""Days of the question timed beside the whole listing: the history's last week."""
EDGE = [sys.executable, "-m", "edge"]


def run_edge(args: list, cache: Path) -> dict:
    """Wall time and peak resident memory of one `edge` run, its output thrown away."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    started = time.perf_counter()
    child = subprocess.Popen(EDGE + args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    took = time.perf_counter() - started
    error = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"edge {' '.join(args)} exited {child.returncode}: {error[-2000:]}")
    return {"s": took, "hwm_mb": usage.ru_maxrss / 1024}


def make_fleet(office: Path, source: Path, devices: int, days: int) -> list:
    """``devices`` device folders sharing the first ``days`` day folders of ``source``; returns
    the days (YYYY-MM-DD)."""
    day_folders = sorted(p for p in source.iterdir() if p.is_dir())[:days]
    for number in range(devices):
        device = office / f"room{number + 1:03d}"
        device.mkdir(parents=True)
        for day in day_folders:
            (device / day.name).symlink_to(day)
    return [f"{d.name[:4]}-{d.name[4:6]}-{d.name[6:]}" for d in day_folders]


def add_day(office: Path, new_day: Path) -> None:
    """One more day on every device: a real folder, its files hard links of ``new_day``'s."""
    for device in sorted(office.iterdir()):
        shutil.copytree(new_day, device / new_day.name, copy_function=os.link)


def measure(tmp: Path, source: Path, new_day: Path, devices: int, days: int, per_day: int,
            plain_max: int) -> dict:
    office = tmp / f"office-{devices}x{days}"
    cache = tmp / f"cache-{devices}x{days}"
    dates = make_fleet(office, source, devices, days)
    row = {"devices": devices, "days": days, "segments": devices * days * per_day}
    row["plain"] = run_edge(["list", "--no-catalogue", str(office)], cache) if row["segments"] <= plain_max else None
    row["build"] = run_edge(["list", str(office)], cache)
    row["warm"] = run_edge(["list", str(office)], cache)
    row["week"] = run_edge(["list", "--since", dates[-WEEK:][0], "--until", dates[-1], str(office)], cache)
    row["days_listed"] = run_edge(["list", "--days", str(office)], cache)
    add_day(office, new_day)
    row["new_day"] = run_edge(["list", str(office)], cache)
    row["catalogue_mb"] = sum(f.stat().st_size for f in (cache / "edge").iterdir()) / 1e6
    shutil.rmtree(office)
    shutil.rmtree(cache)
    return row


def extrapolate(rows: list) -> None:
    """A plain figure not measured: the largest measured one of the same history, scaled."""
    for row in rows:
        if row["plain"] is not None:
            continue
        measured = [r for r in rows if r["days"] == row["days"] and r["plain"] and not r["plain"].get("estimated")]
        if measured:
            base = max(measured, key=lambda r: r["segments"])
            scale = row["segments"] / base["segments"]
            row["plain"] = {"s": base["plain"]["s"] * scale, "hwm_mb": base["plain"]["hwm_mb"] * scale,
                            "estimated": True}


def cell(figure: dict | None, key: str, fmt: str) -> str:
    if figure is None:
        return "-"
    return ("~" if figure.get("estimated") else "") + fmt.format(figure[key])


HEADER = ("devices", "days", "segments", "build_s", "build_mb", "warm_s", "warm_mb", "week_s", "days_s", "new_day_s",
          "new_day_mb", "catalogue_mb", "plain_s", "plain_mb")


def line(row: dict) -> list:
    return [str(row["devices"]), str(row["days"]), f"{row['segments']:,}",
            cell(row["build"], "s", "{:.2f}"), cell(row["build"], "hwm_mb", "{:.0f}"),
            cell(row["warm"], "s", "{:.2f}"), cell(row["warm"], "hwm_mb", "{:.0f}"), cell(row["week"], "s", "{:.2f}"),
            cell(row["days_listed"], "s", "{:.2f}"), cell(row["new_day"], "s", "{:.2f}"),
            cell(row["new_day"], "hwm_mb", "{:.0f}"),
            f"{row['catalogue_mb']:.0f}", cell(row["plain"], "s", "{:.2f}"), cell(row["plain"], "hwm_mb", "{:.0f}")]


def table(rows: list) -> str:
    cells = [list(HEADER)] + [line(row) for row in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--days", type=int, nargs="+", default=[1, 30, 365])
    parser.add_argument("--per-day", type=int, default=360)
    parser.add_argument("--plain-max", type=int, default=200_000,
                        help="largest fleet (in segments) the plain reader is run on; above: extrapolated")
    args = parser.parse_args(argv)
    print(f"edge list over a fleet, {args.per_day} segments a day per device, stdout to /dev/null; "
          "times are wall seconds on a shared machine, memory peak resident MB")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edge-office-", dir=os.environ.get("EDGE_BENCH_TMP")) as tmp:
        tmp = Path(tmp)
        source = tmp / "source"
        started = time.perf_counter()
        make_history(source, max(args.days) + 1, args.per_day)
        new_day = max((p for p in source.iterdir() if p.is_dir()), key=lambda p: p.name)
        new_day = new_day.rename(tmp / new_day.name)
        print(f"history generated in {time.perf_counter() - started:.0f} s")
        for days in sorted(args.days):
            for devices in sorted(args.devices):
                rows.append(measure(tmp, source, new_day, devices, days, args.per_day, args.plain_max))
                print(table(rows).splitlines()[-1], flush=True)
    extrapolate(rows)
    print()
    print(table(rows))
    print("~: extrapolated from the largest plain run of the same history (not measured)")
    largest = max(rows, key=lambda r: r["segments"])
    for what, figure in (("every segment", largest["warm"]), (f"the last {WEEK} days (--since/--until)", largest["week"]),
                         ("a line per device and day (--days)", largest["days_listed"])):
        print(f"goal: edge list over {largest['devices']} devices x {largest['days']} days under {GOAL_S:.0f} s "
              f"(warm catalogue), {what}: {figure['s']:.2f} s, {'met' if figure['s'] < GOAL_S else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
