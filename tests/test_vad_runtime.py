"""Choosing the TFLite runtime: one that fails to import or crashes creating its interpreter is
passed over for the next, and the log says which and why.

The failing runtimes are real packages written to a temporary folder: one whose import raises,
one whose Interpreter() dies of a real SIGSEGV (as ai-edge-litert did under qemu with the
host's /proc/cpuinfo)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest

from edge.errors import EdgeError
from edge.vad import DEFAULT_MODEL, RUNTIMES, SileroVad, probe_runtime, usable_runtime, window_probabilities
from edge.wavio import read_wav_16k

WAV = Path(__file__).parent / "data" / "silero_test_6s.wav"

INSTALLED = [name for name in RUNTIMES if importlib.util.find_spec(name) is not None]
needs_a_runtime = pytest.mark.skipif(not INSTALLED, reason="no TFLite runtime installed (ai-edge-litert or tflite-runtime)")

BROKEN_IMPORT = 'raise ImportError("numpy.core.multiarray failed to import")\n'
# What tflite-runtime 2.14 does with numpy 2: imports, then refuses every model.
REFUSING = '''class Interpreter:
    def __init__(self, model_path, num_threads=None):
        raise ValueError("<built-in method CreateWrapperFromFile of PyCapsule object> returned a result with an exception set")
'''
CRASHING = '''import ctypes

class Interpreter:
    def __init__(self, model_path, num_threads=None):
        ctypes.string_at(0)  # reads address 0: SIGSEGV
'''


@pytest.fixture
def fake_runtimes(tmp_path, monkeypatch, request):
    """Packages <name>.interpreter on sys.path (and so in the probe's child); names unique per test,
    because probes are remembered per process."""
    suffix = request.node.name.replace("[", "_").replace("]", "").replace("-", "_")
    names = {}
    for kind, source in (("broken", BROKEN_IMPORT), ("crashing", CRASHING), ("refusing", REFUSING)):
        name = f"{kind}_rt_{suffix}"
        package = tmp_path / name
        package.mkdir()
        (package / "__init__.py").write_text("")
        (package / "interpreter.py").write_text(source)
        names[kind] = name
    monkeypatch.syspath_prepend(str(tmp_path))
    return names


def test_a_child_that_dies_of_a_signal_is_reported_as_a_crash(fake_runtimes):
    failure = probe_runtime(fake_runtimes["crashing"], str(DEFAULT_MODEL))
    assert failure is not None and not failure.model_refused
    assert failure.reason == "creating its interpreter crashed (SIGSEGV)"


@needs_a_runtime
def test_a_runtime_whose_import_fails_is_passed_over_and_the_log_says_why(fake_runtimes, caplog):
    broken = fake_runtimes["broken"]
    with caplog.at_level(logging.WARNING, logger="edge.vad"):
        chosen = usable_runtime(DEFAULT_MODEL, (broken, *INSTALLED))
    assert chosen == INSTALLED[0]
    assert [r.getMessage() for r in caplog.records] == [
        f"TFLite runtime {broken} is not used: import failed (numpy.core.multiarray failed to import); "
        f"using {chosen}"]


@needs_a_runtime
def test_a_runtime_that_crashes_creating_the_interpreter_is_passed_over(fake_runtimes, caplog):
    crashing = fake_runtimes["crashing"]
    with caplog.at_level(logging.WARNING, logger="edge.vad"):
        chosen = usable_runtime(DEFAULT_MODEL, (crashing, *INSTALLED))
    assert chosen == INSTALLED[0]
    assert [r.getMessage() for r in caplog.records] == [
        f"TFLite runtime {crashing} is not used: creating its interpreter crashed (SIGSEGV); using {chosen}"]
    # The runtime it fell back to really scores audio, in this process.
    probs = window_probabilities(SileroVad(DEFAULT_MODEL, runtime=chosen), read_wav_16k(WAV))
    assert 0.2 < (probs > 0.5).mean() < 0.8


def test_no_usable_runtime_names_each_one_and_why_in_one_line(fake_runtimes):
    runtimes = (fake_runtimes["crashing"], fake_runtimes["broken"], "no_such_runtime")
    with pytest.raises(EdgeError) as caught:
        usable_runtime(DEFAULT_MODEL, runtimes)
    message = str(caught.value)
    assert message == (
        f"no usable TFLite runtime: {runtimes[0]}: creating its interpreter crashed (SIGSEGV); "
        f"{runtimes[1]}: import failed (numpy.core.multiarray failed to import); no_such_runtime: not installed")


def test_no_runtime_installed_says_what_to_install():
    with pytest.raises(EdgeError, match="no TFLite runtime installed: install ai-edge-litert or tflite-runtime"):
        usable_runtime(DEFAULT_MODEL, ("no_such_runtime", "nor_this_one"))


@needs_a_runtime
def test_a_corrupt_model_is_refused_as_a_model_not_a_runtime(tmp_path):
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"this is not a flatbuffer" * 100)
    with pytest.raises(EdgeError, match=r"corrupt\.tflite: not a valid TFLite model \(.+\)$") as caught:
        SileroVad(corrupt)
    assert "\n" not in str(caught.value)


@needs_a_runtime
def test_the_detector_says_which_runtime_it_chose():
    assert SileroVad(DEFAULT_MODEL).runtime == INSTALLED[0]


def test_a_good_model_refused_by_the_only_runtime_that_imports_is_a_runtime_problem(fake_runtimes):
    runtimes = (fake_runtimes["broken"], fake_runtimes["refusing"])
    with pytest.raises(EdgeError, match=r"^no usable TFLite runtime: .*import failed.*; "
                                        rf"{runtimes[1]}: <built-in method CreateWrapperFromFile"):
        usable_runtime(DEFAULT_MODEL, runtimes)


def test_a_file_that_is_not_tflite_is_a_model_problem_whatever_the_runtimes(fake_runtimes, tmp_path):
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"this is not a flatbuffer" * 100)
    with pytest.raises(EdgeError, match=r"corrupt\.tflite: not a valid TFLite model"):
        usable_runtime(corrupt, (fake_runtimes["broken"], fake_runtimes["refusing"]))


@needs_a_runtime
def test_an_unreadable_model_is_named_in_one_line(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    locked = tmp_path / "locked.tflite"
    locked.write_bytes(DEFAULT_MODEL.read_bytes())
    locked.chmod(0)
    with pytest.raises(EdgeError, match=r"locked\.tflite: not a valid TFLite model \(.+\)$") as caught:
        SileroVad(locked)
    assert "\n" not in str(caught.value)
