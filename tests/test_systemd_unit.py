"""The service unit, checked by systemd's own tools rather than by reading it.

`systemd-analyze verify` refuses a unit whose ExecStart binary does not exist, and the venv
exists only on an installed Pi; the test verifies a copy whose ExecStart names this
Python instead, which leaves every other directive as shipped.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "edge-recorder.service"
INSTALLED_EDGE = "/opt/edge-recorder/venv/bin/edge"


def readme_exposure() -> float:
    """The exposure the README promises (`systemd-analyze security ...` reports 0.7)."""
    match = re.search(r"systemd-analyze security --offline=true\s+systemd/edge-recorder\.service`\s+reports\s+(\d+\.\d+)",
                      (REPO / "README.md").read_text())
    assert match, "README.md no longer states the unit's exposure level"
    return float(match.group(1))

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (apt-get install systemd)"
)


def directives(text: str) -> list[tuple[str, str]]:
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            pairs.append((key, value))
    return pairs


@pytest.fixture(scope="module")
def unit_text() -> str:
    return UNIT.read_text()


def test_verify_is_clean(tmp_path, unit_text):
    assert f"ExecStart={INSTALLED_EDGE} " in unit_text
    copy = tmp_path / UNIT.name
    copy.write_text(unit_text.replace(f"ExecStart={INSTALLED_EDGE} ", f"ExecStart={sys.executable} "))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    # Anything printed about our unit is a warning about one of its directives.
    about_unit = [line for line in result.stderr.splitlines() if UNIT.name in line]
    assert result.returncode == 0, result.stderr
    assert about_unit == []


def test_exposure_is_what_the_readme_says(unit_text):
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(UNIT)],
        capture_output=True, text=True, timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= readme_exposure(), result.stdout


@pytest.mark.parametrize(
    "key, value",
    [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("ExecStart", f"{INSTALLED_EDGE} run --config /etc/edge-recorder/edge.yaml"),
        ("Restart", "always"),
        ("WatchdogSec", "30s"),
        ("User", "edge-recorder"),
        ("Group", "edge-recorder"),
        ("SupplementaryGroups", "audio gpio"),
        ("StateDirectory", "edge-recorder"),
        ("ConfigurationDirectory", "edge-recorder"),
        ("WorkingDirectory", "%S/edge-recorder"),
        ("ProtectSystem", "strict"),
        ("DevicePolicy", "closed"),
        ("DeviceAllow", "char-alsa rw"),
        ("DeviceAllow", "char-gpiochip rw"),
        ("RestrictAddressFamilies", "AF_UNIX"),
        ("IPAddressDeny", "any"),
        ("UMask", "0077"),
        ("NoNewPrivileges", "yes"),
    ],
)
def test_directive_present(unit_text, key, value):
    assert (key, value) in directives(unit_text)


def test_no_dynamic_user_or_hidden_devices(unit_text):
    keys = {key for key, _ in directives(unit_text)}
    # DynamicUser would give recordings a new owner at every boot; PrivateDevices would hide
    # /dev/snd and /dev/gpiochip* whatever DeviceAllow says.
    assert "DynamicUser" not in keys
    assert "PrivateDevices" not in keys


def test_restarts_are_bounded(unit_text):
    settings = dict(directives(unit_text))
    assert settings["StartLimitBurst"].isdigit() and int(settings["StartLimitBurst"]) <= 10
    assert "StartLimitIntervalSec" in settings
    assert "RestartSec" in settings
