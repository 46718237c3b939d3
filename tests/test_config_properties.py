"""Config parsing on arbitrary YAML (Hypothesis), for every key of every section, read from the
dataclasses themselves: values in range are taken as written, anything else is one line that
names the file and the key, never a traceback and never a silent default."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from edge.config import Settings, load_config
from edge.errors import EdgeError

KEYS = []  # (section, field, base type, optional, (low, high), choices)
for section_name, section in typing.get_type_hints(Settings).items():
    hints = typing.get_type_hints(section)
    for f in dataclasses.fields(section):
        hint = hints[f.name]
        optional = typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint)
        base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
        if typing.get_origin(base) is tuple:
            continue  # lists of texts (privacy.recipients) have tests of their own
        KEYS.append((section_name, f.name, base, optional, f.metadata.get("range", (None, None)),
                     f.metadata.get("choices")))

keys = st.sampled_from(KEYS)
names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def valid_value(key):
    _, _, base, optional, (low, high), choices = key
    if choices:
        return st.sampled_from(choices)
    if base is bool:
        values = st.booleans()
    elif base is int:
        values = st.integers(int(low) if low is not None else -10**6, int(high) if high is not None else 10**6)
    elif base is float:
        values = st.floats(low if low is not None else -1e6, high if high is not None else 1e6,
                           allow_nan=False, allow_infinity=False)
    else:
        values = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_/:", min_size=1, max_size=20)
    return st.one_of(st.none(), values) if optional else values


def load(tmp_path, data):
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, lambda: load_config(path)


def assert_one_line_naming(exc: EdgeError, path, key: str) -> None:
    message = str(exc)
    assert "\n" not in message
    assert message.startswith(f"{path}: ") and key in message, message


@SETTINGS
@given(data=st.data(), key=keys)
def test_every_value_in_range_is_taken_as_written(tmp_path, data, key):
    section, name = key[0], key[1]
    value = data.draw(valid_value(key))
    _, read = load(tmp_path, {section: {name: value}})
    loaded = getattr(getattr(read(), section), name)
    assert loaded == value and (value is None or type(loaded) is (float if key[2] is float else type(value)))
    # Every other key of the file keeps its default.
    assert dataclasses.replace(read(), **{section: getattr(Settings(), section)}) == Settings()


@SETTINGS
@given(data=st.data(), key=keys)
def test_a_value_out_of_range_names_the_key_and_the_range(tmp_path, data, key):
    section, name, base, _, (low, high), _ = key
    assume(base in (int, float) and (low is not None or high is not None))
    step = 1 if base is int else data.draw(st.floats(1e-3, 1e3))
    if high is not None and (low is None or data.draw(st.booleans())):
        value = high + step
    else:
        value = low - step
    path, read = load(tmp_path, {section: {name: int(value) if base is int else float(value)}})
    with pytest.raises(EdgeError) as raised:
        read()
    assert_one_line_naming(raised.value, path, f"{section}.{name} must be between {low} and {high}")


@SETTINGS
@given(data=st.data(), key=keys)
def test_a_value_of_the_wrong_kind_names_the_key(tmp_path, data, key):
    section, name, base, optional, _, _ = key
    wrong = {bool: st.sampled_from([0, 1, "yes", 2.5]), int: st.sampled_from([True, "3", 2.5, [1]]),
             float: st.sampled_from([True, "0.5", [1.0], {"a": 1}]), str: st.sampled_from([3, True, [1], 2.5])}
    value = data.draw(wrong[base])
    path, read = load(tmp_path, {section: {name: value}})
    with pytest.raises(EdgeError) as raised:
        read()
    assert_one_line_naming(raised.value, path, f"{section}.{name} must be")
    if not optional:
        path, read = load(tmp_path, {section: {name: None}})
        with pytest.raises(EdgeError) as raised:
            read()
        assert_one_line_naming(raised.value, path, f"{section}.{name} must not be empty")


@SETTINGS
@given(section=st.sampled_from(sorted(typing.get_type_hints(Settings))), name=names)
def test_an_unknown_key_is_named(tmp_path, section, name):
    known = {f.name for f in dataclasses.fields(typing.get_type_hints(Settings)[section])}
    assume(name not in known)
    path, read = load(tmp_path, {section: {name: 1}})
    with pytest.raises(EdgeError) as raised:
        read()
    assert_one_line_naming(raised.value, path, f"unknown key '{section}.{name}'")
    path, read = load(tmp_path, {name + "_section": {}} if name in typing.get_type_hints(Settings) else {name: {}})
    with pytest.raises(EdgeError) as raised:
        read()
    assert_one_line_naming(raised.value, path, "unknown key")


@SETTINGS
@given(data=st.data(), key=keys)
def test_a_whole_number_for_a_number_key_is_read_as_a_number(tmp_path, data, key):
    section, name, base, _, (low, high), _ = key
    assume(base is float)
    lowest = int(low) + 1 if low is not None else -1000
    highest = int(high) if high is not None else 1000
    assume(lowest <= highest)
    value = data.draw(st.integers(lowest, highest))  # `5`, as people write it, not `5.0`
    _, read = load(tmp_path, {section: {name: value}})
    loaded = getattr(getattr(read(), section), name)
    assert loaded == value and type(loaded) is float
