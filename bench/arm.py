"""python -m bench.arm: instructions per 32 ms window on aarch64, counted under qemu-user with
QEMU's instruction-counting plugin, and what share of a Raspberry Pi core that would be.

Each workload (bench/arm_workload.py) runs twice in the arm64 root bench/arm/setup.sh builds:
N and 2N windows (or seconds); start-up and imports are alike in both, so the difference is
the cost of N. Instructions are exact for the code path qemu ran (the same aarch64 wheels a
Raspberry Pi OS bookworm 64-bit installs), but not cycles: the per-board shares assume the
cycles per instruction in CORES, which are assumptions, stated in docs/performance-arm.md.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("EDGE_ARM_CACHE", "/var/cache/edge-arm"))
WINDOWS_PER_S = 16000 / 512
SITE = "/opt/edge-venv/lib/python3.11/site-packages"
# (board, core, clock Hz, assumed cycles per instruction): see docs/performance-arm.md.
CORES = [
    ("Pi Zero 2 W", "Cortex-A53", 1.0e9, 1.5),
    ("Pi 4", "Cortex-A72", 1.5e9, 0.9),
    ("Pi 5", "Cortex-A76", 2.4e9, 0.6),
]
WORKLOADS = [
    ("model int8, ai-edge-litert", "model:silero_vad_int8.tflite:ai_edge_litert", 100, "window"),
    ("model int8, tflite-runtime", "model:silero_vad_int8.tflite:tflite_runtime", 100, "window"),
    ("model fp16, ai-edge-litert", "model:silero_vad_fp16.tflite:ai_edge_litert", 100, "window"),
    ("model fp16, tflite-runtime", "model:silero_vad_fp16.tflite:tflite_runtime", 100, "window"),
    ("noise suppressor (edge/denoise.py)", "suppressor", 100, "window"),
    ("edge process, default config, ai-edge-litert", "process:ai_edge_litert", 4, "second"),
    ("edge process, default config, tflite-runtime", "process:tflite_runtime", 4, "second"),
]


def count(root: Path, plugin: Path, workload: str, n: int) -> int:
    """Guest instructions of one run of ``workload`` with ``n``."""
    with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
        env = {"PATH": "/usr/bin:/bin", "HOME": "/root", "PYTHONPATH": f"{SITE}:{REPO}",
               "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0"}  # the same dict layouts, so the same instructions, in every run
        subprocess.run(["qemu-aarch64", "-L", str(root), "-plugin", str(plugin), "-d", "plugin", "-D", log.name,
                        str(root / "usr" / "bin" / "python3.11"), "-m", "bench.arm_workload", workload, str(n)],
                       cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
        found = re.search(r"insns: (\d+)", Path(log.name).read_text())
        if not found:
            raise SystemExit(f"bench.arm: no instruction count from the plugin for {workload}")
        return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.arm", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="workloads whose label contains NAME")
    args = parser.parse_args(argv)
    root, plugin = CACHE / "root", CACHE / "libinsn.so"
    if not (root / "opt" / "edge-venv" / ".complete").exists() or not plugin.exists():
        subprocess.run(["bash", str(REPO / "bench" / "arm" / "setup.sh")], check=True)
    rows = []
    for label, workload, n, unit in WORKLOADS:
        if args.only and not any(word in label for word in args.only):
            continue
        try:
            once, twice = count(root, plugin, workload, n), count(root, plugin, workload, 2 * n)
        except subprocess.CalledProcessError as exc:
            print(f"bench.arm: {label}: failed under qemu (exit {exc.returncode}), skipped", file=sys.stderr)
            continue
        per = (twice - once) / n
        per_s = per * (WINDOWS_PER_S if unit == "window" else 1)
        rows.append((label, unit, per, per_s))
        print(f"{label}: {per / 1e6:.3f} M instructions per {unit}", flush=True)
    header = ["workload", "M insns per unit", "M insns per s of audio"]
    header += [f"{board} ({core} {hz / 1e9:g} GHz, CPI {cpi:g})" for board, core, hz, cpi in CORES]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for label, unit, per, per_s in rows:
        shares = [f"{100 * per_s * cpi / hz:.1f} %" for _, _, hz, cpi in CORES]
        print(f"| {label} | {per / 1e6:.3f} per {unit} | {per_s / 1e6:.1f} | " + " | ".join(shares) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
