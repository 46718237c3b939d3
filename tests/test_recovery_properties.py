"""Recovery at arbitrary cut points (Hypothesis), through the public API only (SegmentWriter,
read_manifest, iter_segments): a writer process killed at any moment of a segment leaves, after
one restart or several, every segment listed once, with a true SHA-256 and sample count, and
audio that is what was written, no less than what was synced."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from edge.storage import MANIFEST, SegmentWriter, file_sha256, iter_segments, read_manifest

FSYNC_INTERVAL_S = 0.1  # 1600 samples

WRITER = """
import os, sys
import numpy as np
from pathlib import Path
from edge.storage import SegmentEnd, SegmentStart, SegmentWriter
root, seed, lengths, blocks = sys.argv[1], int(sys.argv[2]), eval(sys.argv[3]), eval(sys.argv[4])
writer = SegmentWriter(Path(root), "dev", "m", "v", fsync_interval_s=%r)
writer.prepare()
def audio(n, length):
    return np.random.default_rng(seed + n).integers(-30000, 30000, length).astype(np.int16)
def start(n):
    return SegmentStart("mic:test", float(n), f"2026-11-24T09:{n:02d}:00.000+00:00", float(n), "b", True)
for n, length in enumerate(lengths):
    writer.open(start(n))
    writer.append(audio(n, length))
    writer.close(SegmentEnd(0.9, 0.99, 0, 0))
n = len(lengths)
writer.open(start(n))
whole = audio(n, sum(blocks))
at = 0
for size in blocks:
    writer.append(whole[at:at + size])
    at += size
os._exit(0)  # killed: what Python had not handed to the kernel is gone
""" % FSYNC_INTERVAL_S


def wav_samples(path: Path) -> np.ndarray:
    with wave.open(str(path)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2")


def written(seed: int, n: int, length: int) -> np.ndarray:
    return np.random.default_rng(seed + n).integers(-30000, 30000, length).astype(np.int16)


# A writer process per example: few examples, and no shrinking (each step is a process too).
@settings(max_examples=10, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.integers(1, 6000), max_size=3), blocks=st.lists(st.integers(1, 3000), max_size=8),
       kept=st.integers(0, 1000), torn_manifest=st.booleans(), restarts=st.integers(1, 3), seed=st.integers(0, 1000))
def test_every_segment_is_listed_once_with_true_facts_after_a_kill(tmp_path_factory, lengths, blocks, kept,
                                                                    torn_manifest, restarts, seed):
    root = tmp_path_factory.mktemp("card") / "rec"
    subprocess.run([sys.executable, "-c", WRITER, str(root), str(seed), repr(lengths), repr(blocks)], check=True)
    interval = int(FSYNC_INTERVAL_S * 16000)
    synced = appended = 0
    for size in blocks:
        appended += size
        if appended - synced >= interval:
            synced = appended
    parts = list(root.glob("*/*.part"))
    assert len(parts) == 1
    # The power cut keeps what was synced and loses any part of the rest, mid-sample too.
    durable = 44 + 2 * synced
    size = parts[0].stat().st_size
    if size > durable:
        with open(parts[0], "r+b") as f:
            f.truncate(durable + (size - durable) * kept // 1000)
    if torn_manifest:
        with open(root / MANIFEST, "a") as f:
            f.write('{"file": "2026')
    for _ in range(restarts):
        SegmentWriter(root, "dev", "m", "v").prepare()

    entries = read_manifest(root / MANIFEST)
    assert len({e["file"] for e in entries}) == len(entries) == len({e["seq"] for e in entries})
    assert list(iter_segments(root)) == sorted(entries, key=lambda e: e["seq"])
    assert not list(root.glob("*/*.part")) and not list(root.glob("*/*.part.json"))
    assert sorted(str(p.relative_to(root)) for p in root.glob("*/*.wav")) == sorted(e["file"] for e in entries)
    for entry in entries:
        path = root / entry["file"]
        assert entry["sha256"] == file_sha256(path)
        audio = wav_samples(path)
        assert entry["samples"] == len(audio) and entry["duration_s"] == round(len(audio) / 16000, 3)
    complete = [e for e in entries if not e["recovered"]]
    assert [len(wav_samples(root / e["file"])) for e in complete] == lengths
    for n, entry in enumerate(complete):
        assert np.array_equal(wav_samples(root / entry["file"]), written(seed, n, lengths[n]))
    cut = [e for e in entries if e["recovered"]]
    total = sum(blocks)
    if synced == 0 and not cut:
        return  # nothing of the last segment reached the card: nothing to list
    assert len(cut) == 1
    audio = wav_samples(root / cut[0]["file"])
    assert synced <= len(audio) <= total
    assert np.array_equal(audio, written(seed, len(lengths), total)[:len(audio)])
