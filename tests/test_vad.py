"""The TFLite port of Silero VAD against Silero's own ONNX model, and the streaming wrapper."""

from __future__ import annotations

import argparse
import importlib.util
import re
import wave
from pathlib import Path

import numpy as np
import pytest

from bench.detectors import OnnxSilero, silero_onnx_path
from edge.errors import EdgeError
from edge.config import Settings
from edge.detector import add_command, make_detector
from edge.vad import DEFAULT_MODEL, RUNTIMES, SileroVad, window_probabilities
from edge.wavio import read_wav_16k, write_wav_16k

MODELS_DIR = DEFAULT_MODEL.parent
INT8_MODEL = MODELS_DIR / "silero_vad_int8.tflite"
FP16_MODEL = MODELS_DIR / "silero_vad_fp16.tflite"
SPEECH_WAV = Path(__file__).parent / "data" / "silero_test_6s.wav"
WINDOW = SileroVad.WINDOW


def onnx_reference_probabilities(samples: np.ndarray) -> np.ndarray:
    """Silero's own ONNX model, fed as its OnnxWrapper feeds it (bench/detectors.py)."""
    path = silero_onnx_path()
    assert path is not None, "silero-vad must be installed (pip install --no-deps silero-vad==6.2.3)"
    return window_probabilities(OnnxSilero(path), samples)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return read_wav_16k(SPEECH_WAV)


@pytest.fixture(scope="module")
def reference(speech) -> np.ndarray:
    return onnx_reference_probabilities(speech)


def test_speech_clip_has_speech_and_silence(reference):
    # Parity on a clip that is all speech or all silence would not exercise the 0.5 decision.
    assert 0.2 < np.mean(reference > 0.5) < 0.8


def test_fp16_model_matches_onnx_reference(speech, reference):
    probs = window_probabilities(SileroVad(FP16_MODEL), speech)
    assert len(probs) == len(reference)
    assert np.max(np.abs(probs - reference)) <= 0.02


def test_int8_model_matches_onnx_reference(speech, reference):
    probs = window_probabilities(SileroVad(INT8_MODEL), speech)
    assert len(probs) == len(reference)
    assert np.mean((probs > 0.5) == (reference > 0.5)) >= 0.98
    assert np.mean(np.abs(probs - reference)) <= 0.02


def test_int16_and_float32_windows_give_the_same_probability(speech):
    vad = SileroVad(INT8_MODEL)
    window = speech[40 * WINDOW : 41 * WINDOW]
    from_int16 = vad(window)
    vad.reset()
    assert vad(window.astype(np.float32) / 32768) == from_int16


def test_carried_lstm_state_changes_the_output(speech):
    """Same window, same 64-sample context, different history: only the LSTM state differs."""
    vad = SileroVad(INT8_MODEL)
    probe = speech[60 * WINDOW : 61 * WINDOW]
    last_before_probe = speech[59 * WINDOW : 60 * WINDOW]

    window_probabilities(vad, speech[: 59 * WINDOW])
    vad(last_before_probe)
    after_speech = vad(probe)

    window_probabilities(vad, np.zeros(59 * WINDOW, np.int16))
    vad(last_before_probe)
    after_silence = vad(probe)

    assert abs(after_speech - after_silence) > 1e-3


def test_reset_restores_the_fresh_start_output(speech):
    vad = SileroVad(INT8_MODEL)
    probe = speech[60 * WINDOW : 61 * WINDOW]
    fresh = vad(probe)
    window_probabilities(vad, speech[: 30 * WINDOW])
    carried = vad(probe)
    vad.reset()
    assert carried != fresh
    assert vad(probe) == fresh


def test_window_probabilities_drops_a_trailing_partial_window(speech):
    vad = SileroVad(INT8_MODEL)
    full = window_probabilities(vad, speech[: 10 * WINDOW])
    with_tail = window_probabilities(vad, speech[: 10 * WINDOW + 300])
    np.testing.assert_array_equal(full, with_tail)


def installed(runtime: str) -> bool:
    return importlib.util.find_spec(runtime) is not None


def needs(runtime: str):
    # tflite-runtime has no wheels for Python 3.12+ (trixie): those tests cannot run there.
    return pytest.mark.skipif(not installed(runtime), reason=f"TFLite runtime {runtime} is not installed")


@pytest.mark.parametrize("model", [INT8_MODEL, FP16_MODEL], ids=["int8", "fp16"])
@pytest.mark.skipif(not all(map(installed, RUNTIMES)), reason="needs both ai-edge-litert and tflite-runtime")
def test_both_runtimes_give_the_same_decisions(model, speech):
    litert, tflite = (window_probabilities(SileroVad(model, runtime=r), speech) for r in RUNTIMES)
    np.testing.assert_array_equal(litert > 0.5, tflite > 0.5)
    # The runtimes use different hybrid int8 kernels, so probabilities differ a little.
    assert np.max(np.abs(litert - tflite)) <= 0.02


