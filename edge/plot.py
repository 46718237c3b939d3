"""`edge plot IN.wav --out F.png`: what the detector heard in a file and what the recorder
would store of it: the waveform, the speech probability of every 32 ms window, the start and
end thresholds, and the stored segments.

matplotlib is optional (it is not needed on the device), so it is imported only here.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from .audio import WavFileSource
from .config import Settings, add_config_argument, load_config, neg_threshold
from .errors import EdgeError
from .recorder import Recorder, make_writer
from .storage import read_manifest
from .vad import SileroVad, configured_model, window_probabilities
from .wavio import read_wav_16k


def stored_segments(settings: Settings, detector: SileroVad, wav: Path) -> list[tuple[float, float]]:
    """(start_s, end_s) of the segments `edge process` stores for ``wav``, found by running
    that same pipeline into a throw-away folder."""
    with tempfile.TemporaryDirectory(prefix="edge-plot-") as out:
        Recorder(settings, detector, make_writer(settings, Path(out), detector)).process_file(WavFileSource(wav))
        return [(entry["start_s"], entry["end_s"]) for entry in read_manifest(Path(out) / "manifest.jsonl")]


def draw(path: Path, samples: np.ndarray, probabilities: np.ndarray, thresholds: tuple[float, float],
         segments: list[tuple[float, float]], title: str) -> None:
    try:
        import matplotlib
    except ImportError:
        raise EdgeError("edge plot needs matplotlib, which is not installed (pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rate, window = SileroVad.SAMPLE_RATE, SileroVad.WINDOW
    figure, (wave_axes, prob_axes) = plt.subplots(2, 1, sharex=True, figsize=(12, 5), height_ratios=(1, 1))
    wave_axes.plot(np.arange(len(samples)) / rate, samples / 32768, linewidth=0.4, color="0.3")
    wave_axes.set(ylabel="amplitude", ylim=(-1, 1), title=title)
    window_starts = np.arange(len(probabilities)) * window / rate
    prob_axes.step(window_starts, probabilities, where="post", linewidth=0.8, label="speech probability")
    start_threshold, end_threshold = thresholds
    prob_axes.axhline(start_threshold, color="tab:red", linestyle="--", linewidth=0.8,
                      label=f"speech starts at >= {start_threshold:g}")
    prob_axes.axhline(end_threshold, color="tab:orange", linestyle=":", linewidth=0.8,
                      label=f"may end below {end_threshold:g}")
    prob_axes.set(xlabel="time (s)", ylabel="probability", ylim=(-0.02, 1.02), xlim=(0, len(samples) / rate))
    for number, (start, end) in enumerate(segments):
        for axes in (wave_axes, prob_axes):
            axes.axvspan(start, end, color="tab:green", alpha=0.15, linewidth=0,
                         label="stored" if axes is prob_axes and number == 0 else None)
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
    detector = SileroVad(configured_model(settings.detector))
    samples = read_wav_16k(args.wav)
    probabilities = window_probabilities(detector, samples)
    segments = stored_segments(settings, detector, args.wav)
    thresholds = (settings.detector.threshold, neg_threshold(settings.detector))
    kept = sum(end - start for start, end in segments)
    title = f"{args.wav.name}: {len(segments)} segments, {kept:.1f} s of {len(samples) / SileroVad.SAMPLE_RATE:.1f} s stored"
    draw(args.out, samples, probabilities, thresholds, segments, title)
    print(f"{args.out}: {title}")
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot", help="draw a WAV file's waveform, speech probability and stored segments (needs matplotlib)",
        description="Plot FILE.wav: waveform, per-window speech probability, thresholds, and the segments "
                    "`edge process` would store.")
    parser.add_argument("wav", type=Path, metavar="IN.wav")
    parser.add_argument("--out", type=Path, required=True, metavar="F.png", help="image to write")
    add_config_argument(parser)
    parser.set_defaults(func=plot_command)
