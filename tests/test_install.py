"""install.sh and uninstall.sh run for real, into a temporary root (EDGE_ROOT).

They run from a small stand-in checkout, so the test checks the scripts and not whatever
state the rest of the work tree is in; the venv and pip step is skipped (EDGE_SKIP_VENV=1)
because it would download and build for minutes: the Python running the tests reads the
config instead (the stand-in carries the real config loader).
"""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = "audio:\n  device: default\n"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")


@pytest.fixture
def checkout(tmp_path) -> Path:
    source = tmp_path / "checkout"
    (source / "systemd").mkdir(parents=True)
    for name in ("install.sh", "uninstall.sh", "edge-recorder.service", "99-edge-export.rules",
                 "edge-export@.service"):
        shutil.copy2(REPO / "systemd" / name, source / "systemd" / name)
    (source / "edge").mkdir()
    (source / "edge" / "__init__.py").write_text('__version__ = "0.0.0"\n')
    for module in ("config.py", "errors.py"):
        shutil.copy2(REPO / "edge" / module, source / "edge" / module)
    (source / "edge" / "__pycache__").mkdir()
    (source / "edge" / "__pycache__" / "stale.cpython-311.pyc").write_bytes(b"")
    (source / "models").mkdir()
    (source / "models" / "vad.tflite").write_bytes(b"model")
    (source / "config").mkdir()
    (source / "config" / "edge.yaml").write_text(DEFAULT_CONFIG)
    (source / "pyproject.toml").write_text("[project]\nname = 'edge-recorder'\n")
    (source / "requirements.txt").write_text("PyYAML\n")
    return source


@pytest.fixture
def root(tmp_path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


def run(script: Path, root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, EDGE_ROOT=str(root), EDGE_SKIP_VENV="1", PYTHON=sys.executable)
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr + result.stdout
    return result


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(root.rglob("*"))
    }


def test_install_lays_out_the_service_and_twice_changes_nothing(checkout, root):
    run(checkout / "systemd" / "install.sh", root)
    first = tree(root)
    run(checkout / "systemd" / "install.sh", root)
    assert tree(root) == first

    src = root / "opt/edge-recorder/src"
    assert (src / "edge/__init__.py").is_file()
    assert not (src / "edge/__pycache__").exists()
    assert (src / "models/vad.tflite").read_bytes() == b"model"
    assert (src / "config/edge.yaml").is_file()
    assert (src / "pyproject.toml").is_file() and (src / "requirements.txt").is_file()
    assert not (root / "opt/edge-recorder/src.new").exists()

    config = root / "etc/edge-recorder/edge.yaml"
    assert config.read_text() == DEFAULT_CONFIG
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert not (root / "etc/edge-recorder/edge.yaml.dist").exists()

    unit = root / "etc/systemd/system/edge-recorder.service"
    assert unit.read_bytes() == (REPO / "systemd/edge-recorder.service").read_bytes()
    rule = (root / "etc/udev/rules.d/60-edge-recorder-gpiochip.rules").read_text()
    assert 'KERNEL=="gpiochip*", GROUP="gpio"' in rule

    state = root / "var/lib/edge-recorder"
    assert state.is_dir() and stat.S_IMODE(state.stat().st_mode) == 0o750


def test_installed_config_names_the_service_data_paths(checkout, root):
    # `edge status` from a shell has no $STATE_DIRECTORY: the paths must be written out.
    from edge.config import load_config

    shutil.copy2(REPO / "config/edge.yaml", checkout / "config/edge.yaml")
    run(checkout / "systemd" / "install.sh", root)
    settings = load_config(root / "etc/edge-recorder/edge.yaml")
    assert settings.storage.recordings_dir == "/var/lib/edge-recorder/recordings"
    # Rewritten every 5 s: in the service's RuntimeDirectory (a tmpfs), not on the card.
    assert settings.service.status_file == "/run/edge-recorder/status.json"
    # `edge pause` from a shell has no $RUNTIME_DIRECTORY either (RuntimeDirectory= in the unit).
    assert settings.service.control_socket == "/run/edge-recorder/control.sock"
    assert "RuntimeDirectory=edge-recorder\n" in (root / "etc/systemd/system/edge-recorder.service").read_text()
    assert settings.audio == load_config(REPO / "config/edge.yaml").audio


def test_an_upgrade_moves_the_status_file_an_earlier_install_put_on_the_card(checkout, root):
    shutil.copy2(REPO / "config/edge.yaml", checkout / "config/edge.yaml")
    run(checkout / "systemd" / "install.sh", root)
    config = root / "etc/edge-recorder/edge.yaml"
    installed = config.read_text()
    # What the installer wrote before the status moved, with an edit of the owner's.
    earlier = installed.replace("status_file: /run/edge-recorder/status.json",
                                "status_file: /var/lib/edge-recorder/status.json")
    assert earlier != installed
    config.write_text(earlier.replace("  pin: 17 ", "  pin: 27 "))

    result = run(checkout / "systemd" / "install.sh", root)
    assert config.read_text() == installed.replace("  pin: 17 ", "  pin: 27 ")
    assert "moves off the SD card" in result.stdout

    # A path the owner chose is theirs: left alone.
    config.write_text(installed.replace("/run/edge-recorder/status.json", "/srv/status.json"))
    run(checkout / "systemd" / "install.sh", root)
    assert "status_file: /srv/status.json" in config.read_text()


