"""edge-sync.service and edge-sync.timer, checked by systemd's own tools (as
test_systemd_unit.py does for the recorder): verify is clean, the exposure score stays low,
and the directives the issue asks for are there."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_install import checkout, root  # noqa: F401  (fixtures: install.sh's stand-in checkout and root)

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
SERVICE = SYSTEMD / "edge-sync.service"
TIMER = SYSTEMD / "edge-sync.timer"
INSTALLED_EDGE = "/opt/edge-recorder/venv/bin/edge"
MAX_EXPOSURE = 1.5

# Only the tests that run systemd-analyze need it; the others read the unit files.
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (apt-get install systemd)"
)


def directives(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            pairs.append((key, value))
    return pairs


@needs_systemd_analyze
def test_verify_is_clean(tmp_path):
    text = SERVICE.read_text()
    assert f"ExecStart={INSTALLED_EDGE} sync --once " in text
    # The venv exists only on an installed Pi: the copy's ExecStart names this Python.
    (tmp_path / SERVICE.name).write_text(text.replace(f"ExecStart={INSTALLED_EDGE} ", f"ExecStart={sys.executable} "))
    shutil.copy(TIMER, tmp_path / TIMER.name)
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / TIMER.name), str(tmp_path / SERVICE.name)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if "edge-sync" in line] == []


@needs_systemd_analyze
def test_exposure_is_low():
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(SERVICE)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


@pytest.mark.parametrize("key, value", [
    ("Type", "oneshot"),
    ("NotifyAccess", "main"),
    ("User", "edge-recorder"),
    ("Nice", "15"),
    ("IOSchedulingClass", "idle"),
    ("ProtectSystem", "strict"),
    ("ReadWritePaths", "/var/lib/edge-recorder -/run/edge-recorder"),
    ("Environment", "RUNTIME_DIRECTORY=/run/edge-recorder"),
    ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK"),
    ("CapabilityBoundingSet", ""),
    ("NoNewPrivileges", "yes"),
])
def test_service_directive(key, value):
    assert (key, value) in directives(SERVICE)


@needs_systemd_analyze
def test_timer_every_15_minutes_spread_and_persistent():
    timer = dict(directives(TIMER))
    assert timer["OnCalendar"] == "*:0/15"
    assert timer["Persistent"] == "true"
    assert "RandomizedDelaySec" in timer
    result = subprocess.run(["systemd-analyze", "calendar", "--iterations=3", timer["OnCalendar"]],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    times = re.findall(r"\d\d:(\d\d):00", result.stdout)
    assert [int(m) % 15 for m in times] == [0, 0, 0] and len(set(times)) == 3, result.stdout


def test_only_the_sync_unit_has_network():
    recorder = dict(directives(SYSTEMD / "edge-recorder.service"))
    assert recorder["PrivateNetwork"] == "yes"
    assert "PrivateNetwork" not in dict(directives(SERVICE))


def test_make_install_adds_the_sync_units_only_with_a_remote(checkout, root):
    for name in ("edge-sync.service", "edge-sync.timer"):
        shutil.copy2(SYSTEMD / name, checkout / "systemd" / name)
    venv_python = root / "opt/edge-recorder/venv/bin/python"
    venv_python.parent.mkdir(parents=True)
    # What install_venv made on an earlier run. A wrapper, not a link: a link to a venv's
    # python outside its venv would lose the venv's packages.
    venv_python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    venv_python.chmod(0o755)
    env = dict(os.environ, EDGE_ROOT=str(root), EDGE_SKIP_VENV="1", PYTHONPATH=str(SYSTEMD.parent))

    def install() -> subprocess.CompletedProcess:
        result = subprocess.run(["bash", str(checkout / "systemd/install.sh")], env=env, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr + result.stdout
        return result

    units = [root / "etc/systemd/system" / name for name in ("edge-sync.service", "edge-sync.timer")]
    install()
    assert not any(unit.exists() for unit in units)
    config = root / "etc/edge-recorder/edge.yaml"
    config.write_text(config.read_text() + 'sync:\n  remote: "school-nas:recordings/{device}"\n')
    result = install()
    assert [unit.read_text() for unit in units] == [(SYSTEMD / u.name).read_text() for u in units]
    assert "network copy to school-nas:recordings/{device} every 15 minutes" in result.stdout
    config.write_text(config.read_text().replace('remote: "school-nas:recordings/{device}"', "remote: null"))
    result = install()
    assert not any(unit.exists() for unit in units)
    assert "removed edge-sync.timer" in result.stdout
