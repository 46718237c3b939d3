"""The service unit, checked by systemd's own tools rather than by reading it.

`systemd-analyze verify` refuses a unit whose Exec binaries do not exist, and the venv
exists only on an installed Pi; the test verifies a copy whose Exec lines name this
Python instead, which leaves every other directive as shipped. What docs/operating.md says about
the service (its directives, its exposure) is checked against the unit as it is.
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


OPERATING = REPO / "docs" / "operating.md"


def readme_exposure() -> float:
    """The exposure docs/operating.md promises (`systemd-analyze security ...` reports 0.7)."""
    match = re.search(r"systemd-analyze security --offline=true\s+systemd/edge-recorder\.service`\s+reports\s+(\d+\.\d+)",
                      OPERATING.read_text())
    assert match, "docs/operating.md no longer states the unit's exposure level"
    return float(match.group(1))

# Only the tests that run systemd-analyze need it; the others read the unit files.
needs_systemd_analyze = pytest.mark.skipif(
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


@needs_systemd_analyze
def test_verify_is_clean(tmp_path, unit_text):
    assert f"ExecStart={INSTALLED_EDGE} " in unit_text
    copy = tmp_path / UNIT.name
    copy.write_text(unit_text.replace(f"{INSTALLED_EDGE} ", f"{sys.executable} "))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    # Anything printed about our unit is a warning about one of its directives.
    about_unit = [line for line in result.stderr.splitlines() if UNIT.name in line]
    assert result.returncode == 0, result.stderr
    assert about_unit == []


def service_paragraph() -> str:
    text = OPERATING.read_text()
    return text[text.index("## The service\n"):].split("\n\n")[1]


@needs_systemd_analyze
def test_exposure_is_what_the_readme_says(unit_text):
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(UNIT)],
        capture_output=True, text=True, timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= readme_exposure(), result.stdout
    stated = re.search(r"systemd/edge-recorder.service` reports (\d+\.\d+)", " ".join(service_paragraph().split()))
    assert stated and stated.group(1) == match.group(1)


def test_the_readme_states_the_units_restart_policy(unit_text):
    unit = directives(unit_text)
    # `Key=value` in the paragraph; all-capital keys are sd_notify messages, not directives.
    stated = [(k, v) for k, v in re.findall(r"`([A-Za-z]+)=([^`]+)`", service_paragraph()) if not k.isupper()]
    for key in ("Restart", "RestartSec", "StartLimitIntervalSec", "TimeoutStopSec"):
        assert key in dict(stated), f"docs/operating.md does not state {key}="
    for pair in stated:
        assert pair in unit, f"docs/operating.md says {pair[0]}={pair[1]}, the unit does not"


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
        # The status, rewritten every 5 s, in /run (a tmpfs) and readable by the group; kept
        # after a stop for `edge status`.
        ("RuntimeDirectory", "edge-recorder"),
        ("RuntimeDirectoryMode", "0750"),
        ("RuntimeDirectoryPreserve", "yes"),
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


def test_the_unit_never_gives_up_and_shows_when_it_is_down(unit_text):
    settings = dict(directives(unit_text))
    # No start limit: the unit never ends failed, whatever keeps it from running.
    assert settings["StartLimitIntervalSec"] == "0"
    assert "StartLimitBurst" not in settings
    assert settings["Restart"] == "always"
    # However the daemon ended, the LED is switched off (dark: not running).
    assert settings["ExecStopPost"] == f"-{INSTALLED_EDGE} led-off --config /etc/edge-recorder/edge.yaml"


def test_each_part_of_a_start_gets_the_units_start_timeout(unit_text):
    from edge.notify import START_PART_S

    # The daemon extends the start by START_PART_S before each part: as long as the unit's.
    assert dict(directives(unit_text))["TimeoutStartSec"] == f"{START_PART_S}s"
