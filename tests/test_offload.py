"""What `edge export` and `edge sync` share (edge.offload), on a card the real SegmentWriter
wrote: the originals let go once their copies are proven, the manifest a destination gets,
and a segment read back from the card in bounded memory."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import struct
import tracemalloc
from datetime import datetime
from pathlib import Path

import numpy as np

import edge.offload
from edge.manifest import DELETIONS, read_manifest
from edge.offload import megabytes, merge_manifest, remove_segments
from edge.storage import MANIFEST, SegmentEnd, SegmentStart, SegmentWriter, file_sha256

FIBMAP = 1  # the ioctl that maps a file's block to the filesystem's (root only)
END = SegmentEnd(prob_mean=0.8, prob_max=0.99, overflows=0, dropped_frames=0)


def record_days(root: Path, starts: list[str]) -> list[dict]:
    """One 0.1 s segment per wall-clock start, in that order; their manifest entries."""
    writer = SegmentWriter(root, "room1", "m", "v")
    writer.prepare()
    entries = []
    for offset, wall in enumerate(starts):
        writer.open(SegmentStart(source="mic:default", start_s=float(offset), start=wall,
                                 monotonic_s=100.0 + offset, boot_id="b00t", clock_synced=True))
        writer.append(np.full(1600, offset + 1, dtype=np.int16))
        entries.append(writer.close(END))
    return entries


def tombstones(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_copied_segments_leave_the_card_as_tombstones_and_an_emptied_day_is_retired(tmp_path):
    root = tmp_path / "card"
    first, second, last_day = record_days(root, ["2026-11-23T09:00:00.000+01:00", "2026-11-23T10:00:00.000+01:00",
                                                 "2026-11-24T09:00:00.000+01:00"])
    (root / second["file"]).unlink()  # gone already (a run stopped after the file went): no problem
    problems: list = []
    removed = remove_segments(root, [first, second], problems, "exported to /media/stick")
    assert (removed, problems) == ([first, second], [])
    day = (root / first["file"]).parent
    assert not (day / MANIFEST).exists()  # nothing of the day left: retired
    lines = tombstones(root / DELETIONS)
    assert [(t["deleted"], t["seq"], t["reason"]) for t in lines] == [
        (first["file"], first["seq"], "exported to /media/stick"), (second["file"], second["seq"], "exported to /media/stick")]
    assert all(datetime.fromisoformat(t["at"]).tzinfo is not None for t in lines)
    assert (root / last_day["file"]).exists()


def test_a_segment_that_cannot_be_removed_is_one_line_and_the_others_still_go(tmp_path):
    root = tmp_path / "card"
    stuck, free = record_days(root, ["2026-11-24T09:00:00.000+01:00", "2026-11-24T10:00:00.000+01:00"])
    (root / stuck["file"]).unlink()
    (root / stuck["file"]).mkdir()  # unlink() fails on it as on a card that refuses
    (root / stuck["file"] / "x").write_text("")
    problems: list = []
    assert remove_segments(root, [stuck, free], problems, "synced") == [free]
    assert problems == [f"{stuck['file']}: copied, but cannot remove it from the card (Is a directory)"]
    assert not (root / free["file"]).exists()
    manifest = (root / free["file"]).parent / MANIFEST
    assert [e["file"] for e in read_manifest(manifest)] == [stuck["file"]]


def test_a_manifest_that_cannot_be_rewritten_is_one_line_naming_it(tmp_path, monkeypatch):
    root = tmp_path / "card"
    entry, = record_days(root, ["2026-11-24T09:00:00.000+01:00"])

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(edge.offload, "rewrite_manifest", read_only)
    problems: list = []
    assert remove_segments(root, [entry], problems, "synced") == [entry]
    manifest = (root / entry["file"]).parent / MANIFEST
    assert problems == [f"{manifest}: cannot remove the copied segments' lines (Read-only file system)"]


def test_a_destination_manifest_only_grows_and_lists_each_copy_once(tmp_path):
    there = {"file": "20261124/000001.wav", "sha256": "a" * 64, "seq": 1}
    new = {"file": "20261124/000002.wav", "sha256": "b" * 64, "seq": 2}
    same_copy = {**new, "recovered": True}  # another line of the same file and bytes
    assert list(merge_manifest([there], [new, same_copy, there])) == [there, new]
    # A line repeated is kept once; another line of the same file and bytes is kept as it is.
    assert list(merge_manifest([there, there, same_copy], [])) == [there, same_copy]


def test_a_year_of_destination_manifest_merges_in_bounded_memory():
    """A stick used all year: 131,400 lines (80 MB) merged a line at a time, never held."""
    line = {"file": "", "seq": 0, "device": "room-12", "source": "mic", "start": "2026-11-24T09:30:12.000+01:00",
            "end": "2026-11-24T09:30:20.000+01:00", "duration_s": 8.0, "prob_mean": 0.7, "prob_max": 0.99,
            "sha256": "", "model_sha256": "0" * 64, "version": "0.1.0", "recovered": False, "mic_gaps": []}
    count = 50_000

    def year():
        for n in range(count):
            yield {**line, "file": f"{20250901 + n // 360}/{n:06d}_093012_room-12.wav", "seq": n + 1,
                   "sha256": f"{n:064x}"}

    tracemalloc.start()
    try:
        merged = sum(1 for _ in merge_manifest(year(), [{**line, "file": "x.wav", "sha256": "f" * 64}]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert merged == count + 1
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MB held to merge {count} lines"


def test_a_segment_is_read_back_in_bounded_memory_whatever_its_size(tmp_path):
    path = tmp_path / "long.wav"
    data = np.random.default_rng(5).integers(0, 256, 16 << 20, dtype=np.uint8).tobytes()  # 16 MiB
    path.write_bytes(data)
    tracemalloc.start()
    try:
        digest = file_sha256(path, from_medium=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert digest == hashlib.sha256(data).hexdigest()
    assert peak < 4 << 20, f"{peak} bytes held to hash a 16 MiB segment"


def test_sizes_are_decimal_megabytes_to_a_tenth():
    assert [megabytes(n) for n in (0, 49_999, 50_000, 1_000_000, 412_960_000)] == [
        "0.0 MB", "0.0 MB", "0.1 MB", "1.0 MB", "413.0 MB"]


def test_a_segment_is_read_back_from_the_card_not_from_the_page_cache(ext4_card):
    """Bytes that rotted on the card while the page cache still holds what was written are
    what the check must see: the cached copy would prove a rotten segment sound."""
    loop, card = ext4_card
    path = card / "segment.wav"
    written = bytes(range(256)) * 64  # 16 KiB
    with open(path, "wb") as f:
        f.write(written)
        f.flush()
        os.fsync(f.fileno())
        block = struct.unpack("i", fcntl.ioctl(f.fileno(), FIBMAP, struct.pack("i", 0)))[0]
    assert path.read_bytes() == written  # in the page cache now
    rotted = b"ROT!" + written[4:]
    device = os.open(loop, os.O_WRONLY)  # the medium changes under the file's cached pages
    try:
        os.pwrite(device, rotted[:4], block * os.statvfs(card).f_bsize)
        os.fsync(device)
    finally:
        os.close(device)
    assert path.read_bytes() == written, "the page cache no longer hides the change: the test proves nothing here"
    assert file_sha256(path, from_medium=True) == hashlib.sha256(rotted).hexdigest()

