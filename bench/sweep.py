"""python -m bench.sweep: the measurement behind the segmenter's defaults.

Runs `edge process` on the classroom streams of the benchmark (same seed) with each
candidate setting and prints speech capture, clipped onsets, stored non-speech and
segments per minute at each SNR, so the trade-off is a table, not a guess."""

from __future__ import annotations

import itertools
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from . import report
from .__main__ import SEED, SHARED, STREAM_S
from .metrics import recording_scores
from .recorders import edge_process
from .streams import build_streams

SNRS_DB = [10.0, 5.0]  # where the choices differ; at 20 dB all keep over 99 %
CANDIDATES = {
    "pre_roll_ms": [512, 640, 768],
    "post_roll_ms": [128, 256],
    "min_silence_ms": [500, 800],
}


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="edge-sweep-"))
    try:
        noise = [SHARED / "noise" / "speech-commands-background", SHARED / "noise" / "recorded-ambient"]
        streams = build_streams(SHARED / "speechocean762-adult", noise, SNRS_DB, STREAM_S, work / "streams", SEED)
        rows = []
        for values in itertools.product(*CANDIDATES.values()):
            segmenter = dict(zip(CANDIDATES, values))
            config = work / "edge.yaml"
            config.write_text(yaml.safe_dump({"segmenter": segmenter}))
            stored, _ = edge_process([s.path for s in streams], work / "out", config)
            shutil.rmtree(work / "out")
            for stream in streams:
                scores = recording_scores(stream.speech, stream.onsets, stored.get(str(stream.path), []),
                                          stream.duration_s)
                rows.append([*map(str, values), f"{stream.snr_db:g}", f"{100 * scores.speech_capture:.2f} %",
                             f"{scores.clipped_onsets}/{scores.utterances}",
                             f"{100 * scores.stored_non_speech:.1f} %", f"{scores.segments_per_minute:.1f}"])
        print("\n".join(report.table(
            [*CANDIDATES, "SNR dB", "speech capture", "clipped onsets", "stored non-speech", "segments/min"],
            rows)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
