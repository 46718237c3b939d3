"""python -m bench.sweep [--typed]: the measurement behind the segmenter's defaults.

Runs `edge process` on the classroom streams of the benchmark (same seed) with each
candidate setting and prints speech capture, clipped onsets, stored non-speech and
segments per minute at each SNR, so the trade-off is a table, not a guess.

With --typed, the candidates are those of the mechanisms around the detector (adaptive
threshold, onset and end search), run on the per-noise-type adult and child-like streams of
the "tune" split: speakers and noise files that the benchmark's report does not use; with
--denoise, the noise suppressor's settings on the same streams."""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from . import report
from .__main__ import SEED, SHARED, STREAM_S, TYPED_STREAM_S, pooled_scores
from .metrics import recording_scores
from .recorders import edge_process
from .streams import build_streams, build_typed_streams

SNRS_DB = [10.0, 5.0]  # where the choices differ; at 20 dB all keep over 99 %
CANDIDATES = {
    "pre_roll_ms": [512, 640, 768],
    "post_roll_ms": [128, 256],
    "min_silence_ms": [500, 800],
}
TYPED_SNRS_DB = [20.0, 10.0, 5.0, 0.0]
TYPED_CANDIDATES = {
    "adaptive_threshold_min": [None, 0.3, 0.2],
    "adaptive_threshold_margin": [0.3, 0.2],
    "onset_margin_ms": [None, 320],
    "tail_margin_ms": [None, 160],
}
# Not every combination: off, then the attenuation and the noise window each varied alone.
DENOISE_CANDIDATES = [
    {"enabled": False},
    {"max_attenuation_db": 15.0, "noise_window_s": 1.5},
    {"max_attenuation_db": 10.0, "noise_window_s": 0.5},
    {"max_attenuation_db": 15.0, "noise_window_s": 0.5},
    {"max_attenuation_db": 20.0, "noise_window_s": 0.5},
]


def run(candidates: dict | list, streams, work: Path, rows_of, section: str = "segmenter"
        ) -> tuple[list[str], list[list[str]]]:
    """The keys varied and a row per setting: ``candidates`` is key -> values (every combination
    tried) or a list of settings of ``section`` (tried one by one)."""
    settings = (candidates if isinstance(candidates, list)
                else [dict(zip(candidates, values)) for values in itertools.product(*candidates.values())])
    keys = list(dict.fromkeys(key for setting in settings for key in setting))
    rows = []
    for setting in settings:
        config = work / "edge.yaml"
        config.write_text(yaml.safe_dump({section: setting}))
        stored, _ = edge_process([s.path for s in streams], work / "out", config)
        shutil.rmtree(work / "out")
        rows += [[*(str(setting.get(key, "")) for key in keys), *row] for row in rows_of(stored)]
    return keys, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__)
    parser.add_argument("--typed", action="store_true", help="sweep the mechanisms on the tune split")
    parser.add_argument("--denoise", action="store_true", help="sweep the noise suppressor on the tune split")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="edge-sweep-"))
    try:
        if args.typed or args.denoise:
            streams = build_typed_streams(SHARED / "speechocean762-adult", SHARED / "noise", TYPED_SNRS_DB,
                                          TYPED_STREAM_S, work / "streams", SEED, split="tune")

            def rows_of(stored):
                return [[kind, f"{snr:g}", *pooled_scores(
                    [s for s in streams if s.speech_kind == kind and s.snr_db == snr],
                    lambda s: stored.get(str(s.path), []))] for kind in ("adult", "child-like") for snr in TYPED_SNRS_DB]

            keys, rows = (run(DENOISE_CANDIDATES, streams, work, rows_of, section="denoise") if args.denoise
                          else run(TYPED_CANDIDATES, streams, work, rows_of))
            header = [*keys, "speech", "SNR dB", "speech capture", "clipped onsets", "stored non-speech",
                      "lost % (missed / heads / tails)"]
        else:
            noise = [SHARED / "noise" / "speech-commands-background", SHARED / "noise" / "recorded-ambient"]
            streams = build_streams(SHARED / "speechocean762-adult", noise, SNRS_DB, STREAM_S, work / "streams", SEED)

            def rows_of(stored):
                rows = []
                for stream in streams:
                    scores = recording_scores(stream.speech, stream.onsets, stored.get(str(stream.path), []),
                                              stream.duration_s)
                    rows.append([f"{stream.snr_db:g}", f"{100 * scores.speech_capture:.2f} %",
                                 f"{scores.clipped_onsets}/{scores.utterances}",
                                 f"{100 * scores.stored_non_speech:.1f} %", f"{scores.segments_per_minute:.1f}"])
                return rows

            keys, rows = run(CANDIDATES, streams, work, rows_of)
            header = [*keys, "SNR dB", "speech capture", "clipped onsets", "stored non-speech", "segments/min"]
        print("\n".join(report.table(header, rows)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
