"""Streaming speech detector: Silero VAD (MIT) ported to TFLite, one 32 ms window per call.

The model is stateless; this wrapper owns what Silero keeps between calls: the LSTM state
(h, c) and the last 64 samples of the previous window, which the model sees in front of the
new 512 (models/README.md describes the model files).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from .config import DetectorSettings
from .errors import EdgeError
from .logs import quiet_stderr

log = logging.getLogger(__name__)

# fp16 rather than int8: it follows the reference within 0.001 (int8: 0.036), which matters where
# soft speech hovers near the threshold (bench/results: child-like speech at 10 dB, 99.1 % stored
# against 98.7 %), and tflite-runtime runs it twice as fast.
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "silero_vad_fp16.tflite"

# Import names of the interpreters, in order of preference: ai-edge-litert is the maintained
# successor of tflite-runtime, which Raspberry Pi OS bookworm still ships wheels for.
RUNTIMES = ("ai_edge_litert", "tflite_runtime")
CONTEXT = 64
STATE = 128
MODEL_INPUTS = {"audio": (1, CONTEXT + 512), "h": (1, STATE), "c": (1, STATE)}
MODEL_OUTPUTS = {"prob": (1,), "h": (1, STATE), "c": (1, STATE)}
INT16_SCALE = np.float32(1 / 32768)


def configured_model(settings: DetectorSettings) -> Path:
    """The model file the config names, or the bundled fp16 model."""
    return Path(settings.model) if settings.model else DEFAULT_MODEL


class VadRuntimeError(EdgeError):
    """No usable TFLite interpreter package."""


class VadModelError(EdgeError):
    """The model file is missing or is not a Silero VAD TFLite model."""


class VadInputError(EdgeError):
    """Audio handed to the detector is not one 512-sample window."""


def interpreter_class(runtime: str | None):
    """The Interpreter class of ``runtime`` (an import name from RUNTIMES), or of the first
    installed one when ``runtime`` is None."""
    if runtime is not None and runtime not in RUNTIMES:
        raise VadRuntimeError(f"unknown TFLite runtime {runtime!r}, expected one of {', '.join(RUNTIMES)}")
    for name in RUNTIMES if runtime is None else (runtime,):
        try:
            return importlib.import_module(f"{name}.interpreter").Interpreter
        except ImportError:
            continue
    if runtime is not None:
        raise VadRuntimeError(f"TFLite runtime {runtime} is not installed")
    raise VadRuntimeError(
        "no TFLite runtime installed: install ai-edge-litert or tflite-runtime (pip install tflite-runtime)"
    )


# Run in a child Python: import a runtime, create its interpreter on the model and run it once.
# Exit status 3: the import failed; 4: the interpreter refused the model. The reason is the
# last stderr line starting with "probe: " (runtimes log to stderr too).
_PROBE = """
import importlib, sys
def fail(status, exc):
    lines = str(exc).strip().splitlines()
    print("probe:", lines[0] if lines else type(exc).__name__, file=sys.stderr)
    sys.exit(status)
try:
    Interpreter = importlib.import_module(sys.argv[1] + ".interpreter").Interpreter
except Exception as exc:
    fail(3, exc)
try:
    interpreter = Interpreter(model_path=sys.argv[2], num_threads=1)
    interpreter.allocate_tensors()
    interpreter.invoke()
except Exception as exc:
    fail(4, exc)
