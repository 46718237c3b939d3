"""The benchmark's metrics (with hand-computed expectations), its stream mixing, and a quick
run of the whole bench."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.detectors import webrtc_window_scores
from bench.labels import read_speech_intervals, window_truth
from bench.metrics import average_precision, precision_recall_f1, recording_scores, speech_loss
from bench.recorders import baseline_segments
from bench.streams import mix_at_snr, speech_mask
from edge.config import SegmenterSettings, Settings
from edge.errors import EdgeError

REPO = Path(__file__).resolve().parent.parent


def test_scv_labels_keep_only_speech_intervals(tmp_path):
    labels = tmp_path / "a.scv"
    labels.write_text("testset-audio-01,0.000,0.403,0,0.403,1.204,1,1.204,1.440,0,1.440,2.470,1\n")
    assert read_speech_intervals(labels) == [(0.403, 1.204), (1.440, 2.470)]


@pytest.mark.parametrize("header", ["start_s,end_s,label\n", ""])
def test_csv_labels_with_or_without_header(tmp_path, header):
    labels = tmp_path / "a.csv"
    labels.write_text(header + "0.0,0.55,0\n0.55,1.69,1\n1.69,2.0,0\n")
    assert read_speech_intervals(labels) == [(0.55, 1.69)]


def test_window_is_speech_when_its_centre_is_in_an_interval():
    # Window centres: 0.016, 0.048, 0.080, 0.112, 0.144 s.
    truth = window_truth([(0.05, 0.10), (0.14, 0.5)], 5)
    assert truth.tolist() == [False, False, True, False, True]


def test_precision_recall_f1():
    predicted = np.array([True, True, True, False])
    truth = np.array([True, False, False, True])
    precision, recall, f1 = precision_recall_f1(predicted, truth)
    assert (precision, recall) == pytest.approx((1 / 3, 1 / 2))
    assert f1 == pytest.approx(0.4)


def test_average_precision_by_hand():
    # Thresholds 0.9, 0.8, 0.7, 0.6 give (P, R) = (0, 0), (1/2, 1/2), (2/3, 1), (1/2, 1):
    # AP = 1/2 * 1/2 + 1/2 * 2/3.
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert average_precision(scores, np.array([False, True, True, False])) == pytest.approx(0.25 + 1 / 3)


def test_average_precision_decides_tied_scores_together():
    # At 0.5 both tied windows become speech at once: (P, R) = (1/3, 1/2), then (1/2, 1) at 0.1.
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    assert average_precision(scores, np.array([False, True, False, True])) == pytest.approx(1 / 6 + 1 / 4)


def test_recording_scores_on_hand_made_intervals():
    speech = [(1.0, 2.0), (4.0, 5.0)]
    stored = [(0.95, 1.5), (4.05, 5.2), (4.1, 4.2)]  # the last lies inside the second: no double count
    scores = recording_scores(speech, [1.0, 4.0], stored, duration_s=60.0)
    assert scores.speech_capture == pytest.approx((0.5 + 0.95) / 2)
    assert scores.clipped_onsets == 1  # 4.0-4.05 is missing; 1.0-1.1 is all stored
    assert scores.stored_non_speech == pytest.approx((0.05 + 0.2) / (0.55 + 1.15))
    assert scores.segments_per_minute == pytest.approx(3.0)


@pytest.mark.parametrize("snr_db", [20.0, 10.0, 5.0, 0.0])
@pytest.mark.parametrize("speech_amplitude", [3000, 30000])  # the loud one needs headroom at low SNR
def test_mix_hits_the_snr_over_labelled_speech(snr_db, speech_amplitude):
    rate = 16000
    time = np.arange(3 * rate) / rate
    speech = np.where((time >= 1.0) & (time < 2.0), speech_amplitude * np.sin(2 * np.pi * 440 * time), 0.0)
    noise = np.random.default_rng(0).normal(0, 2000, int(0.7 * rate))
    mask = speech_mask([(1.0, 2.0)], len(speech))
    mix = mix_at_snr(speech.astype(np.int16), noise.astype(np.int16), mask, snr_db)
    speech_part = speech.astype(np.int16) * mix.speech_gain
    noise_part = mix.samples - speech_part
    measured = 10 * np.log10(np.mean(speech_part[mask] ** 2) / np.mean(noise_part[mask] ** 2))
    assert measured == pytest.approx(snr_db, abs=0.1)
    # The noise loops on through the pauses.
    period = len(noise)
    assert np.std(noise_part[:rate]) > 0
    np.testing.assert_allclose(noise_part[:period], noise_part[2 * period : 3 * period], atol=1.0)


def test_webrtc_frames_map_to_windows_by_covered_samples():
    # Frames of 480 samples flagged 1, 0, 1, 1. Window 0 (0-511): 480 flagged samples; window 1
    # (512-1023): 960-1023 flagged; window 2 (1024-1535): all flagged; window 3 (1536-2047):
    # 1536-1919 flagged, then past the last frame; window 4: no frame left.
    scores = webrtc_window_scores(np.array([True, False, True, True]), 5)
    np.testing.assert_allclose(scores, [480 / 512, 64 / 512, 1.0, 384 / 512, 0.0])


def test_baseline_follows_silero_vad_iterator():
    # Speech from window 1: start = 1024 - 480 (30 ms pad) - 512 = 32 samples. Below 0.35 from
    # window 3 (temp_end = 2048); at window 7, 4096 - 2048 >= 1600 (100 ms), so the end is
    # 2048 + 480 - 512 = 2016 samples. Window 9 starts again and is still open at the end.
    probabilities = [0.1, 0.6, 0.6, 0.2, 0.4, 0.2, 0.2, 0.1, 0.1, 0.9]
    assert baseline_segments(np.array(probabilities)) == [(32 / 16000, 2016 / 16000), (4128 / 16000, 10 * 512 / 16000)]


def test_plot_without_matplotlib_says_so(monkeypatch, tmp_path):
    from edge import plot

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    decided = plot.decisions(Settings(), np.zeros(1024, np.int16), np.zeros(2))
    with pytest.raises(EdgeError, match="matplotlib"):
        plot.draw(tmp_path / "x.png", np.zeros(1024, np.int16), plot.Heard(np.zeros(2), None, None), decided, [], "x")


def test_plot_shows_what_the_suppressor_did_and_what_the_model_alone_would_say():
    from edge import plot
    from edge.detector import make_detector
    from edge.vad import DEFAULT_MODEL, SileroVad, window_probabilities
    from edge.wavio import read_wav_16k

    samples = read_wav_16k(REPO / "tests" / "data" / "lesson_15s.wav")
    detected = plot.heard(make_detector(Settings()), samples)
    np.testing.assert_array_equal(detected.probabilities, window_probabilities(make_detector(Settings()), samples))
    np.testing.assert_array_equal(detected.unsuppressed, window_probabilities(SileroVad(DEFAULT_MODEL), samples))
    # Passed through while the room is learnt, then the room tone is turned down by up to 15 dB.
    assert detected.suppression_db[:10].max() == 0.0
    assert 0.0 <= detected.suppression_db.min() and 12.0 < detected.suppression_db.max() <= 15.0
    plain = plot.heard(SileroVad(DEFAULT_MODEL), samples)
    assert plain.suppression_db is None and plain.unsuppressed is None


def test_plot_shows_what_the_segmenter_decided():
    from edge import plot

    # 2 s of quiet, 1 s of loud "speech" (probability 0.9), 2 s of quiet; windows of 32 ms.
    quiet, loud = [(30, 0.0)] * 62, [(3000, 0.9)] * 31
    windows = quiet + loud + quiet
    samples = np.concatenate([np.full(512, a, np.int16) * np.where(np.arange(512) % 2, 1, -1).astype(np.int16)
                              for a, _ in windows])
    settings = Settings(segmenter=SegmenterSettings(background_s=0.5))
    decided = plot.decisions(settings, samples, np.array([p for _, p in windows]))
    # The start threshold fell from 0.5 towards 0.2 in the quiet before speech.
    assert decided.start_threshold[0] == 0.5 and decided.start_threshold[61] < 0.4
    assert decided.end_threshold[61] == pytest.approx(decided.start_threshold[61] * 0.7)
    assert decided.noise_floor_db[61] == pytest.approx(decided.level_db[0])
    assert decided.speech == [(pytest.approx(62 * 0.032), pytest.approx(93 * 0.032))]


def test_plot_command_writes_a_png(tmp_path):
    from edge import plot

    parser = argparse.ArgumentParser()
    plot.add_command(parser.add_subparsers())
    out = tmp_path / "plot.png"
    args = parser.parse_args(["plot", str(REPO / "tests" / "data" / "silero_test_6s.wav"), "--out", str(out)])
    assert args.func(args) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def quick_bench_report(data: Path, out: Path, env: dict | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--data", str(data / "speechocean762-adult"), "--out", str(out)],
        # A guard against a hang, not a speed goal (those are in `make bench`): a machine ten
        # times slower than a 2-core VM still finishes.
        cwd=REPO, capture_output=True, text=True, timeout=900, env=env,
    )
    assert result.returncode == 0, result.stderr
    reports = list(out.glob("*-quick.md"))
    assert len(reports) == 1
    return reports[0].read_text()


def test_quick_bench_reports_every_table(tmp_path, shared_data):
    text = quick_bench_report(shared_data, tmp_path)
    assert "| silero_vad_int8.tflite (" in text
    if importlib.util.find_spec("onnxruntime"):
        assert "| Silero ONNX (onnxruntime, reference) |" in text
        assert "| 10 | baseline: Silero ONNX + VADIterator |" in text
    assert "| 10 | edge process (fp16 TFLite, noise suppression, segmenter) |" in text
    for kind in ("adult", "child-like"):
        assert f"### {kind}" in text
    for noise in ("babble", "transients", "music", "stationary", "all"):
        assert f"| {noise} | 10 |" in text
    assert "child-like, all noise types: speech capture at 10 dB" in text
    assert "### The default recorder beside one change each" in text and "| no noise suppression: capture |" in text
    assert "| silero_vad_fp16.tflite + noise suppression (" in text
    assert "µs per 32 ms window" in text
    assert "edge process real-time factor" in text
    assert "## Encryption at rest (age)" in text and "\n| on | " in text and "\n| off | " in text


def test_quick_bench_without_comparison_packages_skips_them_with_notes(tmp_path, shared_data):
    # As on a Pi where these cannot be installed: each import fails.
    stubs = tmp_path / "stubs"
    for module in ("onnxruntime", "webrtcvad", "matplotlib"):
        (stubs / module).mkdir(parents=True)
        (stubs / module / "__init__.py").write_text(f"raise ImportError('{module} blocked by the test')\n")
    text = quick_bench_report(shared_data, tmp_path / "out", env={**os.environ, "PYTHONPATH": str(stubs)})
    assert "| silero_vad_int8.tflite (" in text
    assert "Silero ONNX (onnxruntime, reference) |" not in text
    assert "| WebRTC VAD mode" not in text
    assert "onnxruntime is not installed" in text
    assert "webrtcvad is not installed" in text
    assert "matplotlib is not installed" in text
    assert not list((tmp_path / "out").glob("*.png"))


def test_speech_loss_says_where_speech_was_lost():
    # Utterance 1 (1-2 s) has its first 0.2 s and last 0.1 s cut; utterance 2 (4-5 s) has a hole
    # of 0.3 s; utterance 3 (7-7.5 s) is never stored. Labelled speech: 2.5 s.
    utterances = [[(1.0, 2.0)], [(4.0, 5.0)], [(7.0, 7.5)]]
    stored = [(1.2, 1.9), (3.9, 4.3), (4.6, 5.1)]
    loss = speech_loss(utterances, stored)
    assert (loss.heads, loss.tails, loss.inside, loss.missed) == pytest.approx((0.2 / 2.5, 0.1 / 2.5, 0.3 / 2.5, 0.5 / 2.5))


@pytest.mark.skipif(os.geteuid() != 0, reason="the wear bench needs root for a loop device")
def test_quick_wear_bench_runs_and_keeps_the_status_off_the_card():
    result = subprocess.run(
        [sys.executable, "-m", "bench.wear", "--cases", "silence"], cwd=REPO, capture_output=True, text=True,
        timeout=300, env={**os.environ, "EDGE_WEAR_QUICK": "1"})  # a guard against a hang
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines if line.startswith(("stopped ", "silence "))] == ["stopped", "silence"]
    # What changed on the card while the recorder listened to silence: not its status.
    silence = next(line for line in lines if line.startswith("wear: silence:"))
    assert "changed on the card:" in silence and "status.json" not in silence
