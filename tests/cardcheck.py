"""What must hold on the card after any fault: the checks shared by the fault tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.storage import MANIFEST, file_sha256, read_manifest
from edge.wavio import read_wav_16k


def header_agrees_with_data(path: Path) -> bool:
    data = path.read_bytes()
    return (len(data) >= 44 and data[:4] == b"RIFF"
            and int.from_bytes(data[4:8], "little") == len(data) - 8
            and int.from_bytes(data[40:44], "little") == len(data) - 44)


def assert_card_consistent(root: Path, stream: np.ndarray | None = None) -> list[dict]:
    """Every WAV is whole and listed exactly once with its hash and sample count; nothing
    half-done is left.
    With ``stream`` (the audio the recorder heard, without drops), every segment's audio
    must be that stream's audio at the segment's offset."""
    entries = read_manifest(root / MANIFEST)
    files = [e["file"] for e in entries]
    assert len(files) == len(set(files)), "a segment is listed twice"
    leftovers = [p for p in root.rglob("*") if p.name.endswith((".part", ".part.json", ".tmp"))]
    assert leftovers == []
    wavs = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.wav"))
    assert wavs == sorted(files), "files and manifest disagree"
    for entry in entries:
        path = root / entry["file"]
        assert header_agrees_with_data(path), entry["file"]
        assert file_sha256(path) == entry["sha256"], entry["file"]
        assert entry["samples"] == (path.stat().st_size - 44) // 2, entry["file"]
        if stream is not None:
            audio = read_wav_16k(path)
            first = round(entry["start_s"] * 16000)
            assert np.array_equal(audio, stream[first:first + len(audio)]), entry["file"]
    return entries