def test_an_edited_config_is_kept_and_the_new_default_goes_beside_it(checkout, root):
    run(checkout / "systemd" / "install.sh", root)
    config = root / "etc/edge-recorder/edge.yaml"
    config.write_text("audio:\n  device: plughw:CARD=Device,DEV=0\n")
    (checkout / "config/edge.yaml").write_text(DEFAULT_CONFIG + "led:\n  pin: 27\n")

    result = run(checkout / "systemd" / "install.sh", root)
    assert config.read_text() == "audio:\n  device: plughw:CARD=Device,DEV=0\n"
    assert (root / "etc/edge-recorder/edge.yaml.dist").read_text() == DEFAULT_CONFIG + "led:\n  pin: 27\n"
    assert "edge.yaml.dist" in result.stdout
    # The copied source follows the checkout: an upgrade brings the new default along.
    assert (root / "opt/edge-recorder/src/config/edge.yaml").read_text().endswith("pin: 27\n")


def test_files_gone_from_the_checkout_are_gone_after_an_upgrade(checkout, root):
    (checkout / "models/old.tflite").write_bytes(b"old")
    run(checkout / "systemd" / "install.sh", root)
    (checkout / "models/old.tflite").unlink()
    run(checkout / "systemd" / "install.sh", root)
    assert not (root / "opt/edge-recorder/src/models/old.tflite").exists()


def test_export_auto_adds_the_usb_rule_and_unit_and_turning_it_off_removes_them(checkout, root):
    rule = root / "etc/udev/rules.d/99-edge-export.rules"
    unit = root / "etc/systemd/system/edge-export@.service"
    run(checkout / "systemd" / "install.sh", root)
    assert not rule.exists() and not unit.exists()  # export.auto is off by default

    config = root / "etc/edge-recorder/edge.yaml"
    config.write_text(DEFAULT_CONFIG + "export:\n  auto: true\n  usb_label: CLASS-4B\n")
    result = run(checkout / "systemd" / "install.sh", root)
    assert "USB export enabled for sticks labelled CLASS-4B" in result.stdout
    assert 'ENV{ID_FS_LABEL}=="CLASS-4B"' in rule.read_text()
    assert "EDGE-EXPORT" not in rule.read_text()
    assert unit.read_bytes() == (REPO / "systemd/edge-export@.service").read_bytes()

    config.write_text(DEFAULT_CONFIG + "export:\n  auto: false\n")
    run(checkout / "systemd" / "install.sh", root)
    assert not rule.exists() and not unit.exists()


def test_install_stops_at_a_config_it_cannot_read(checkout, root):
    run(checkout / "systemd" / "install.sh", root)
    (root / "etc/edge-recorder/edge.yaml").write_text("export:\n  auto: maybe\n")
    env = dict(os.environ, EDGE_ROOT=str(root), EDGE_SKIP_VENV="1", PYTHON=sys.executable)
    result = subprocess.run(["bash", str(checkout / "systemd/install.sh")], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 1
    assert "export.auto must be true or false, got 'maybe'" in result.stderr
    assert result.stderr.strip().endswith("fix the config first (see the message above)")


def test_uninstall_twice_removes_everything_but_the_recordings(checkout, root):
    run(checkout / "systemd" / "install.sh", root)
    recording = root / "var/lib/edge-recorder/recordings/2024-05-06/room1-083000.wav"
    recording.parent.mkdir(parents=True)
    recording.write_bytes(b"RIFF")

    first = run(checkout / "systemd" / "uninstall.sh", root)
    assert "kept the recordings" in first.stdout
    run(checkout / "systemd" / "uninstall.sh", root)

    assert not (root / "opt/edge-recorder").exists()
    assert not (root / "etc/edge-recorder").exists()
    assert not (root / "etc/systemd/system/edge-recorder.service").exists()
    assert not (root / "etc/udev/rules.d/60-edge-recorder-gpiochip.rules").exists()
    assert recording.read_bytes() == b"RIFF"


def test_install_refuses_an_incomplete_checkout(checkout, root):
    (checkout / "config/edge.yaml").unlink()
    env = dict(os.environ, EDGE_ROOT=str(root), EDGE_SKIP_VENV="1")
    result = subprocess.run(
        ["bash", str(checkout / "systemd/install.sh")], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert result.stderr.strip().endswith("config/edge.yaml is missing: run from a complete checkout")
    assert not (root / "opt").exists()
