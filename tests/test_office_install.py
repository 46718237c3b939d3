"""The office computer: a plain `pip install .` (no device extra) in a fresh venv gives
`edge keygen`, `edge decrypt`, `edge list` and `edge export`, without PyAudio, GPIO or TFLite."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from cardcheck import header_agrees_with_data
from edge.encryption import AgeWav
from edge.storage import SegmentEnd, SegmentStart, SegmentWriter

REPO = Path(__file__).resolve().parent.parent
DEVICE_ONLY = ("pyaudio", "gpiozero", "lgpio", "tflite_runtime", "ai_edge_litert")


def run(*argv, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_pip_install_without_device_extras_gives_the_office_commands(tmp_path):
    # A clone of what the package is built from: `pip install .` in it, as the README says,
    # must leave nothing git would show (setuptools builds in the tree).
    source = tmp_path / "src"
    source.mkdir()
    shutil.copytree(REPO / "edge", source / "edge", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "requirements.txt", ".gitignore"):
        shutil.copy(REPO / name, source / name)
    git = ("git", "-C", source, "-c", "user.name=t", "-c", "user.email=t@t")
    for argv in (("init", "-q"), ("add", "-A"), ("commit", "-qm", "clone")):
        assert run(*git, *argv).returncode == 0
    venv = tmp_path / "laptop"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = run(venv / "bin" / "pip", "install", "-q", ".", cwd=source)
    assert installed.returncode == 0, installed.stderr
    assert run(*git, "status", "--porcelain").stdout == ""
    python, edge = venv / "bin" / "python", venv / "bin" / "edge"
    for module in DEVICE_ONLY:
        probe = run(python, "-c", f"import {module}")
        assert probe.returncode != 0, f"{module} was installed without the device extra"

    key = tmp_path / "office-key.txt"
    made = run(edge, "keygen", key)
    assert made.returncode == 0, made.stderr
    public = made.stdout.split("recipients: [")[1].split("]")[0]

    # A card recorded by an encrypting recorder, then its export, read on the laptop.
    card = tmp_path / "card"
    writer = SegmentWriter(card, "room1", "m", "v", segment_format=AgeWav.for_recipients([public]))
    writer.prepare()
    samples = np.random.default_rng(1).integers(-3000, 3000, 24000, dtype=np.int16)
    writer.open(SegmentStart(source="mic", start_s=0.0, start="2026-11-24T09:30:00.000+01:00",
                             monotonic_s=5.0, boot_id="b", clock_synced=True))
    writer.append(samples)
    entry = writer.close(SegmentEnd(prob_mean=0.7, prob_max=0.9, overflows=0, dropped_frames=0))
    config = tmp_path / "edge.yaml"
    config.write_text(json.dumps({"storage": {"recordings_dir": str(card), "device_name": "room1"}}))

    # No recorder here: the commands say what to do, and doctor what it cannot check.
    unconfigured = run(edge, "list", cwd=tmp_path)
    assert unconfigured.returncode == 2 and unconfigured.stderr == (
        "edge: no --config given and /etc/edge-recorder/edge.yaml does not exist (no recorder is "
        "installed on this computer): pass --config FILE\n")
    doctor = run(edge, "doctor", "--config", config, cwd=tmp_path)
    assert doctor.stderr == "" and "Traceback" not in doctor.stdout
    assert doctor.stdout.splitlines()[1] == (
        "office install (pip install . without the device extra): model, microphone, gpio, button, clock "
        "not checked here; a recorder needs pip install '.[device]' (make install on the Pi)")
    assert [line.split(":")[0] for line in doctor.stdout.splitlines()[2:]] == [
        "OK   storage", "OK   encryption", "OK   sync"]
    devices = run(edge, "devices", "--config", config, cwd=tmp_path)
    assert devices.returncode == 2 and devices.stderr.startswith(
        "edge: pyaudio is not installed: this is an office install (pip install .)")

    listing = run(edge, "list", "--config", config)
    assert listing.returncode == 0, listing.stderr
    assert entry["file"] in listing.stdout and "1 segments" in listing.stdout
    stick = tmp_path / "stick"
    stick.mkdir()
    exported = run(edge, "export", stick, "--config", config)
    assert exported.returncode == 0, exported.stderr
    office = tmp_path / "office"
    office.mkdir()
    decrypted = run(edge, "decrypt", "--identity", key, stick, office)
    assert decrypted.returncode == 0, decrypted.stderr
    wav = office / "room1" / entry["file"][: -len(".age")]
    assert header_agrees_with_data(wav)
    assert np.array_equal(np.frombuffer(wav.read_bytes()[44:], "<i2"), samples)
