"""SegmentWriter: valid WAVs at every moment, each segment listed once, power cuts repaired."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import json
import logging
import os
import wave
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

import edge.plain_wav as plain_wav
import edge.storage as storage
from edge.errors import EdgeError
from cardcheck import header_agrees_with_data
from syscalls import first_after, indexes, needs_strace, trace
from edge.storage import (MANIFEST, SegmentEnd, SegmentStart, SegmentWriter,
                          read_manifest)

END = SegmentEnd(prob_mean=0.8, prob_max=0.99, overflows=0, dropped_frames=0)


def start(offset=0.0, wall="2026-11-24T09:30:12.000+01:00"):
    return SegmentStart(source="mic:default", start_s=offset, start=wall, monotonic_s=100.0 + offset,
                        boot_id="b00t", clock_synced=False)


def writer_at(root, fsync_interval_s=1.0):
    writer = SegmentWriter(root, "class room#1", "modelsha", "1.2.3", fsync_interval_s)
    writer.prepare()
    return writer


def audio(seconds, seed=0):
    return np.random.default_rng(seed).integers(-3000, 3000, int(seconds * 16000)).astype(np.int16)


def wav_samples(path):
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2")


def test_segment_is_a_wav_listed_once_with_its_facts(tmp_path):
    writer = writer_at(tmp_path)
    gap = {"start": "2026-11-24T09:29:00.000+01:00", "end": "2026-11-24T09:29:05.000+01:00"}
    writer.open(replace(start(offset=12.34567), clock_synced=True, mic_gaps=[gap]))
    samples = audio(2.3)
    writer.append(samples[:10000])
    writer.append(samples[10000:])
    entry = writer.close(END)
    path = tmp_path / entry["file"]
    assert np.array_equal(wav_samples(path), samples)
    # Every fact of the line, its name and its JSON type: readers (edge sync, export, a
    # spreadsheet) look them up by name.
    expected = {
        "file": "20261124/000001_093012_class-room-1.wav", "seq": 1, "device": "class-room-1",
        "source": "mic:default", "start": "2026-11-24T09:30:12.000+01:00",
        "end": "2026-11-24T09:30:14.300+01:00", "start_s": 12.346, "end_s": 14.646, "duration_s": 2.3,
        "samples": 36800, "sample_rate": 16000, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "prob_mean": 0.8, "prob_max": 0.99, "clock_synced": True, "boot_id": "b00t", "monotonic_s": 112.34567,
        "overflows": 0, "dropped_frames": 0, "mic_gaps": [gap], "recovered": False,
        "model_sha256": "modelsha", "version": "1.2.3"}
    assert entry == expected
    assert {k: type(v) for k, v in entry.items()} == {k: type(v) for k, v in expected.items()}
    assert read_manifest(tmp_path / MANIFEST) == [entry]
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, MANIFEST])  # no .part, no sidecar


def wave_module_wav(samples) -> bytes:
    """The WAV Python's own wave module writes for ``samples`` (16 kHz mono 16-bit)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(samples.astype("<i2").tobytes())
    return out.getvalue()


def test_segments_closed_or_recovered_are_byte_for_byte_the_wav_of_their_audio(tmp_path):
    """Every header field (byte rate and block align too, which some players divide by), as an
    independent writer puts it."""
    writer = writer_at(tmp_path, fsync_interval_s=0.5)
    samples = audio(0.7)
    writer.open(start())
    writer.append(samples)
    closed = tmp_path / writer.close(END)["file"]
    assert closed.read_bytes() == wave_module_wav(samples)
    cut = writer.open(start(offset=5.0, wall="2026-11-24T09:30:17.000+01:00"))
    writer.append(samples)
    writer._file._file.flush()  # what the kernel has when the power goes
    (entry,) = SegmentWriter(tmp_path, "class room#1", "modelsha", "1.2.3").prepare()
    assert tmp_path / entry["file"] == cut and cut.read_bytes() == wave_module_wav(samples)


