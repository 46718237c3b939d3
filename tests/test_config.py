"""Settings from YAML: defaults, and one clear line for every kind of mistake."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml

from edge.config import DEFAULT_CONFIG, Settings, load_config
from edge.errors import EdgeError


def write(tmp_path, text):
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    return path


def test_shipped_config_states_exactly_the_defaults():
    # The YAML is the documentation of the defaults: it must not drift from the code.
    assert load_config(DEFAULT_CONFIG) == Settings()
    shipped = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for name, section in typing.get_type_hints(Settings).items():
        keys = {f.name for f in dataclasses.fields(section)}
        assert set(shipped[name]) == keys, name


def test_empty_file_and_partial_sections_keep_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == Settings()
    settings = load_config(write(tmp_path, "segmenter:\n  min_silence_ms: 500\n"))
    assert settings.segmenter.min_silence_ms == 500
    assert settings.segmenter.pre_roll_ms == Settings().segmenter.pre_roll_ms


@pytest.mark.parametrize("text, message", [
    ("segmenter:\n  min_speach_ms: 100\n", r"unknown key 'segmenter.min_speach_ms' \(expected one of: min_speech_ms"),
    ("sgmenter: {}\n", r"unknown key 'sgmenter'"),
    ("segmenter:\n  min_speech_ms: fast\n", r"segmenter.min_speech_ms must be a whole number, got 'fast'"),
    ("segmenter:\n  min_speech_ms: 1.5\n", r"segmenter.min_speech_ms must be a whole number"),
    ("detector:\n  threshold: 1.5\n", r"detector.threshold must be between 0.0 and 1.0, got 1.5"),
    ("detector:\n  threshold: yes\n", r"detector.threshold must be a number, got True"),
    ("storage:\n  when_full: panic\n", r"storage.when_full must be one of stop, delete_oldest, got 'panic'"),
    ("led:\n  pin: null\n  active_high: 1\n", r"led.active_high must be true or false, got 1"),
    ("audio:\n  device: null\n", r"audio.device must not be empty"),
    ("audio: [1, 2]\n", r"audio must be a mapping of keys, got list"),
    ("audio: {device: [\n", r"not valid YAML at line"),
    ("detector:\n  threshold: .nan\n", r"detector.threshold must be a number, got nan"),
    ("sync:\n  timeout_s: .inf\n", r"sync.timeout_s must be a number, got inf"),
    ('storage:\n  recordings_dir: "a\\0b"\n', r"storage.recordings_dir must be a text without control characters, got 'a\\x00b'"),
    ('"\\e[2Jbad": 1\n', r"unknown key '\\x1b\[2Jbad'"),
])
def test_mistakes_are_one_line_naming_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(EdgeError, match=message) as caught:
        load_config(path)
    assert str(caught.value).startswith(str(path))
    assert "\n" not in str(caught.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(EdgeError, match=r"nothere.yaml: config file not found"):
        load_config(tmp_path / "nothere.yaml")


def test_optional_values_accept_null(tmp_path):
    settings = load_config(write(tmp_path, "led:\n  pin: null\naudio:\n  capture_rate: 48000\n"))
    assert settings.led.pin is None
    assert settings.audio.capture_rate == 48000


def test_a_config_that_is_not_text_is_one_line(tmp_path):
    path = tmp_path / "edge.yaml"
    path.write_bytes(b"storage:\n  keep_days: \xff\n")
    with pytest.raises(EdgeError, match=r"edge.yaml: not a text file \(byte 23 is not UTF-8; expected YAML\)"):
        load_config(path)
