"""`edge plot IN.wav --out F.png`: what the detector heard in a file and what the recorder
would store of it: the waveform, the level of every 32 ms window with the tracked noise floor,
the speech probability with the (adaptive) start and end thresholds, where the detector's
speech began and ended inside each stored segment (the rest is the pre- and post-roll kept),
and the stored segments; with noise suppression on, how much the suppressor turned the voice band
down in each window and the probability the model gives without it.

matplotlib is optional (it is not needed on the device), so it is imported only here.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import WavFileSource
from .config import Settings, add_config_argument, load_config, neg_threshold
from .denoise import SuppressedDetector
from .detector import make_detector
from .errors import EdgeError
from .onset import level_db
from .recorder import Recorder, make_writer
from .segmenter import SegmentClosed, SegmentOpened, SpeechSegmenter
from .storage import read_manifest
from .vad import SileroVad, window_probabilities
from .wavio import read_wav_16k


def stored_segments(settings: Settings, detector, wav: Path) -> list[tuple[float, float]]:
    """(start_s, end_s) of the segments `edge process` stores for ``wav``, found by running
    that same pipeline into a throw-away folder."""
    with tempfile.TemporaryDirectory(prefix="edge-plot-") as out:
        Recorder(settings, detector, make_writer(settings, Path(out), detector)).process_file(WavFileSource(wav))
        return [(entry["start_s"], entry["end_s"]) for entry in read_manifest(Path(out) / "manifest.jsonl")]


@dataclass
class Heard:
    """What the detector made of a file, window by window."""

    probabilities: np.ndarray
    suppression_db: np.ndarray | None
    """How far the noise suppressor turned the voice band down (None: suppression off)."""
    unsuppressed: np.ndarray | None
    """The model's probabilities on the audio as recorded (None: suppression off)."""


def heard(detector, samples: np.ndarray) -> Heard:
    if not isinstance(detector, SuppressedDetector):
        return Heard(window_probabilities(detector, samples), None, None)
    detector.reset()
    count = len(samples) // detector.WINDOW
    probabilities, suppression = np.empty(count), np.empty(count)
    for index in range(count):
        probabilities[index] = detector(samples[index * detector.WINDOW : (index + 1) * detector.WINDOW])
        suppression[index] = -detector.suppressor.gain_db
    return Heard(probabilities, suppression, window_probabilities(detector.detector, samples))


@dataclass
class Decisions:
    """What the segmenter decided, window by window, on one file."""

    start_threshold: np.ndarray
    end_threshold: np.ndarray
    level_db: np.ndarray
    noise_floor_db: np.ndarray
    speech_like_db: float
    """Level above the noise floor at which a window next to speech counts as speech."""
    speech: list[tuple[float, float]]
    """(start_s, end_s) of the speech the detector was sure of, inside each stored segment."""


def decisions(settings: Settings, samples: np.ndarray, probabilities: np.ndarray) -> Decisions:
    detector = settings.detector
    segmenter = SpeechSegmenter(settings.segmenter, detector.threshold, neg_threshold(detector))
    window, rate = SileroVad.WINDOW, SileroVad.SAMPLE_RATE
    count = len(probabilities)
    starts, floors, levels = np.empty(count), np.empty(count), np.empty(count)
    speech, began = [], None
    for index, prob in enumerate(probabilities):
        frame = samples[index * window : (index + 1) * window]
        starts[index] = segmenter.start_threshold.value
        levels[index] = level_db(frame)
        for event in segmenter.push(frame, float(prob)):
            if isinstance(event, SegmentOpened):
                began = event.speech_sample / rate
            elif isinstance(event, SegmentClosed):
                speech.append((began, event.speech_end_sample / rate))
                began = event.speech_end_sample / rate  # a split: the speech goes on
        floors[index] = segmenter.noise_floor.level_db
    for event in segmenter.flush():
        if isinstance(event, SegmentClosed):
            speech.append((began, event.speech_end_sample / rate))
    return Decisions(starts, starts * segmenter.end_ratio, levels, floors,
                     settings.segmenter.speech_like_rise_db, speech)


