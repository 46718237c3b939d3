"""Every detector the bench compares, each turning 16 kHz int16 audio into one score per
32 ms window: the shipped TFLite models under each installed runtime, the default model behind
the noise suppressor (what the recorder runs), Silero's reference ONNX model under onnxruntime,
and WebRTC VAD."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edge import vad as edge_vad
from edge.config import Settings
from edge.detector import make_detector
from edge.errors import EdgeError

from .labels import SAMPLE_RATE, WINDOW

MODELS_DIR = edge_vad.DEFAULT_MODEL.parent
WEBRTC_FRAME = 480  # 30 ms, the longest frame WebRTC VAD takes
WEBRTC_MODES = (1, 3)
SILERO_ONNX = "Silero ONNX (onnxruntime, reference)"


@dataclass(frozen=True)
class Detector:
    name: str
    window_scores: Callable[[np.ndarray], np.ndarray]
    streaming: object | None = None
    """The per-window callable (reset(), __call__(window) -> prob) timed by the speed test;
    None for detectors that are not timed."""


def importable(module: str) -> bool:
    """True when ``module`` imports: a package that is present but broken counts as missing."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def silero_onnx_path() -> Path | None:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "data" / "silero_vad.onnx"
    return path if path.is_file() else None


class OnnxSilero(edge_vad.WindowByWindow):
    """Silero VAD's ONNX model under onnxruntime, fed exactly as silero_vad.utils_vad.OnnxWrapper
    feeds it (64 samples of the previous window in front of each 512, one thread), without
    importing silero_vad, which would import torch."""

    WINDOW = WINDOW
    CONTEXT = 64

    def __init__(self, model_path: Path):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(model_path), providers=["CPUExecutionProvider"], sess_options=options
        )
        self._sample_rate = np.array(SAMPLE_RATE, dtype=np.int64)
        self._audio = np.zeros((1, self.CONTEXT + WINDOW), dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        self._audio.fill(0.0)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)

    def __call__(self, window: np.ndarray) -> float:
        self._audio[0, self.CONTEXT :] = window / np.float32(32768) if window.dtype == np.int16 else window
        prob, self._state = self._session.run(
            None, {"input": self._audio, "state": self._state, "sr": self._sample_rate}
        )
        self._audio[0, : self.CONTEXT] = self._audio[0, -self.CONTEXT :]
        return float(prob[0, 0])


def webrtc_window_scores(frame_flags: np.ndarray, window_count: int) -> np.ndarray:
    """Map WebRTC's decisions on consecutive 30 ms frames to 32 ms windows: a window's score is
    the fraction of its samples that lie in speech-flagged frames (samples after the last whole
    frame count as not flagged)."""
    flagged = np.zeros(window_count * WINDOW, dtype=np.float32)
    covered = np.repeat(np.asarray(frame_flags, dtype=np.float32), WEBRTC_FRAME)[: len(flagged)]
    flagged[: len(covered)] = covered
    return flagged.reshape(window_count, WINDOW).mean(axis=1)


def webrtc_detector(mode: int) -> Detector:
    import webrtcvad

    vad = webrtcvad.Vad(mode)

    def window_scores(samples: np.ndarray) -> np.ndarray:
        frame_count = len(samples) // WEBRTC_FRAME
        raw = np.ascontiguousarray(samples[: frame_count * WEBRTC_FRAME], dtype="<i2").tobytes()
        step = 2 * WEBRTC_FRAME
        flags = [vad.is_speech(raw[i * step : (i + 1) * step], SAMPLE_RATE) for i in range(frame_count)]
        return webrtc_window_scores(np.array(flags, dtype=bool), len(samples) // WINDOW)

    return Detector(f"WebRTC VAD mode {mode}", window_scores)


def streaming_detector(name: str, vad) -> Detector:
    return Detector(name, lambda samples: edge_vad.window_probabilities(vad, samples), vad)


def installed_runtimes() -> list[str]:
    runtimes = []
    for runtime in edge_vad.RUNTIMES:
        try:
            edge_vad.interpreter_class(runtime)
        except EdgeError:
            continue
        runtimes.append(runtime)
    return runtimes


def tflite_models() -> list[Path]:
    default = edge_vad.DEFAULT_MODEL
    return sorted(MODELS_DIR.glob("*.tflite"), key=lambda path: (path != default, path.name))


def available_detectors(notes: list[str]) -> list[Detector]:
    """All detectors that can run here; each one that cannot is explained in ``notes``."""
    detectors = []
    runtimes = installed_runtimes()
    if not runtimes:
        notes.append("No TFLite runtime is installed: the shipped models were not measured.")
    for model in tflite_models():
        for runtime in runtimes:
            label = f"{model.name} ({runtime})" + (" [default]" if model == edge_vad.DEFAULT_MODEL else "")
            detectors.append(streaming_detector(label, edge_vad.SileroVad(model, runtime)))
    if runtimes:
        detectors.append(streaming_detector(
            f"{edge_vad.DEFAULT_MODEL.name} + noise suppression ({runtimes[0]}) [recorder]",
            make_detector(Settings(), runtimes[0])))
    onnx_path = silero_onnx_path()
    if onnx_path is None:
        notes.append("silero-vad is not installed: no Silero ONNX reference (pip install --no-deps silero-vad).")
    elif not importable("onnxruntime"):
        notes.append("onnxruntime is not installed: no Silero ONNX reference.")
    else:
        detectors.append(streaming_detector(SILERO_ONNX, OnnxSilero(onnx_path)))
    if not importable("webrtcvad"):
        notes.append("webrtcvad is not installed: no WebRTC VAD rows (pip install webrtcvad-wheels).")
    else:
        detectors.extend(webrtc_detector(mode) for mode in WEBRTC_MODES)
    return detectors