def test_sha256_is_the_model_file_digest():
    import hashlib

    assert SileroVad(INT8_MODEL).sha256 == hashlib.sha256(INT8_MODEL.read_bytes()).hexdigest()


def test_missing_model_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.tflite"
    with pytest.raises(EdgeError, match=r"nowhere\.tflite: VAD model file not found"):
        SileroVad(missing)


@pytest.mark.parametrize("runtime", [pytest.param(r, marks=needs(r)) for r in RUNTIMES])
def test_corrupt_model_file_is_refused(tmp_path, runtime):
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"this is not a flatbuffer" * 100)
    with pytest.raises(EdgeError, match=r"corrupt\.tflite: not a valid TFLite model") as caught:
        SileroVad(corrupt, runtime=runtime)
    assert "\n" not in str(caught.value)


def test_tflite_model_with_other_tensors_is_refused(tmp_path):
    # Renaming the input keeps the flatbuffer valid (same string length) but breaks the contract.
    renamed = INT8_MODEL.read_bytes().replace(b"\x05\x00\x00\x00audio\x00", b"\x05\x00\x00\x00noise\x00")
    other = tmp_path / "other.tflite"
    other.write_bytes(renamed)
    with pytest.raises(EdgeError, match=r"other\.tflite: not a Silero VAD model \(expected float32 tensors audio\[1, 576\]"):
        SileroVad(other)


@pytest.mark.parametrize("length", [0, 511, 513, 1024])
def test_wrong_window_length_is_refused(length):
    vad = SileroVad(INT8_MODEL)
    with pytest.raises(EdgeError, match=rf"silero_vad_int8\.tflite: expected one window of 512 samples, got shape \({length},\)"):
        vad(np.zeros(length, np.int16))


def run_edge_vad(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edge")
    add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_edge_vad_prints_window_start_and_probability_csv(capsys, speech):
    assert run_edge_vad(["vad", str(SPEECH_WAV)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "start_s,prob"
    rows = lines[1:]
    assert len(rows) == len(speech) // WINDOW
    assert all(re.fullmatch(r"\d+\.\d{3},[01]\.\d{4}", row) for row in rows)
    assert [row.split(",")[0] for row in rows[:3]] == ["0.000", "0.032", "0.064"]
    # What the recorder's detector decides: the model behind the noise suppressor.
    expected = window_probabilities(make_detector(Settings()), speech)
    np.testing.assert_allclose([float(row.split(",")[1]) for row in rows], expected, atol=5e-5)


def test_edge_vad_without_suppression_prints_the_model_s_own_probabilities(tmp_path, capsys, speech):
    config = tmp_path / "edge.yaml"
    config.write_text("denoise:\n  enabled: false\n")
    assert run_edge_vad(["vad", str(SPEECH_WAV), "--config", str(config)]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    expected = window_probabilities(SileroVad(DEFAULT_MODEL), speech)
    np.testing.assert_allclose([float(row.split(",")[1]) for row in rows], expected, atol=5e-5)


def test_edge_vad_takes_another_model(capsys):
    assert run_edge_vad(["vad", str(SPEECH_WAV), "--model", str(FP16_MODEL)]) == 0
    assert capsys.readouterr().out.startswith("start_s,prob\n0.000,")


def test_edge_vad_converts_another_sample_rate(tmp_path, capsys, speech):
    # read_wav_16k resamples 16-bit WAVs of any rate; the windows are timed at 16 kHz.
    wav_48k = tmp_path / "48k.wav"
    with wave.open(str(wav_48k), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(48000)
        wav.writeframes(np.repeat(speech, 3).astype("<i2").tobytes())
    assert run_edge_vad(["vad", str(wav_48k)]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert len(rows) == len(speech) // WINDOW


def test_edge_vad_refuses_an_unsupported_wav(tmp_path):
    wav_8bit = tmp_path / "8bit.wav"
    with wave.open(str(wav_8bit), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(1)
        wav.setframerate(8000)
        wav.writeframes(bytes(8000))
    with pytest.raises(EdgeError, match=r"8bit\.wav: 8-bit samples are not supported, expected 16-bit PCM"):
        run_edge_vad(["vad", str(wav_8bit)])


def test_edge_vad_names_a_missing_model(tmp_path):
    wav = tmp_path / "silence.wav"
    write_wav_16k(wav, np.zeros(16000, np.int16))
    with pytest.raises(EdgeError, match=r"missing\.tflite: VAD model file not found"):
        run_edge_vad(["vad", str(wav), "--model", str(tmp_path / "missing.tflite")])
