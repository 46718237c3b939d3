"""Durability you can see: on every path that makes recordings durable, the order of the system
calls under strace. Data written, the file fsynced, renamed, the folder fsynced; a manifest line
fsynced before the next; nothing removed before what replaces it is durable.

Reading the files back cannot tell these apart (the page cache has the data either way);
tests/test_power_cut.py cuts power below the cache, at random moments. These check each path
at its exact points, every run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from syscalls import (RENAMES, SYNCS, WRITES, assert_durably_appended, assert_durably_renamed,
                      assert_written_then_synced, first_after, indexes, last, needs_strace, trace)

pytestmark = needs_strace()

SETUP = """
import numpy as np
from pathlib import Path
from edge.plain_wav import PlainWav
from edge.storage import SegmentEnd, SegmentStart, SegmentWriter
START = SegmentStart(source="mic:test", start_s=0.0, start="2026-11-24T09:30:12.000+00:00",
                     monotonic_s=1.0, boot_id="b", clock_synced=True)
END = SegmentEnd(prob_mean=0.9, prob_max=0.99, overflows=0, dropped_frames=0)
AUDIO = (np.arange(24000) % 2000).astype(np.int16)
"""


def segment_paths(root: Path, extension: str = ".wav") -> tuple:
    final = root / "20261124" / f"000001_093012_dev{extension}"
    # A segment's line goes to the manifest of its day folder (docs/card-layout.md).
    return (final, Path(f"{final}.part"), Path(f"{final}.part.json"), final.parent / "manifest.jsonl")


def test_a_segment_is_durable_at_every_step(tmp_path):
    root = (tmp_path / "rec").resolve()
    calls = trace(SETUP + f"""
writer = SegmentWriter(Path({str(root)!r}), "dev", "m", "v", fsync_interval_s=0.5)
writer.prepare()
writer.open(START)
for block in np.split(AUDIO, 6):
    writer.append(block)
writer.close(END)
""", tmp_path)
    final, part, sidecar, manifest = segment_paths(root)
    # The sidecar (what is known at the start) is durable before the .part exists.
    sidecar_durable = assert_durably_renamed(calls, Path(f"{sidecar}.tmp"), sidecar)
    created = indexes(calls, ("openat",), part)[0]
    assert sidecar_durable < created, "the .part exists before its sidecar is durable"
    # Every header update of the open segment (at each fsync interval) is fsynced.
    header_writes = indexes(calls, ("pwrite64",), part)
    assert len(header_writes) >= 2 * 3  # RIFF and data sizes at 0.5, 1.0 and 1.5 s
    for write in header_writes[1::2]:
        first_after(calls, SYNCS, part, write, "fsync after a header update")
    # Then renamed, the folder fsynced, and only then listed.
    folder_synced = assert_durably_renamed(calls, part, final)
    listed = first_after(calls, WRITES, manifest, folder_synced, "manifest line")
    manifest_synced = first_after(calls, SYNCS, manifest, listed, "fsync of the manifest")
    # The sidecar goes last: until the manifest line is durable, recovery needs it.
    removed = last(calls, ("unlink", "unlinkat"), sidecar, "removal of the sidecar")
    assert manifest_synced < removed, "the sidecar was removed before the manifest line was durable"


def test_recovery_after_a_cut_is_durable_before_the_sidecar_goes(tmp_path):
    root = (tmp_path / "rec").resolve()
    final, part, sidecar, manifest = segment_paths(root)
    # What a power cut leaves: a sidecar and a .part with half a sample at its end.
    from edge.storage import SegmentStart, SegmentWriter
    import numpy as np

    writer = SegmentWriter(root, "dev", "m", "v")
    writer.prepare()
    writer.open(SegmentStart("mic:test", 0.0, "2026-11-24T09:30:12.000+00:00", 1.0, "b", True))
    writer.append(np.ones(8000, np.int16))
    writer._file._file.flush()
    with open(part, "ab") as f:
        f.write(b"\x01")
    calls = trace(f"""
from pathlib import Path
from edge.storage import SegmentWriter
SegmentWriter(Path({str(root)!r}), "dev", "m", "v").prepare()
""", tmp_path)
    header_fitted = assert_written_then_synced(calls, part)
    folder_synced = assert_durably_renamed(calls, part, final)
    assert header_fitted < folder_synced
    listed = first_after(calls, WRITES, manifest, folder_synced, "manifest line")
    manifest_synced = first_after(calls, SYNCS, manifest, listed, "fsync of the manifest")
    assert manifest_synced < last(calls, ("unlink", "unlinkat"), sidecar, "removal of the sidecar")


@pytest.mark.skipif(shutil.which("age-keygen") is None, reason="age is not installed")
def test_an_encrypted_segment_is_durable_at_every_step(tmp_path):
    identity = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(identity)], check=True, capture_output=True,
                            text=True).stdout.strip()
    root = (tmp_path / "rec").resolve()
    calls = trace(SETUP + f"""
from edge.encryption import AgeWav
writer = SegmentWriter(Path({str(root)!r}), "dev", "m", "v", fsync_interval_s=0.5,
                       segment_format=AgeWav.for_recipients([{public!r}]))
