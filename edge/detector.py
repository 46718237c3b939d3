"""The detector the pipeline runs, as the config asks for it, and `edge vad`, which prints
what it decides: the Silero model, hearing the audio through the noise suppressor
(edge.denoise) unless ``denoise.enabled`` is false."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from .config import Settings, add_config_argument, load_config
from .denoise import NoiseSuppressor, SuppressedDetector
from .vad import DEFAULT_MODEL, SileroVad, configured_model, window_probabilities
from .wavio import read_wav_16k


def make_detector(settings: Settings, runtime: str | None = None):
    """SileroVad on the configured model (``runtime``: as SileroVad takes it), behind a
    NoiseSuppressor when denoise is enabled."""
    model = SileroVad(configured_model(settings.detector), runtime)
    if not settings.denoise.enabled:
        return model
    return SuppressedDetector(NoiseSuppressor(settings.denoise), model)


def vad_command(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    if args.model is not None:
        settings = dataclasses.replace(settings, detector=dataclasses.replace(settings.detector, model=str(args.model)))
    samples = read_wav_16k(args.wav)
    probs = window_probabilities(make_detector(settings), samples)
    window_seconds = SileroVad.WINDOW / SileroVad.SAMPLE_RATE
    rows = [f"{i * window_seconds:.3f},{prob:.4f}" for i, prob in enumerate(probs)]
    sys.stdout.write("\n".join(["start_s,prob", *rows]) + "\n")
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "vad",
        help="print the speech probability of every 32 ms window of a WAV file as CSV",
        description="Print start_s,prob for every full 512-sample window (16 kHz) of FILE.wav, as the "
                    "recorder's detector scores it (through the noise suppressor unless the config's "
                    "denoise.enabled is false).",
    )
    parser.add_argument("wav", type=Path, metavar="FILE.wav")
    parser.add_argument(
        "--model", type=Path, default=None, metavar="PATH",
        help=f"Silero VAD TFLite model (default: the config's detector.model, else "
             f"{DEFAULT_MODEL.relative_to(DEFAULT_MODEL.parents[1])})",
    )
    add_config_argument(parser)
    parser.set_defaults(func=vad_command)