def draw(path: Path, samples: np.ndarray, detected: Heard, decided: Decisions,
         segments: list[tuple[float, float]], title: str) -> None:
    try:
        import matplotlib
    except ImportError:
        raise EdgeError("edge plot needs matplotlib, which is not installed (pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rate, window = SileroVad.SAMPLE_RATE, SileroVad.WINDOW
    probabilities = detected.probabilities
    suppressed = detected.suppression_db is not None
    figure, axes_list = plt.subplots(3 + suppressed, 1, sharex=True, figsize=(12, 7 + 2 * suppressed),
                                     height_ratios=(1, 1, *((0.8,) if suppressed else ()), 1.2))
    wave_axes, level_axes, prob_axes = axes_list[0], axes_list[1], axes_list[-1]
    wave_axes.plot(np.arange(len(samples)) / rate, samples / 32768, linewidth=0.4, color="0.3")
    wave_axes.set(ylabel="amplitude", ylim=(-1, 1), title=title)
    window_starts = np.arange(len(probabilities)) * window / rate
    level_axes.step(window_starts, decided.level_db, where="post", linewidth=0.6, color="0.4", label="level")
    level_axes.step(window_starts, decided.noise_floor_db, where="post", linewidth=0.9, color="tab:blue",
                    label="noise floor")
    level_axes.step(window_starts, decided.noise_floor_db + decided.speech_like_db, where="post",
                    linewidth=0.8, color="tab:purple", linestyle=":",
                    label=f"speech-like next to speech (+{decided.speech_like_db:g} dB)")
    level_axes.set(ylabel="dB re full scale", ylim=(max(min(decided.noise_floor_db.min(initial=0), -20) - 10, -100), 5))
    level_axes.legend(loc="upper right", fontsize=7)
    if suppressed:
        axes_list[2].step(window_starts, detected.suppression_db, where="post", linewidth=0.7, color="tab:brown",
                          label="voice band turned down for the detector (noise suppression)")
        axes_list[2].set(ylabel="dB", ylim=(max(detected.suppression_db.max(initial=0), 1) * 1.1, -0.5))
        axes_list[2].legend(loc="upper right", fontsize=7)
        prob_axes.step(window_starts, detected.unsuppressed, where="post", linewidth=0.6, color="0.6",
                       label="without noise suppression")
    prob_axes.step(window_starts, probabilities, where="post", linewidth=0.8, label="speech probability")
    prob_axes.step(window_starts, decided.start_threshold, where="post", color="tab:red", linestyle="--",
                   linewidth=0.8, label="speech starts at (follows the background)")
    prob_axes.step(window_starts, decided.end_threshold, where="post", color="tab:orange", linestyle=":",
                   linewidth=0.8, label="may end below")
    prob_axes.set(xlabel="time (s)", ylabel="probability", ylim=(-0.02, 1.02), xlim=(0, len(samples) / rate))
    for number, (start, end) in enumerate(segments):
        for axes in axes_list:
            axes.axvspan(start, end, color="tab:green", alpha=0.15, linewidth=0,
                         label="stored" if axes is prob_axes and number == 0 else None)
    for number, (start, end) in enumerate(decided.speech):
        prob_axes.hlines(1.0, start, end, color="tab:green", linewidth=3,
                         label="detector sure (the rest: pre-/post-roll kept)" if number == 0 else None)
    prob_axes.legend(loc="upper right", fontsize=7)
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=110)
    except OSError as exc:
        raise EdgeError(f"{path}: cannot write the plot ({exc.strerror or exc})") from None
    finally:
        plt.close(figure)


def plot_command(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    detector = make_detector(settings)
    samples = read_wav_16k(args.wav)
    detected = heard(detector, samples)
    segments = stored_segments(settings, detector, args.wav)
    kept = sum(end - start for start, end in segments)
    title = f"{args.wav.name}: {len(segments)} segments, {kept:.1f} s of {len(samples) / SileroVad.SAMPLE_RATE:.1f} s stored"
    draw(args.out, samples, detected, decisions(settings, samples, detected.probabilities), segments, title)
    print(f"{args.out}: {title}")
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot", help="draw a WAV file's waveform, level, speech probability and stored segments (needs matplotlib)",
        description="Plot FILE.wav: waveform, per-window level and noise floor, speech probability with the "
                    "adaptive thresholds, where the detector was sure of speech, and the segments "
                    "`edge process` would store.")
    parser.add_argument("wav", type=Path, metavar="IN.wav")
    parser.add_argument("--out", type=Path, required=True, metavar="F.png", help="image to write")
    add_config_argument(parser)
    parser.set_defaults(func=plot_command)