writer.prepare()
writer.open(START)
for block in np.split(AUDIO, 6):
    writer.append(block)
writer.close(END)
""", tmp_path)
    final, part, sidecar, manifest = segment_paths(root, ".wav.age")
    # age writes the ciphertext (a child process); the recorder fsyncs the same file after it ends.
    folder_synced = assert_durably_renamed(calls, part, final)
    listed = first_after(calls, WRITES, manifest, folder_synced, "manifest line")
    manifest_synced = first_after(calls, SYNCS, manifest, listed, "fsync of the manifest")
    assert manifest_synced < last(calls, ("unlink", "unlinkat"), sidecar, "removal of the sidecar")


def test_a_rewritten_manifest_is_durable_before_it_replaces_the_old_one(tmp_path):
    root = (tmp_path / "rec").resolve()
    root.mkdir()
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"file": f"d/{n}.wav", "seq": n}) + "\n" for n in range(3)))
    calls = trace(f"""
from pathlib import Path
from edge.storage import rewrite_manifest
rewrite_manifest(Path({str(manifest)!r}), lambda e: e["seq"] != 1, lambda e: {{"deleted": e["file"]}})
""", tmp_path)
    assert_durably_renamed(calls, Path(f"{manifest}.tmp"), manifest)
    assert indexes(calls, WRITES, manifest) == [], "the manifest was written in place"


def test_an_exported_copy_is_durable_before_it_gets_its_name(tmp_path):
    root = (tmp_path / "rec").resolve()
    stick = (tmp_path / "stick").resolve()
    stick.mkdir()
    trace(SETUP + f"""
writer = SegmentWriter(Path({str(root)!r}), "dev", "m", "v")
writer.prepare()
for _ in range(2):
    writer.open(START)
    writer.append(AUDIO)
    writer.close(END)
""", tmp_path)
    calls = trace(f"""
import io
from pathlib import Path
from edge.export import SegmentExporter
report = SegmentExporter(Path({str(root)!r}), Path({str(stick)!r}), "dev", move=True,
                         progress_stream=io.StringIO()).run()
assert report.ok and report.copied == 2, report
""", tmp_path)
    target = stick / "dev"
    copies_durable = []
    for name in ("000001_093012_dev.wav", "000002_093012_dev.wav"):
        final = target / "20261124" / name
        copies_durable.append(assert_durably_renamed(calls, Path(f"{final}.exporting"), final))
    index_durable = assert_durably_renamed(calls, target / "manifest.jsonl.tmp", target / "manifest.jsonl")
    assert_durably_renamed(calls, target / "SHA256SUMS.tmp", target / "SHA256SUMS")
    # --move: an original goes only once its copy and the stick's manifest are durable.
    for name in ("000001_093012_dev.wav", "000002_093012_dev.wav"):
        removed = last(calls, ("unlink", "unlinkat"), root / "20261124" / name, "removal of the original")
        assert max(copies_durable) < removed and index_durable < removed


def test_a_retention_deletion_is_durable_before_its_tombstone(tmp_path):
    root = (tmp_path / "rec").resolve()
    trace(SETUP + f"""
writer = SegmentWriter(Path({str(root)!r}), "dev", "m", "v")
writer.prepare()
writer.open(START)
writer.append(AUDIO)
writer.close(END)
""", tmp_path)
    calls = trace(f"""
from datetime import datetime, timezone
from pathlib import Path
from edge.retention import SegmentRetention
class Clock:
    def wall(self):
        return datetime(2027, 1, 30, tzinfo=timezone.utc)
    def synced(self):
        return True
    def boottime(self):
        return 0.0
    def boot_id(self):
        return "another boot"
retention = SegmentRetention(Path({str(root)!r}), 30, Clock(), None)
assert len(retention.sweep()) == 1
""", tmp_path)
    segment = root / "20261124" / "000001_093012_dev.wav"
    removed = last(calls, ("unlink", "unlinkat"), segment, "removal of the old segment")
    folder_synced = first_after(calls, SYNCS, segment.parent, removed, "fsync of the folder")
    manifest = segment.parent / "manifest.jsonl"  # the tombstone goes where the segment's line is
    tombstone = first_after(calls, WRITES, manifest, folder_synced, "tombstone")
    assert_durably_appended(calls[tombstone:], manifest)


def test_the_status_file_is_replaced_whole(tmp_path):
    """Never written in place (a reader sees the old or the new file). Not fsynced, on purpose:
    it is rewritten every few seconds, a lost one costs nothing, and each fsync is a write to
    the card (docs/testing.md)."""
    path = (tmp_path / "status.json").resolve()
    calls = trace(f"""
from pathlib import Path
from edge.status import RecorderStatus, publish_status
publish_status(Path({str(path)!r}), RecorderStatus(pid=1))
""", tmp_path)
    written = last(calls, WRITES, Path(f"{path}.tmp"), "write")
    renamed = [i for i in indexes(calls, RENAMES, Path(f"{path}.tmp")) if calls[i].on(path)]
    assert renamed and written < renamed[-1]
    assert indexes(calls, WRITES, path) == []