"""
# Far above the probe's cost (0.4 s on x86_64, seconds under emulation), for a hung child only.
PROBE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ProbeFailure:
    """Why one runtime cannot run the model; ``model_refused`` when the model is the likely cause."""

    reason: str
    model_refused: bool = False


@functools.lru_cache(maxsize=None)
def probe_runtime(runtime: str, model_path: str) -> ProbeFailure | None:
    """None if a child Python imports ``runtime``, creates its interpreter on ``model_path`` and runs
    it once; else why not. In a child because a crash there (SIGSEGV in Interpreter() under qemu
    with the host's /proc/cpuinfo) cannot be caught in this process; once per runtime, model and
    process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    try:
        child = subprocess.run([sys.executable, "-c", _PROBE, runtime, model_path], env=env,
                               capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return ProbeFailure(f"creating its interpreter took over {PROBE_TIMEOUT_S:.0f} s")
    if child.returncode == 0:
        return None
    if child.returncode < 0:
        return ProbeFailure(f"creating its interpreter crashed ({signal.Signals(-child.returncode).name})")
    said = [line[len("probe: "):].strip() for line in child.stderr.splitlines() if line.startswith("probe: ")]
    last = said[-1] if said else f"exit status {child.returncode}"
    if child.returncode == 3:
        return ProbeFailure(f"import failed ({last})")
    return ProbeFailure(last, model_refused=child.returncode == 4)


def is_tflite_file(path: Path) -> bool:
    """Whether ``path`` carries the TFLite flatbuffer identifier "TFL3" (bytes 4-8); False if unreadable."""
    try:
        with open(path, "rb") as file:
            return file.read(8)[4:8] == b"TFL3"
    except OSError:
        return False


def usable_runtime(model_path: Path, runtimes: tuple[str, ...] = RUNTIMES) -> str:
    """The first of ``runtimes`` that is installed and runs ``model_path`` in a child process;
    the log says which runtimes were passed over and why."""
    failures: dict[str, ProbeFailure] = {}
    missing = []
    for name in runtimes:
        if importlib.util.find_spec(name) is None:
            missing.append(name)
            continue
        failure = probe_runtime(name, str(model_path))
        if failure is None:
            for failed, why in failures.items():
                log.warning("TFLite runtime %s is not used: %s; using %s", failed, why.reason, name)
            log.debug("TFLite runtime: %s", name)
            return name
        failures[name] = failure
    if not failures:
        raise VadRuntimeError(
            "no TFLite runtime installed: install ai-edge-litert or tflite-runtime (pip install tflite-runtime)")
    refused = [f.reason for f in failures.values() if f.model_refused]
    # Blame the model only when it is not a TFLite file or when every runtime got as far as
    # reading it and refused it: tflite-runtime with numpy 2, say, refuses any model.
    if refused and (not is_tflite_file(model_path) or len(refused) == len(failures)):
        raise VadModelError(f"{model_path}: not a valid TFLite model ({refused[0]})")
    raise VadRuntimeError("no usable TFLite runtime: " + "; ".join(
        [f"{name}: {f.reason}" for name, f in failures.items()] + [f"{name}: not installed" for name in missing]))


def check_window(window: np.ndarray, model_path: Path) -> None:
    """Refuse anything but one 512-sample window, naming the model it was meant for."""
    if window.shape != (SileroVad.WINDOW,):
        raise VadInputError(f"{model_path.name}: expected one window of {SileroVad.WINDOW} samples, got shape {window.shape}")


def check_windows(samples: np.ndarray, model_path: Path) -> None:
    """Refuse anything but one or more whole 512-sample windows, naming the model."""
    if samples.ndim != 1 or not len(samples) or len(samples) % SileroVad.WINDOW:
        raise VadInputError(f"{model_path.name}: expected whole windows of {SileroVad.WINDOW} samples, "
                            f"got shape {samples.shape}")


class WindowByWindow:
    """A detector that scores one window at a time: ``detector(window)`` is its speech
    probability, with the state carried on to the next; ``probabilities`` does it for whole
    windows in turn, as the pipeline calls it."""

    WINDOW = 512
    SAMPLE_RATE = 16000

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """The speech probability of each window of ``samples`` (whole windows), in turn."""
        return np.array([self(window) for window in samples.reshape(-1, self.WINDOW)], dtype=np.float32)


class SileroVad(WindowByWindow):
    """Speech probability of consecutive 512-sample windows of one 16 kHz stream."""

    def __init__(self, model_path: str | Path, runtime: str | None = None):
        """``runtime``: an import name from RUNTIMES, used as is; None takes the first that works."""
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise VadModelError(f"{self.model_path}: VAD model file not found (expected a Silero VAD .tflite file)")
        self.runtime = runtime or usable_runtime(self.model_path)
        interpreter = interpreter_class(self.runtime)
        try:
            with quiet_stderr():
                self._interpreter = interpreter(model_path=str(self.model_path), num_threads=1)
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise VadModelError(f"{self.model_path}: not a valid TFLite model ({reason})") from None
        self._inputs = self._tensor_indices(self._interpreter.get_input_details(), MODEL_INPUTS)
        self._outputs = self._tensor_indices(self._interpreter.get_output_details(), MODEL_OUTPUTS)
        # Context followed by the new window: the model's whole audio input, reused every call.
        self._audio = np.zeros(MODEL_INPUTS["audio"], dtype=np.float32)
        self._window = self._audio[0, CONTEXT:]
        self.reset()

    def _tensor_indices(self, details: list[dict], expected: dict[str, tuple]) -> dict[str, int]:
        found = {d["name"]: (tuple(d["shape"]), np.dtype(d["dtype"]), d["index"]) for d in details}
        if {name: spec[:2] for name, spec in found.items()} != {
            name: (shape, np.dtype(np.float32)) for name, shape in expected.items()
        }:
            wanted = ", ".join(f"{name}{list(shape)}" for name, shape in expected.items())
            have = ", ".join(f"{name}{list(spec[0])}" for name, spec in found.items())
            raise VadModelError(
                f"{self.model_path}: not a Silero VAD model (expected float32 tensors {wanted}, found {have})"
            )
        return {name: spec[2] for name, spec in found.items()}

    def reset(self) -> None:
        """Forget the stream: the next window is scored as the start of a new one."""
        self._audio.fill(0.0)
        self._h = np.zeros(MODEL_INPUTS["h"], dtype=np.float32)
        self._c = np.zeros(MODEL_INPUTS["c"], dtype=np.float32)

    def __call__(self, window: np.ndarray) -> float:
        """Speech probability of the next window: 512 int16 samples, or float32 in [-1, 1]."""
        check_window(window, self.model_path)
        if window.dtype == np.int16:
            np.multiply(window, INT16_SCALE, out=self._window, casting="unsafe")
        elif np.issubdtype(window.dtype, np.floating):
            self._window[:] = window
        else:
            raise VadInputError(f"{self.model_path.name}: expected int16 or float32 samples, got {window.dtype}")
        interpreter = self._interpreter
        interpreter.set_tensor(self._inputs["audio"], self._audio)
        interpreter.set_tensor(self._inputs["h"], self._h)
        interpreter.set_tensor(self._inputs["c"], self._c)
        interpreter.invoke()
        self._h = interpreter.get_tensor(self._outputs["h"])
        self._c = interpreter.get_tensor(self._outputs["c"])
        self._audio[0, :CONTEXT] = self._audio[0, -CONTEXT:]
        return float(interpreter.get_tensor(self._outputs["prob"])[0])

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        check_windows(samples, self.model_path)
        return super().probabilities(samples)

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.model_path.read_bytes()).hexdigest()


def window_probabilities(vad: SileroVad, samples: np.ndarray) -> np.ndarray:
    """One probability per full window of ``samples`` from a fresh state; a trailing partial
    window is dropped."""
    vad.reset()
    whole = len(samples) // vad.WINDOW * vad.WINDOW
    return vad.probabilities(samples[:whole]) if whole else np.zeros(0, dtype=np.float32)
