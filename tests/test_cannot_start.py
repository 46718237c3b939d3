"""A recorder that cannot start (a broken config, a missing model) says why in one line on
stderr (the journal's warning line under systemd), exits non-zero for systemd to restart it,
and never shows a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("config, line", [
    ("detector: {model: /nonexistent.tflite}\n",
     "edge: /nonexistent.tflite: VAD model file not found (expected a Silero VAD .tflite file)"),
    ("detector: {threshold: 3}\n", "edge: {config}: detector.threshold must be between 0.0 and 1.0, got 3.0"),
    ("storage: {recordings_dir: [1, 2]}\n", "edge: {config}: storage.recordings_dir must be a text, got [1, 2]"),
    ("audio: {device: default\n", "edge: {config}: not valid YAML at line 2"),
])
def test_a_recorder_that_cannot_start_says_why_in_one_line(tmp_path, config, line):
    path = tmp_path / "edge.yaml"
    path.write_text(config + f"led: {{pin: null}}\nservice: {{status_file: {tmp_path / 'status.json'}}}\n")
    result = subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(path)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.splitlines() == [line.format(config=path)], result.stderr