def can_allocate_ahead(folder) -> bool:
    """Whether the filesystem of ``folder`` takes fallocate(KEEP_SIZE), asked of the C library
    itself (not of edge.storage, whose answer is what the tests check)."""
    fallocate = getattr(ctypes.CDLL(None, use_errno=True), "fallocate64", None)
    with open(folder / "probe", "wb") as f:
        return fallocate is not None and fallocate(f.fileno(), 1, ctypes.c_int64(0), ctypes.c_int64(4096)) == 0


def test_an_open_segment_has_its_blocks_allocated_ahead_and_gives_back_the_rest(tmp_path):
    if not can_allocate_ahead(tmp_path):
        pytest.skip(f"{tmp_path} cannot allocate ahead (fallocate KEEP_SIZE)")
    writer = writer_at(tmp_path)
    part = tmp_path / writer.open(start()).relative_to(tmp_path)
    part = part.with_name(part.name + ".part")
    samples = audio(70.0)  # 2.2 MB: three reservations, each made when half the last is used
    for second in range(70):
        writer.append(samples[16000 * second:16000 * (second + 1)])
        size, allocated = part.stat().st_size, part.stat().st_blocks * 512
        # Allocated ahead without changing the size: a valid WAV of what it holds.
        assert size == plain_wav.HEADER_BYTES + 2 * 16000 * (second + 1)
        assert allocated >= size + plain_wav.RESERVE_BYTES // 2, (second, size, allocated)
    entry = writer.close(END)
    path = tmp_path / entry["file"]
    assert np.array_equal(wav_samples(path), samples)
    # Nothing left reserved (of 1 MB), the filesystem's own blocks for a long file aside.
    assert path.stat().st_blocks * 512 < path.stat().st_size + 65536


def test_space_is_allocated_ahead_only_from_64_mib_free_and_only_where_it_can_be(tmp_path, monkeypatch):
    """Below 64 MiB free every byte is kept for audio and the floor; exactly 64 MiB still
    reserves. reserve() says True only for blocks it allocated (the writer counts on them)."""
    if not can_allocate_ahead(tmp_path):
        pytest.skip(f"{tmp_path} cannot allocate ahead (fallocate KEEP_SIZE)")
    real_fstatvfs = os.fstatvfs

    def card_with(free_bytes):
        def fstatvfs(fd):
            real = real_fstatvfs(fd)
            return SimpleNamespace(f_frsize=real.f_frsize, f_bavail=free_bytes // real.f_frsize)
        monkeypatch.setattr(plain_wav.os, "fstatvfs", fstatvfs)

    def reserved(name):
        with open(tmp_path / name, "wb") as f:
            said = plain_wav.reserve(f.fileno(), 0, plain_wav.RESERVE_BYTES)
            return said, os.fstat(f.fileno()).st_blocks * 512
    card_with(plain_wav.RESERVE_ONLY_ABOVE_BYTES)
    assert reserved("at_64_mib") == (True, plain_wav.RESERVE_BYTES)
    card_with(plain_wav.RESERVE_ONLY_ABOVE_BYTES - 4096)
    assert reserved("below") == (False, 0)
    monkeypatch.undo()
    monkeypatch.setattr(plain_wav, "_fallocate", lambda *args: (ctypes.set_errno(errno.EOPNOTSUPP), -1)[1])
    assert reserved("fuse") == (False, 0)  # a filesystem that cannot (FUSE)
    monkeypatch.setattr(plain_wav, "_fallocate", None)  # no C library function (Windows)
    assert reserved("no_fallocate") == (False, 0)


def test_sequence_numbers_grow_across_restarts_whatever_the_clock(tmp_path):
    writer = writer_at(tmp_path)
    writer.open(start(wall="2026-11-24T09:30:12.000+00:00"))
    writer.append(audio(0.1))
    first = writer.close(END)
    # After a reboot without network the clock may be years behind.
    writer = writer_at(tmp_path)
    writer.open(start(wall="1970-01-01T00:00:30.000+00:00"))
    writer.append(audio(0.1))
    second = writer.close(END)
    writer.open(start(wall="1970-01-01T00:01:30.000+00:00"))
    writer.append(audio(0.1))
    third = writer.close(END)
    assert (first["seq"], second["seq"], third["seq"]) == (1, 2, 3)
    assert second["file"] == "19700101/000002_000030_class-room-1.wav"
    writer = writer_at(tmp_path)  # the card state written when 19700101 began is whole
    assert writer.repairs == []
    writer.open(start(wall="1970-01-01T00:02:30.000+00:00"))
    assert writer.close(END) is None and writer_at(tmp_path).repairs == []


def test_a_new_card_restarted_before_any_speech_starts_again(tmp_path):
    assert writer_at(tmp_path).repairs == []
    writer = writer_at(tmp_path)  # a card state that names no day folder yet
    assert writer.repairs == [] and writer.recover() == []
    writer.open(start())
    writer.append(audio(0.1))
    assert writer.close(END)["seq"] == 1


def test_empty_segment_leaves_nothing(tmp_path):
    writer = writer_at(tmp_path)
    writer.open(start())
    assert writer.close(END) is None
    assert read_manifest(tmp_path / MANIFEST) == []
    assert list((tmp_path / "20261124").iterdir()) == []


@needs_strace()
def test_open_part_file_is_a_valid_wav_after_each_fsync(tmp_path):
    """The header is brought up to date and fsynced at every fsync interval: seen in the
    system calls (the page cache alone would show the header without any fsync)."""
    root = (tmp_path / "rec").resolve()
    calls = trace(f"""
import numpy as np
from pathlib import Path
from edge.storage import SegmentStart, SegmentWriter
writer = SegmentWriter(Path({str(root)!r}), "class room#1", "modelsha", "1.2.3", 0.5)
writer.prepare()
final = writer.open(SegmentStart("mic:default", 0.0, "2026-11-24T09:30:12.000+01:00", 100.0, "b00t", False))
samples = np.random.default_rng(0).integers(-3000, 3000, 19200).astype(np.int16)
for block in np.split(samples, 12):  # 0.1 s at a time, as frames arrive
    writer.append(block)
""", tmp_path)
    part = root / "20261124" / "000001_093012_class-room-1.wav.part"
    # Synced at 0.5 s and 1.0 s: each time the RIFF and data sizes for the audio so far, then
    # an fsync, before any more audio is written.
    updates = indexes(calls, ("pwrite64",), part)
    assert len(updates) == 4
    for at in updates[1::2]:
        synced = first_after(calls, ("fsync",), part, at, "fsync after the header update")
        assert not [i for i in indexes(calls, ("write",), part) if at < i < synced], "audio written before the fsync"
    part_bytes = part.read_bytes()
    (tmp_path / "synced.wav").write_bytes(part_bytes[: 44 + 2 * 16000])
    assert header_agrees_with_data(tmp_path / "synced.wav")
    written = np.random.default_rng(0).integers(-3000, 3000, 19200).astype(np.int16)
    assert np.array_equal(wav_samples(part), written[:16000])


def test_interrupted_segment_is_recovered_with_the_audio_it_had(tmp_path):
    writer = writer_at(tmp_path, fsync_interval_s=0.5)
    final = writer.open(start())
    samples = audio(1.7)
    writer.append(samples)
    writer._file._file.flush()  # what the kernel has when the process dies without closing
    part = final.with_name(final.name + ".part")
    with open(part, "ab") as f:
        f.write(b"\x01")  # half a sample: the power went mid-write
    recovered = SegmentWriter(tmp_path, "class room#1", "modelsha", "1.2.3").prepare()
    assert recovered == read_manifest(tmp_path / MANIFEST)
    assert len(recovered) == 1
    entry = recovered[0]
    assert entry["recovered"] is True and entry["prob_mean"] is None
    assert (entry["overflows"], entry["dropped_frames"]) == (0, 0)  # integers, as in every line
    assert np.array_equal(wav_samples(final), samples)
    assert header_agrees_with_data(final)
    assert entry["sha256"] == hashlib.sha256(final.read_bytes()).hexdigest()
    assert not part.exists()


def test_empty_interrupted_segment_is_removed(tmp_path):
    writer = writer_at(tmp_path)
    final = writer.open(start())
    writer._file._file.flush()
    assert writer_at(tmp_path).recover() == []
    assert list(final.parent.iterdir()) == []
    assert read_manifest(tmp_path / MANIFEST) == []


def test_segment_renamed_but_not_listed_is_listed_once(tmp_path, monkeypatch):
    writer = writer_at(tmp_path)
    writer.open(start())
    writer.append(audio(0.5))

    def power_cut(manifest, entry):
        raise KeyboardInterrupt  # stands for the process dying between rename and append

    monkeypatch.setattr(storage, "append_manifest", power_cut)
    with pytest.raises(KeyboardInterrupt):
        writer.close(END)
    monkeypatch.undo()
    writer_at(tmp_path)
    writer_at(tmp_path)  # a second restart must not list it again
    entries = read_manifest(tmp_path / MANIFEST)
    assert len(entries) == 1 and entries[0]["recovered"] is True
    assert (entries[0]["samples"], entries[0]["duration_s"]) == (8000, 0.5)  # the audio it has
    assert type(entries[0]["samples"]) is int  # a count of samples, as in every line


@pytest.mark.parametrize("field, value", [
    ("start_s", True), ("start_s", "12.5"), ("monotonic_s", float("inf")), ("source", 5),
    ("boot_id", None), ("clock_synced", "no"), ("mic_gaps", {}), ("start", "yesterday"),
])
def test_an_interrupted_segment_whose_sidecar_is_damaged_is_left_as_it_is(tmp_path, field, value, caplog):
    """The sidecar's facts would be the segment's manifest line: one that is not what a
    segment's start writes leaves the audio untouched for a person, the others recovered."""
    writer = writer_at(tmp_path)
    damaged = writer.open(start())
    writer.append(audio(0.5))
    writer._file._file.flush()
    sidecar = damaged.with_name(damaged.name + ".part.json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, field: value}))
    writer._abandon()
    whole = writer.open(start(offset=5.0))
    writer.append(audio(0.3))
    writer._file._file.flush()
    part = damaged.with_name(damaged.name + ".part")
    before = part.read_bytes()
    recovered = SegmentWriter(tmp_path, "class room#1", "modelsha", "1.2.3").prepare()
    assert [e["file"] for e in recovered] == [whole.relative_to(tmp_path).as_posix()]
    assert read_manifest(tmp_path / MANIFEST) == recovered
    assert part.read_bytes() == before and json.loads(sidecar.read_text())[field] == value
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"{sidecar}: damaged (expected the JSON a segment's start writes): {part.name} not recovered",
        f"recovered {whole.relative_to(tmp_path).as_posix()} after an interruption (0.3 s of audio)"]


def test_every_interrupted_segment_of_a_day_is_dealt_with_whatever_comes_before_it(tmp_path, monkeypatch):
    writer = writer_at(tmp_path)
    empty = writer.open(start())  # 1: nothing written when the power went
    writer._abandon()
    writer.open(start(offset=1.0))  # 2: listed, but its sidecar was left
    writer.append(audio(0.2))
    monkeypatch.setattr(storage.Path, "unlink", lambda path, missing_ok=False: None)
    writer.close(END)
    monkeypatch.undo()
    last = writer.open(start(offset=2.0))  # 3: interrupted with audio
    writer.append(audio(0.3))
    writer._file._file.flush()
    leftover = last.parent / (last.name + ".part.json.tmp")  # a sidecar cut before its rename
    leftover.write_text('{"seq": 4')
    recovered = SegmentWriter(tmp_path, "class room#1", "modelsha", "1.2.3").prepare()  # one pass
    assert [(e["seq"], e["recovered"]) for e in read_manifest(tmp_path / MANIFEST)] == [(2, False), (3, True)]
    assert [tmp_path / e["file"] for e in recovered] == [last]
    assert not empty.with_name(empty.name + ".part").exists()
    assert list(tmp_path.rglob("*.part*")) == [] and not leftover.exists()


def test_torn_manifest_line_is_moved_aside_and_appends_go_on(tmp_path):
    writer = writer_at(tmp_path)
    writer.open(start())
    writer.append(audio(0.2))
    writer.close(END)
    day = tmp_path / "20261124" / MANIFEST
    with open(day, "a") as f:
        f.write('{"file": "20261124/0000')
    writer = writer_at(tmp_path)
    assert writer.repairs == [f"{day}: damaged line 2 moved to manifest.damaged.jsonl"]  # for `edge status`
    writer.open(start())
    writer.append(audio(0.2))
    writer.close(END)
    lines = day.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2]
    aside = [json.loads(line) for line in (day.parent / "manifest.damaged.jsonl").read_text().splitlines()]
    assert [(line["line"], line["text"]) for line in aside] == [(2, '{"file": "20261124/0000')]


def test_segment_listed_but_with_its_sidecar_left_is_not_listed_again(tmp_path):
    writer = writer_at(tmp_path)
    final = writer.open(start())
    sidecar = final.with_name(final.name + ".part.json")
    left_behind = sidecar.read_text()
    writer.append(audio(0.5))
    entry = writer.close(END)
    # The power went after the manifest line was durable and before the sidecar was removed.
    sidecar.write_text(left_behind)
    assert writer_at(tmp_path).recover() == []
    writer_at(tmp_path)
    assert read_manifest(tmp_path / MANIFEST) == [entry]
    assert not sidecar.exists() and final.exists()


def test_audio_is_written_down_to_min_free_mb_and_not_below(tmp_path, monkeypatch):
    """"Free space on the card below which no more audio is written, in megabytes" (10^6
    bytes, as df -H and the status show them): exactly 200 MB free still takes audio."""
    guard = storage.FreeSpaceGuard(tmp_path, 200, "stop")

    def card_with(blocks_of_512):
        monkeypatch.setattr(storage.os, "statvfs", lambda path: SimpleNamespace(f_bavail=blocks_of_512, f_frsize=512))

    card_with(390625)  # 200 000 000 bytes
    assert guard.free_mb() == 200.0 and guard.has_room()
    card_with(390624)
    assert not guard.has_room()


def test_a_full_card_gives_up_its_oldest_segments_one_by_one_until_there_is_room(tmp_path, monkeypatch, caplog):
    writer = writer_at(tmp_path)
    files = []
    for wall in ("2026-11-23T09:00:00.000+01:00", "2026-11-24T09:00:00.000+01:00", "2026-11-24T10:00:00.000+01:00"):
        writer.open(start(wall=wall))
        writer.append(audio(0.1))  # 3244 bytes with the header
        files.append(writer.close(END)["file"])

    def card(path):  # 10 244 bytes in all, each worth a kB (so a segment is 3.244 "MB")
        used = sum(p.stat().st_size for p in tmp_path.rglob("*.wav"))
        return SimpleNamespace(f_bavail=10244 - used, f_frsize=1000)

    monkeypatch.setattr(storage.os, "statvfs", card)
    assert not storage.FreeSpaceGuard(tmp_path, 7, "stop").has_room()
    assert all((tmp_path / f).exists() for f in files)  # "stop" never deletes
    assert storage.FreeSpaceGuard(tmp_path, 7, "delete_oldest").has_room()  # 7.0 MB free after two
    assert [(tmp_path / f).exists() for f in files] == [False, False, True]
    assert [e["file"] for e in read_manifest(tmp_path / "20261124" / MANIFEST)] == files[2:]
    assert not (tmp_path / "20261123" / MANIFEST).exists()  # the emptied day is retired
    assert [r.getMessage() for r in caplog.records if "card full" in r.getMessage()] == [
        f"card full: deleted the oldest segment {f}" for f in files[:2]]
    assert not storage.FreeSpaceGuard(tmp_path, 20, "delete_oldest").has_room()  # more than the card holds


def test_a_segment_that_cannot_be_finished_says_which_file_and_why(tmp_path, monkeypatch):
    writer = writer_at(tmp_path)
    final = writer.open(start())
    writer.append(audio(0.1))

    def failing_fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(storage.os, "fsync", failing_fsync)
    with pytest.raises(storage.StorageUnavailable) as failed:
        writer.close(END)
    assert str(failed.value) == f"{final}.part: Input/output error"
    assert not writer.is_open
    monkeypatch.undo()
    final = writer.open(start(offset=1.0))
    monkeypatch.setattr(storage.os, "fsync", failing_fsync)
    with pytest.raises(storage.StorageUnavailable) as failed:
        writer.append(audio(1.0))  # its fsync fails
    assert str(failed.value) == f"{final}.part: Input/output error"


def test_audio_appended_window_by_window_is_made_durable_every_fsync_interval(tmp_path, monkeypatch):
    writer = SegmentWriter(tmp_path, "class room#1", "modelsha", "1.2.3")  # the default: every second
    writer.prepare()
    writer.open(start())
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(storage.os, "fsync", lambda fd: (synced.append(writer._samples), real_fsync(fd)))
    samples = audio(3.0)
    for at in range(0, len(samples), 512):  # the recorder's 32 ms windows
        writer.append(samples[at:at + 512])
    # The first append that brings a second of audio since the last fsync makes it durable.
    assert synced == [16384, 32768]


def test_an_fsync_comes_when_a_whole_interval_of_audio_is_unsynced_not_a_sample_before(tmp_path, monkeypatch):
    writer = writer_at(tmp_path, fsync_interval_s=1.0)
    writer.open(start())
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(storage.os, "fsync", lambda fd: (synced.append(writer._samples), real_fsync(fd)))
    for size in (15999, 1, 15999, 1, 20000, 15999):
        writer.append(audio(size / 16000))
    assert synced == [16000, 32000, 52000]


def test_a_recordings_folder_that_cannot_be_made_is_one_line_naming_it(tmp_path):
    (tmp_path / "card").write_text("a file where the card's folder should be")
    writer = SegmentWriter(tmp_path / "card" / "recordings", "class room#1", "modelsha", "1.2.3")
    with pytest.raises(EdgeError) as failed:
        writer.prepare()
    assert str(failed.value) == f"{tmp_path / 'card' / 'recordings'}: cannot create recordings folder (Not a directory)"


def test_device_names_keep_letters_digits_dots_and_dashes_in_file_names(tmp_path):
    writer = SegmentWriter(tmp_path, "Room B.12-North/Süd", "modelsha", "1.2.3")
    writer.prepare()
    writer.open(start())
    writer.append(audio(0.1))
    entry = writer.close(END)
    assert (entry["file"], entry["device"]) == ("20261124/000001_093012_Room-B.12-North-S-d.wav", "Room-B.12-North-S-d")


def test_a_card_that_lost_its_state_has_the_interrupted_segments_of_every_day_recovered_once(tmp_path, caplog):
    """Without the card state every day folder is looked at, once; after that (the card coming
    back after an error) only the day the state names, whatever the card's history."""
    writer = writer_at(tmp_path)
    interrupted = []
    for day in (23, 24, 25):
        interrupted.append(writer.open(start(wall=f"2026-11-{day}T09:30:12.000+01:00")))
        writer.append(audio(0.2))
        writer._file._file.flush()
        writer._abandon()
    first = interrupted.pop(0)
    first.with_name(first.name + ".part.json").write_text("{")  # its audio is left for a person, with a warning
    (tmp_path / "card-state.json").unlink()
    writer = SegmentWriter(tmp_path, "class room#1", "modelsha", "1.2.3")
    recovered = writer.prepare()
    assert [tmp_path / e["file"] for e in recovered] == interrupted
    for final in interrupted:
        assert read_manifest(final.parent / MANIFEST) == [e for e in recovered if tmp_path / e["file"] == final]
    assert len([m for m in caplog.messages if "damaged" in m]) == 1
    assert writer.recover() == []
    assert SegmentWriter(tmp_path, "class room#1", "modelsha", "1.2.3").prepare() == []  # a restart
    assert len([m for m in caplog.messages if "damaged" in m]) == 1


def test_a_writer_whose_start_failed_finishes_every_interrupted_segment_once_the_card_takes_writes(tmp_path):
    """prepare() failed (a read-only card at boot): the storage supervisor's recover() when
    the card comes back does what prepare() would have, in every day folder."""
    writer = writer_at(tmp_path)
    interrupted = []
    for day in (23, 24):
        interrupted.append(writer.open(start(wall=f"2026-11-{day}T09:30:12.000+01:00")))
        writer.append(audio(0.2))
        writer._file._file.flush()
        writer._abandon()
    writer = SegmentWriter(tmp_path, "class room#1", "modelsha", "1.2.3")
    assert writer.repairs == []  # nothing for the recorder to report
    assert [tmp_path / e["file"] for e in writer.recover()] == interrupted


def test_a_damaged_card_state_is_rebuilt_said_and_numbering_goes_on(tmp_path):
    writer = writer_at(tmp_path)
    writer.open(start())
    writer.append(audio(0.1))
    writer.close(END)
    (tmp_path / "card-state.json").write_text('{"next_seq": ')
    writer = writer_at(tmp_path)
    assert writer.repairs == [f"{tmp_path / 'card-state.json'}: damaged, rebuilt from every day folder"]
    writer.open(start(wall="2026-11-24T10:00:00.000+01:00"))
    writer.append(audio(0.1))
    assert writer.close(END)["seq"] == 2
    assert writer_at(tmp_path).repairs == []


def test_recordings_folder_is_created_with_its_parents(tmp_path):
    writer = writer_at(tmp_path / "card" / "edge" / "recordings")
    writer.open(start())
    writer.append(audio(0.1))
    assert (tmp_path / "card" / "edge" / "recordings" / writer.close(END)["file"]).exists()


def test_a_writer_whose_card_refused_the_start_numbers_its_first_segment_all_the_same(tmp_path):
    writer = SegmentWriter(tmp_path, "class room#1", "modelsha", "1.2.3")  # prepare() failed
    writer.open(start())
    writer.append(audio(0.1))
    assert writer.close(END)["file"] == "20261124/000001_093012_class-room-1.wav"


def test_a_card_that_fails_to_allocate_ahead_still_records_and_says_so_in_the_debug_log(tmp_path, monkeypatch, caplog):
    def fallocate(code):
        def failing(*args):
            ctypes.set_errno(code)
            return -1
        return failing

    caplog.set_level(logging.DEBUG, logger="edge.plain_wav")
    for code in (errno.EOPNOTSUPP, errno.EIO):  # a FUSE card; a failing one
        monkeypatch.setattr(plain_wav, "_fallocate", fallocate(code))
        writer = writer_at(tmp_path)
        writer.open(start())
        writer.append(audio(2.0))
        entry = writer.close(END)
        assert entry["samples"] == 32000
    assert [m for m in caplog.messages if "reserve" in m] == [
        "cannot reserve space ahead of the audio: Input/output error"]
