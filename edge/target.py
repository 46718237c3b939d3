"""What this machine's OS must provide before pip can install the recorder, and whether it can at all.

Run by the Makefile and systemd/install.sh with the system Python, before any venv exists,
so it uses the standard library only:

    python3 edge/target.py check            # one line and exit 1 where no TFLite runtime exists
    python3 edge/target.py debian-packages  # Debian packages to install besides the build tools
    python3 edge/target.py venv-options     # options for `python3 -m venv`

PyPI has no wheels for some pieces on some targets (see requirements.txt); those come from
Debian instead, and the venv then sees the system's site-packages:
- lgpio, gpiozero's pin backend, everywhere on Raspberry Pi OS (python3-lgpio, built for its
  own Python and kernel; the Raspberry Pi documentation recommends exactly this venv);
- numpy and PyYAML on 32-bit ARM (python3-numpy 1.24 suits tflite-runtime's numpy 1.x ABI).
Elsewhere the venv stays isolated, so that a developer's own packages do not leak into tests.
"""

from __future__ import annotations

import importlib.util
import platform
import shutil
import struct
import subprocess
import sys

ARM32 = ("armv7l", "armv8l")
FLASH_64BIT = "flash Raspberry Pi OS (64-bit)"


def unsupported_reason(machine: str, bits: int, version: tuple[int, int]) -> str | None:
    """Why no TFLite runtime can be installed for this machine and Python, or None if one can."""
    python = f"Python {version[0]}.{version[1]}"
    if bits == 64 and machine in ("aarch64", "x86_64"):
        return None  # ai-edge-litert wheels (tflite-runtime too up to 3.11)
    if bits == 32 and machine == "aarch64":
        return (f"32-bit {python} on a 64-bit kernel: pip would choose 64-bit-only packages; "
                f"{FLASH_64BIT}")
    if bits == 32 and machine in ARM32:
        if version >= (3, 12):
            return (f"32-bit Raspberry Pi OS with {python} (trixie or later): no TFLite runtime is built "
                    f"for it; {FLASH_64BIT}, or Raspberry Pi OS (Legacy, 32-bit) bookworm")
        return None  # tflite-runtime 2.14 armv7l wheels
    if machine == "armv6l":
        return (f"{machine} (Pi Zero W, Pi 1): no TFLite runtime is built for it; use a Pi Zero 2 W "
                f"or newer and {FLASH_64BIT}")
    return f"{bits}-bit {machine} with {python}: no TFLite runtime wheel on PyPI for it"


def this_machine() -> tuple[str, int, tuple[int, int]]:
    return platform.machine(), struct.calcsize("P") * 8, sys.version_info[:2]


def is_arm32(machine: str, bits: int) -> bool:
    return bits == 32 and machine in ARM32


def apt_has(package: str) -> bool:
    """Whether apt can install ``package`` here (python3-lgpio: only Raspberry Pi OS's archive has it)."""
    if shutil.which("apt-cache") is None:
        return False
    policy = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True).stdout
    return any(line.strip().startswith("Candidate:") and "(none)" not in line for line in policy.splitlines())


def debian_packages(machine: str, bits: int) -> list[str]:
    packages = ["python3-numpy", "python3-yaml"] if is_arm32(machine, bits) else []
    if apt_has("python3-lgpio"):
        packages.append("python3-lgpio")
    return packages


def venv_options(machine: str, bits: int) -> list[str]:
    system_lgpio = importlib.util.find_spec("lgpio") is not None
    return ["--system-site-packages"] if system_lgpio or is_arm32(machine, bits) else []


def main(argv: list[str]) -> int:
    machine, bits, version = this_machine()
    command = argv[0] if argv else ""
    if command == "check":
        reason = unsupported_reason(machine, bits, version)
        if reason:
            print(f"unsupported system: {reason}", file=sys.stderr)
            return 1
    elif command == "debian-packages":
        print(" ".join(debian_packages(machine, bits)))
    elif command == "venv-options":
        print(" ".join(venv_options(machine, bits)))
    else:
        print("usage: target.py check | debian-packages | venv-options", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
