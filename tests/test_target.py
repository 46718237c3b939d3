"""edge/target.py: which systems can get a TFLite runtime, and what Debian must provide there."""

import subprocess
import sys
from pathlib import Path

import pytest

from edge.target import debian_packages, unsupported_reason, venv_options

TARGET = [str(Path(__file__).resolve().parents[1] / "edge" / "target.py")]


@pytest.mark.parametrize("machine, bits, version", [
    ("aarch64", 64, (3, 13)),  # Raspberry Pi OS trixie 64-bit
    ("aarch64", 64, (3, 11)),  # bookworm 64-bit
    ("armv7l", 32, (3, 11)),   # bookworm 32-bit: tflite-runtime's armv7l wheel
    ("x86_64", 64, (3, 13)),
])
def test_targets_with_a_runtime_wheel_are_supported(machine, bits, version):
    assert unsupported_reason(machine, bits, version) is None


@pytest.mark.parametrize("machine, bits, version, says", [
    ("armv7l", 32, (3, 13), "flash Raspberry Pi OS (64-bit)"),  # trixie 32-bit
    ("aarch64", 32, (3, 11), "64-bit kernel"),                   # 32-bit userland, 64-bit kernel
    ("armv6l", 32, (3, 11), "Pi Zero 2 W"),
    ("riscv64", 64, (3, 13), "riscv64"),
])
def test_targets_without_one_get_one_line_saying_what_to_do(machine, bits, version, says):
    reason = unsupported_reason(machine, bits, version)
    assert says in reason and "\n" not in reason


def test_32_bit_arm_takes_numpy_and_yaml_from_debian_through_the_system_site_packages():
    assert {"python3-numpy", "python3-yaml"} <= set(debian_packages("armv7l", 32))
    assert venv_options("armv7l", 32) == ["--system-site-packages"]


def test_a_64_bit_system_without_lgpio_keeps_the_venv_isolated():
    if subprocess.run([sys.executable, "-c", "import lgpio"], capture_output=True).returncode == 0:
        pytest.skip("this Python has lgpio: the venv would rightly see the system's packages")
    assert venv_options("x86_64", 64) == []
    assert "python3-numpy" not in debian_packages("x86_64", 64)


def test_check_passes_here_and_the_commands_print_plain_words():
    for command in ("check", "debian-packages", "venv-options"):
        result = subprocess.run([sys.executable, *TARGET, command], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    bad = subprocess.run([sys.executable, *TARGET, "nonsense"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr
