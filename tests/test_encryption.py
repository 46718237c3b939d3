"""Encryption at rest: segments as age streams, opened with Debian's real `age` binary.

Power cuts are made for real: the `age` process is SIGKILLed, losing the chunk it was
filling as a power cut would; on LazyFS the writes not fsynced are dropped too; and a real
daemon on a real ALSA capture is killed together with its age processes.
"""

from __future__ import annotations

import errno
import gc
import fcntl
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import stat
import termios
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from conftest import feed, wait_until
from edge.cli import main
import edge.encryption
from edge.encryption import (CHUNK_BYTES, AgeWav, age_payload_bytes, age_wav_samples,
                             interrupted_age_wav_samples, recipient_arguments, streaming_wav_header)
from edge.errors import EdgeError
from edge.card import CARD_STATE, DAYS_BEGUN
from edge.plain_wav import PlainWav, wav_header
from edge.storage import MANIFEST, SegmentEnd, SegmentStart, SegmentWriter, file_sha256, read_manifest

END = SegmentEnd(prob_mean=0.8, prob_max=0.99, overflows=0, dropped_frames=0)
FRAME = 512
CHUNK_S = CHUNK_BYTES / 2 / 16000  # 2.048 s of audio in one age chunk


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> tuple[Path, str]:
    """An identity file made by the real age-keygen, and its public key."""
    path = tmp_path_factory.mktemp("office") / "key.txt"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True,
                            text=True).stdout.strip()
    return path, public


def start(offset=0.0, wall="2026-11-24T09:30:12.000+01:00"):
    return SegmentStart(source="mic:default", start_s=offset, start=wall, monotonic_s=100.0 + offset,
                        boot_id="b00t", clock_synced=True)


def audio(seconds, seed=0):
    return np.random.default_rng(seed).integers(-3000, 3000, int(seconds * 16000)).astype(np.int16)


def encrypting_writer(root, public, fsync_interval_s=1.0):
    writer = SegmentWriter(root, "room1", "modelsha", "1.2.3", fsync_interval_s,
                           AgeWav.for_recipients([public]))
    writer.prepare()
    return writer


def age_decrypt(path: Path, identity: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["age", "-d", "-i", str(identity), str(path)], capture_output=True)


def pcm_after_header(wav_bytes: bytes) -> np.ndarray:
    assert wav_bytes[:4] == b"RIFF" and wav_bytes[8:16] == b"WAVEfmt "
    data = wav_bytes[44:]
    return np.frombuffer(data[: len(data) // 2 * 2], "<i2")


def age_has_sealed(stream, final: Path, plaintext_bytes: int) -> bool:
    """Whether the pipe into age is empty and every whole chunk is in the file."""
    in_pipe = struct.unpack("i", fcntl.ioctl(stream._age.stdin.fileno(), termios.FIONREAD, b"\0" * 4))[0]
    part = final.with_name(final.name + ".part")
    payload = age_payload_bytes(part)
    chunks = plaintext_bytes // CHUNK_BYTES
    return in_pipe == 0 and payload is not None and payload >= chunks * (CHUNK_BYTES + 16)


def pcm_runs(samples: np.ndarray, count: int = 60) -> list:
    """64-byte runs of the input's PCM (not near-silence) that must never appear on the card."""
    pcm = samples.astype("<i2").tobytes()
    step = max(len(pcm) // count // 2 * 2, 64)
    return [run for run in (pcm[i:i + 64] for i in range(0, len(pcm) - 64, step)) if len(set(run)) > 8]


def assert_no_plaintext(root: Path, runs: list) -> None:
    """No file under ``root`` holds a WAV header or any of the PCM ``runs``."""
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files and runs
    for path in files:
        data = path.read_bytes()
        assert b"RIFF" not in data and b"WAVEfmt" not in data, f"{path}: a WAV header"
        assert not any(run in data for run in runs), f"{path}: raw PCM of the input"


def test_the_plaintext_scan_finds_wav_headers_and_raw_pcm(tmp_path):
    samples = audio(1.0, seed=7)
    writer = SegmentWriter(tmp_path / "plain", "room1", "m", "v")
    writer.prepare()
    writer.open(start())
    writer.append(samples)
    writer.close(END)
    with pytest.raises(AssertionError, match="a WAV header"):
        assert_no_plaintext(tmp_path / "plain", pcm_runs(samples))
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "x.bin").write_bytes(os.urandom(999) + samples[8000:8100].tobytes())
    with pytest.raises(AssertionError, match="raw PCM of the input"):
        assert_no_plaintext(tmp_path / "raw", pcm_runs(samples, count=400))


def test_segment_is_an_age_file_that_age_decrypts_to_the_audio(tmp_path, key):
    identity, public = key
    writer = encrypting_writer(tmp_path, public)
    writer.open(start())
    samples = audio(5.0)
    for frame in np.split(samples, len(samples) // 1000):
        writer.append(frame)
    entry = writer.close(END)
    path = tmp_path / entry["file"]
    assert entry["file"] == "20261124/000001_093012_room1.wav.age"
    assert entry["sha256"] == file_sha256(path) and entry["samples"] == len(samples)
    assert path.read_bytes().startswith(b"age-encryption.org/v1\n")
    assert_no_plaintext(tmp_path, pcm_runs(samples))
    result = age_decrypt(path, identity)
    assert result.returncode == 0, result.stderr
    assert np.array_equal(pcm_after_header(result.stdout), samples)
    # A streamed WAV: players and Python's wave module read it as it is.
    plain = tmp_path / "plain.wav"
    plain.write_bytes(result.stdout)
    with wave.open(str(plain)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        assert np.array_equal(np.frombuffer(wav.readframes(len(samples) + 1000), "<i2"), samples)


def test_open_segment_leaves_no_plaintext_on_the_card(tmp_path, key):
    writer = encrypting_writer(tmp_path, key[1], fsync_interval_s=0.1)
    writer.open(start())
    samples = audio(6.0, seed=1)
    for frame in np.array_split(samples, len(samples) // FRAME):
        writer.append(frame)
    # The .part, its sidecar and the manifest, mid-segment: ciphertext and metadata only.
    assert_no_plaintext(tmp_path, pcm_runs(samples))
    sidecar = json.loads(next(tmp_path.rglob("*.part.json")).read_text())
    assert sidecar["file"].endswith(".wav.age")
    writer.close(END)
    assert_no_plaintext(tmp_path, pcm_runs(samples))


@pytest.mark.parametrize("seconds", [0.7, 2.3, 4.1, 6.2, 9.9])
def test_power_cut_loses_at_most_the_fsync_interval_and_one_chunk(tmp_path, key, seconds):
    identity, public = key
    fsync_interval_s = 0.5
    writer = encrypting_writer(tmp_path, public, fsync_interval_s)
    final = writer.open(start(offset=3.0))
    samples = audio(seconds, seed=2)
    for frame in np.array_split(samples, max(len(samples) // FRAME, 1)):
        writer.append(frame)
    writer._file.sync(0)  # the state of the card right after an fsync interval
    # Audio arrives at 32 kB/s on a device, so age keeps up: give it the time to seal
    # what the loop above wrote as fast as the CPU allows.
    wait_until(lambda: age_has_sealed(writer._file, final, 44 + 2 * len(samples)),
               "age to seal the whole chunks it was given")
    # The power goes: age dies with the chunk it was filling.
    os.kill(writer._file._age.pid, signal.SIGKILL)
    writer._file.abandon()
    # The next start, with encryption off and no key anywhere, closes it off as it is.
    part = final.with_name(final.name + ".part")
    stored = file_sha256(part) if part.exists() else None
    SegmentWriter(tmp_path, "room1", "x", "x").prepare()
    entries = read_manifest(tmp_path / MANIFEST)
    limit = round((fsync_interval_s + CHUNK_S) * 16000)
    if len(samples) - 22 < CHUNK_BYTES // 2:  # nothing sealed: the empty file is removed
        assert entries == [] and not final.exists() and not part.exists()
        return
    [entry] = entries
    assert entry["recovered"] is True and entry["file"].endswith(".wav.age")
    assert file_sha256(final) == entry["sha256"] == stored  # not a byte changed
    result = age_decrypt(final, identity)
    assert result.returncode != 0  # age says the stream ends early, after what is authentic
    decrypted = pcm_after_header(result.stdout)
    assert np.array_equal(decrypted, samples[:len(decrypted)])
    assert len(samples) - len(decrypted) <= limit
    assert len(decrypted) <= entry["samples"]


def test_recovery_counts_no_sample_of_a_chunk_the_card_got_only_part_of(tmp_path, key):
    # ext4 may have written back some pages of the chunk age was writing when the power went
    # (seen on the virtual Pi): those bytes decrypt to nothing, so the manifest must not count
    # them.
    identity, public = key
    writer = encrypting_writer(tmp_path, public)
    final = writer.open(start())
    samples = audio(3.0, seed=4)  # one whole chunk (2.05 s) and part of the next
    for frame in np.array_split(samples, len(samples) // FRAME):
        writer.append(frame)
    writer._file.sync(0)
    wait_until(lambda: age_has_sealed(writer._file, final, 44 + 2 * len(samples)),
               "age to seal the whole chunk")
    os.kill(writer._file._age.pid, signal.SIGKILL)
    writer._file.abandon()
    with open(final.with_name(final.name + ".part"), "ab") as part:
        part.write(np.random.default_rng(5).bytes(5000))  # the first pages of the next chunk
    SegmentWriter(tmp_path, "room1", "x", "x").prepare()
    [entry] = read_manifest(tmp_path / MANIFEST)
    decrypted = pcm_after_header(age_decrypt(final, identity).stdout)
    assert entry["recovered"] and len(decrypted) == entry["samples"] > 0
    assert np.array_equal(decrypted, samples[:len(decrypted)])


def test_a_last_chunk_sealed_before_the_cut_is_decrypted_beyond_the_recovered_count(
        tmp_path, key, monkeypatch, capsys):
    # The power went after age sealed the segment's last chunk and before the rename: recovery
    # cannot tell that chunk from a torn one without the key, and does not count it; the
    # office gets it all the same.
    identity, public = key
    writer = encrypting_writer(tmp_path / "card", public)
    writer.open(start())
    samples = audio(3.0, seed=6)
    writer.append(samples)

    def power_cut(source, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(KeyboardInterrupt):
        writer.close(END)
    monkeypatch.undo()
    SegmentWriter(tmp_path / "card", "room1", "x", "x").prepare()
    [entry] = read_manifest(tmp_path / "card")
    assert entry["recovered"] and 0 < entry["samples"] < len(samples)
    out = tmp_path / "office"
    out.mkdir()
    assert main(["decrypt", "--identity", str(identity), str(tmp_path / "card"), str(out)]) == 0, \
        capsys.readouterr()
    [wav] = out.rglob("*.wav")
    assert np.array_equal(wav_file_samples(wav), samples)


def test_recovery_of_a_segment_renamed_but_not_listed_needs_no_key(tmp_path, key, monkeypatch):
    import edge.storage as storage

    writer = encrypting_writer(tmp_path, key[1])
    writer.open(start())
    writer.append(audio(1.0))

    def power_cut(manifest, entry):
        raise KeyboardInterrupt

    monkeypatch.setattr(storage, "append_manifest", power_cut)
    with pytest.raises(KeyboardInterrupt):
        writer.close(END)
    monkeypatch.undo()
    SegmentWriter(tmp_path, "room1", "x", "x").prepare()
    [entry] = read_manifest(tmp_path / MANIFEST)
    assert entry["recovered"] is True and entry["samples"] == 16000
    result = age_decrypt(tmp_path / entry["file"], key[0])
    assert result.returncode == 0 and np.array_equal(pcm_after_header(result.stdout), audio(1.0))


@pytest.mark.parametrize("recipient, message", [
    ("age1xyz", r"privacy\.recipients: 'age1xyz' is not a valid age public key \(malformed recipient"),
    ("AGE-SECRET-KEY-1HC743GQRN99ZQWRLX8FPQZJHZNZUMJCMHM8S494DPYEQ55J6U7FS6F0GR6",
     r"privacy\.recipients: AGE-SECRET-KEY-1HC7\.\.\. is a secret key \(an identity\), not a public key"),
    ("/nonexistent/recipients.txt",
     r"privacy\.recipients: /nonexistent/recipients\.txt: cannot read recipients file"),
])
def test_bad_recipient_stops_the_recorder_at_start_naming_it(tmp_path, capsys, recipient, message):
    config = tmp_path / "edge.yaml"
    config.write_text(json.dumps({"privacy": {"recipients": [recipient]}, "led": {"pin": None}}))
    code = main(["process", "tests/data/silero_test_6s.wav", "--out", str(tmp_path / "rec"),
                 "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert re.search(message, err), err
    assert "6U7FS6F0GR6" not in err  # the secret key itself is never printed
    assert not list(tmp_path.rglob("*.wav*"))


def test_secret_key_in_a_recipients_file_is_refused(tmp_path, key):
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# office\n{key[1]}\n{key[0].read_text().splitlines()[-1]}\n")
    with pytest.raises(EdgeError, match=r"recipients\.txt: line 3 is a secret key"):
        AgeWav.for_recipients([str(recipients)])
    recipients.write_text(f"# office\n{key[1]}\n")
    assert AgeWav.for_recipients([str(recipients)]).arguments == ["-R", str(recipients)]


def test_edge_process_with_recipients_stores_only_age_files(tmp_path, key, lesson, capsys):
    config = tmp_path / "edge.yaml"
    config.write_text(json.dumps({"privacy": {"recipients": [key[1]]}, "led": {"pin": None},
                                  "storage": {"recordings_dir": str(tmp_path / "rec")}}))
    assert main(["process", "tests/data/lesson_15s.wav", "--out", str(tmp_path / "rec"),
                 "--config", str(config)]) == 0
    entries = read_manifest(tmp_path / "rec" / MANIFEST)
    assert entries and all(e["file"].endswith(".wav.age") for e in entries)
    assert_no_plaintext(tmp_path / "rec", pcm_runs(lesson))
    for entry in entries:
        result = age_decrypt(tmp_path / "rec" / entry["file"], key[0])
        first = round(entry["start_s"] * 16000)
        assert np.array_equal(pcm_after_header(result.stdout), lesson[first:first + entry["samples"]])
    capsys.readouterr()
    assert main(["list", "--config", str(config)]) == 0
    assert f"{len(entries)} segments" in capsys.readouterr().out


def test_doctor_checks_the_recipients(tmp_path, key, capsys, alsa, lesson):
    alsa.add("testmic", lesson)
    config = tmp_path / "edge.yaml"
    for recipients, expected in (
            ([key[1]], "OK   encryption: segments are encrypted with age to 1 public keys and 0 recipients files"),
            (["age1qqqq"], "FAIL encryption: privacy.recipients: 'age1qqqq' is not a valid age public key")):
        config.write_text(json.dumps({"privacy": {"recipients": recipients}, "led": {"pin": None},
                                      "audio": {"device": "testmic"},
                                      "storage": {"recordings_dir": str(tmp_path / "rec")}}))
        main(["doctor", "--config", str(config)])
        line = next(line for line in capsys.readouterr().out.splitlines() if "encryption" in line)
        assert line.startswith(expected), line


def record(writer, seconds_list, seed=3, day="2026-11-24"):
    """Segments of random audio through ``writer``; returns the audio of each."""
    rng = np.random.default_rng(seed)
    heard = []
    for number, seconds in enumerate(seconds_list):
        samples = rng.integers(-3000, 3000, int(seconds * 16000), dtype=np.int16)
        writer.open(start(offset=60.0 * number, wall=f"{day}T09:{10 + number:02d}:00.000+01:00"))
        for frame in np.array_split(samples, max(len(samples) // FRAME, 1)):
            writer.append(frame)
        writer.close(END)
        heard.append(samples)
    return heard


def cut_short(writer, samples, wall="2026-11-24T10:00:00.000+01:00"):
    """A segment interrupted by a power cut (age killed), recovered by the next start."""
    final = writer.open(start(offset=600.0, wall=wall))
    for frame in np.array_split(samples, len(samples) // FRAME):
        writer.append(frame)
    writer._file.sync(0)
    wait_until(lambda: age_has_sealed(writer._file, final, 44 + 2 * len(samples)), "age to catch up")
    os.kill(writer._file._age.pid, signal.SIGKILL)
    writer._file.abandon()
    writer._file = None
    SegmentWriter(writer.root, "room1", "x", "x").prepare()
    return final


def wav_file_samples(path: Path) -> np.ndarray:
    with wave.open(str(path)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2")


def tree(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_keygen_writes_a_private_key_once_and_prints_the_config_lines(tmp_path, capsys):
    from edge.config import settings_from_dict
    import yaml

    key_file = tmp_path / "office-key.txt"
    assert main(["keygen", str(key_file)]) == 0
    out, err = capsys.readouterr()
    assert key_file.stat().st_mode & 0o777 == 0o600
    settings = settings_from_dict(yaml.safe_load(out))  # pasted into the config as printed
    [public] = settings.privacy.recipients
    identity = subprocess.run(["age-keygen", "-y", str(key_file)], capture_output=True, text=True).stdout
    assert public == identity.strip() and AgeWav.for_recipients([public]).arguments == ["-r", public]
    before = key_file.read_bytes()
    assert main(["keygen", str(key_file)]) == 2
    assert "already exists, not overwritten" in capsys.readouterr().err
    assert key_file.read_bytes() == before


def test_decrypt_an_export_folder(tmp_path, key, capsys):
    from cardcheck import header_agrees_with_data
    from edge.export import SegmentExporter

    identity, public = key
    card = tmp_path / "card"
    writer = encrypting_writer(card, public)
    heard = record(writer, [1.0, 2.5, 0.3])
    interrupted = audio(5.0, seed=9)
    cut_short(writer, interrupted)
    stick = tmp_path / "stick"
    stick.mkdir()
    report = SegmentExporter(card, stick, "room1").run()
    assert report.ok and report.copied == 4
    assert_no_plaintext(stick, pcm_runs(np.concatenate(heard + [interrupted])))
    exported = tree(stick)
    out = tmp_path / "office"
    out.mkdir()
    assert main(["decrypt", "--identity", str(identity), str(stick), str(out)]) == 0
    assert "4 of 4 files decrypted" in capsys.readouterr().out
    entries = read_manifest(stick / "room1" / MANIFEST)
    for entry, samples in zip(entries, heard):
        wav = out / "room1" / entry["file"][: -len(".age")]
        assert header_agrees_with_data(wav)
        assert np.array_equal(wav_file_samples(wav), samples)
    recovered = out / "room1" / entries[3]["file"][: -len(".age")]
    assert entries[3]["recovered"] and header_agrees_with_data(recovered)
    kept = wav_file_samples(recovered)
    assert np.array_equal(kept, interrupted[:len(kept)])
    assert len(interrupted) - len(kept) <= CHUNK_BYTES // 2
    # A second run overwrites nothing; nothing is ever deleted from the source.
    decrypted = tree(out)
    assert main(["decrypt", "--identity", str(identity), str(stick), str(out)]) == 1
    assert capsys.readouterr().err.count("already exists, not overwritten") == 4
    assert tree(out) == decrypted and tree(stick) == exported


def test_decrypt_says_per_file_what_is_wrong(tmp_path, key, capsys):
    identity, public = key
    card = tmp_path / "card"
    record(encrypting_writer(card, public), [0.5, 0.5])
    other = tmp_path / "other-key.txt"
    subprocess.run(["age-keygen", "-o", str(other)], check=True, capture_output=True)
    out = tmp_path / "office"
    out.mkdir()
    source = tree(card)
    assert main(["decrypt", "-i", str(other), str(card), str(out)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(f"not encrypted to the key {other} (wrong key?)" in line for line in err)
    assert list(out.rglob("*.wav*")) == []
    # A damaged file is refused before it is opened; the other one is decrypted.
    damaged = sorted(card.rglob("*.wav.age"))[0]
    data = bytearray(damaged.read_bytes())
    data[-100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert main(["decrypt", "-i", str(identity), str(card), str(out)]) == 1
    captured = capsys.readouterr()
    assert f"edge: {damaged}: does not match its manifest entry (damaged or altered), not decrypted" in captured.err
    assert "1 of 2 files decrypted" in captured.out
    assert [p.name for p in out.rglob("*.wav")] == [sorted(card.rglob("*.wav.age"))[1].name[:-4]]
    assert main(["decrypt", "-i", str(tmp_path / "nokey.txt"), str(card), str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"edge: {tmp_path / 'nokey.txt'}: cannot read the key")
    assert set(tree(card)) == set(source)


def test_decrypt_into_a_read_only_folder_is_one_line(tmp_path, key):
    """A read-only destination (a write-protected stick, a folder of someone else's): one
    line and exit 2, not a traceback from mkdir. Root ignores permissions, so as root the
    folder is a read-only tmpfs in a mount namespace of the command's own."""
    identity, public = key
    card = tmp_path / "card"
    record(encrypting_writer(card, public), [0.5])
    source = tree(card)
    out = tmp_path / "office"
    out.mkdir()
    decrypt = [sys.executable, "-m", "edge", "decrypt", "-i", str(identity), str(card), str(out)]
    if os.geteuid() == 0:
        command = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                   f'mount -t tmpfs -o ro none "{out}" && exec "$@"', "sh", *decrypt]
    else:
        out.chmod(0o555)
        command = decrypt
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert re.fullmatch(rf"edge: {out}/\S+: cannot write the decrypted files there "
                        r"\((Read-only file system|Permission denied)\)\n", result.stderr), result.stderr
    assert tree(card) == source


def test_decrypt_with_something_else_than_a_secret_key_is_one_line(tmp_path, key, capsys):
    identity, public = key
    card = tmp_path / "card"
    record(encrypting_writer(card, public), [0.5, 0.5])
    (tmp_path / "office").mkdir()
    for content in (public + "\n", "", "\x00\xff garbage"):  # the public key, empty, anything
        (tmp_path / "key.txt").write_text(content)
        assert main(["decrypt", "-i", str(tmp_path / "key.txt"), str(card), str(tmp_path / "office")]) == 2
        assert capsys.readouterr().err == (
            f"edge: {tmp_path / 'key.txt'}: not a secret key (expected the file edge keygen wrote, with a line "
            "AGE-SECRET-KEY-1...; the age1... public key goes in the recorder's config)\n")


def test_decrypt_one_file_to_a_file_or_a_folder(tmp_path, key, capsys):
    identity, public = key
    card = tmp_path / "card"
    [samples] = record(encrypting_writer(card, public), [1.5])
    [path] = card.rglob("*.wav.age")
    assert main(["decrypt", "-i", str(identity), str(path), str(tmp_path / "one.wav")]) == 0
    assert np.array_equal(wav_file_samples(tmp_path / "one.wav"), samples)
    assert main(["decrypt", "-i", str(identity), str(path), str(tmp_path)]) == 0
    assert np.array_equal(wav_file_samples(tmp_path / path.name[:-4]), samples)


def test_plain_and_encrypted_cards_in_one_export_folder(tmp_path, key, capsys):
    """Two recorders (one encrypting) and one that turned encryption on half-way share a stick."""
    identity, public = key
    stick = tmp_path / "stick"
    stick.mkdir()
    plain_card, secret_card, switched = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    def prepared(writer):
        writer.prepare()
        return writer

    record(prepared(SegmentWriter(plain_card, "room1", "m", "v")), [0.5, 0.5])
    record(encrypting_writer(secret_card, public), [0.5, 0.5])
    record(prepared(SegmentWriter(switched, "room3", "m", "v")), [0.5])
    record(prepared(SegmentWriter(switched, "room3", "m", "v", segment_format=AgeWav.for_recipients([public]))),
           [0.5], day="2026-11-25")
    from edge.export import SegmentExporter

    for card, device in ((plain_card, "room1"), (secret_card, "room2"), (switched, "room3")):
        assert SegmentExporter(card, stick, device).run().ok
    names = {p.relative_to(stick).as_posix() for p in stick.rglob("*.wav*")}
    assert names == {
        "room1/20261124/000001_091000_room1.wav", "room1/20261124/000002_091100_room1.wav",
        "room2/20261124/000001_091000_room1.wav.age", "room2/20261124/000002_091100_room1.wav.age",
        "room3/20261124/000001_091000_room3.wav", "room3/20261125/000002_091000_room3.wav.age"}
    for device in ("room1", "room2", "room3"):
        result = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=stick / device,
                                capture_output=True, text=True)
        assert result.returncode == 0 and result.stdout.count(": OK") == 2, result.stdout
    out = tmp_path / "office"
    out.mkdir()
    assert main(["decrypt", "-i", str(identity), str(stick), str(out)]) == 0
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == {
        "room2/20261124/000001_091000_room1.wav", "room2/20261124/000002_091100_room1.wav",
        "room3/20261125/000002_091000_room3.wav"}


# -- the real daemon, killed like a power cut --------------------------------------------

KILLS = int(os.environ.get("EDGE_ENCRYPTED_POWER_CUTS", "10"))


def dead(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except FileNotFoundError:
        return True


def power_cut(daemon: subprocess.Popen) -> None:
    """Every process of the recorder dies at once: the daemon is frozen first so that it
    cannot notice its age processes dying, then they and it are killed."""
    daemon.send_signal(signal.SIGSTOP)
    children = [int(pid) for task in Path(f"/proc/{daemon.pid}/task").iterdir()
                for pid in (task / "children").read_text().split()]
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(timeout=30)
    wait_until(lambda: all(dead(pid) for pid in children), "the age processes to die")


def test_sigkill_with_encryption_leaves_no_plaintext_and_every_segment_decrypts(
        alsa, lesson, lesson_speech, tmp_path, key):
    identity, public = key
    stream = np.tile(lesson, 8)  # two minutes of lessons, read as fast as the CPU allows
    alsa.add("testmic", stream)
    fifo = alsa.add_fifo("fedmic")
    runs = pcm_runs(lesson)
    recordings = tmp_path / "rec"

    def config(device: str) -> Path:
        path = tmp_path / f"{device}.yaml"
        path.write_text(json.dumps({
            # The fed microphone stalls on purpose: it must not count as lost before the cut.
            "audio": {"device": device, "buffer_s": 120, "stall_timeout_s": 60},
            "storage": {"recordings_dir": str(recordings), "fsync_interval_s": 0.1, "min_free_mb": 0},
            "led": {"pin": None}, "service": {"status_file": str(tmp_path / "status.json")},
            "privacy": {"recipients": [public]}}))
        return path
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(60)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify)}

    def start_daemon(device: str = "testmic"):
        daemon = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(config(device))],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while b"READY=1" not in sock.recv(4096):
            pass
        return daemon

    # The first cut surely falls inside a segment with a sealed chunk: the daemon hears the lesson
    # up to the end of its second sentence, which alone is longer than one chunk, shorter than two.
    start, end = lesson_speech[1]
    assert CHUNK_S < end - start < 2 * CHUNK_S
    rng = random.Random(20261124)
    fed = feed(fifo, lesson[:round(end * 16000)])
    try:
        for number in range(KILLS):
            if number == 0:
                daemon = start_daemon("fedmic")
                # age's header alone is a few hundred bytes: a bigger file holds a sealed chunk.
                wait_until(lambda: any(part.stat().st_size > CHUNK_BYTES
                                       for part in recordings.rglob("*.wav.age.part")),
                           "a sealed chunk in the open segment", timeout=60)
            else:
                daemon = start_daemon()
                time.sleep(rng.uniform(0.2, 0.8))  # the random moment of the power cut
            power_cut(daemon)
            assert_no_plaintext(recordings, runs)  # before any recovery, too
            SegmentWriter(recordings, "x", "x", "x").prepare()  # what the next start does first
            assert_no_plaintext(recordings, runs)
        daemon = start_daemon()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0, daemon.stderr.read().decode()
    finally:
        sock.close()
        os.close(fed)
    entries = read_manifest(recordings / MANIFEST)
    assert_no_plaintext(recordings, runs)
    on_card = sorted(p.relative_to(recordings).as_posix() for p in recordings.rglob("*")
                     if p.is_file() and p.name not in (MANIFEST, CARD_STATE, DAYS_BEGUN))
    assert on_card == sorted(e["file"] for e in entries)  # no .part, sidecar or temporary left
    recovered = [e for e in entries if e["recovered"]]
    assert recovered, "no cut hit an open segment with a whole chunk: the test proved nothing"
    assert len(entries) > len(recovered)
    for entry in entries:
        path = recordings / entry["file"]
        assert entry["file"].endswith(".wav.age") and file_sha256(path) == entry["sha256"]
        result = age_decrypt(path, identity)
        decrypted = pcm_after_header(result.stdout)
        first = round(entry["start_s"] * 16000)
        assert np.array_equal(decrypted, stream[first:first + len(decrypted)]), entry["file"]
        if entry["recovered"]:
            # The count is the chunks age sealed whole; a kill as the segment closed leaves its
            # last chunk sealed too, beyond the count (edge.encryption.interrupted_age_wav_samples).
            assert entry["samples"] <= len(decrypted) <= entry["samples"] + CHUNK_BYTES // 2, entry["file"]
        else:
            assert result.returncode == 0 and len(decrypted) == entry["samples"], entry["file"]


def test_office_commands_need_no_fcntl(tmp_path, key):
    """Windows has no fcntl: `edge list` and `edge decrypt` must not need it."""
    if "fcntl" in sys.builtin_module_names:
        pytest.skip("fcntl is built into this Python (as in Debian 13's): a stub cannot hide it")
    identity, public = key
    card = tmp_path / "card"
    [samples] = record(encrypting_writer(card, public), [0.5])
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "fcntl.py").write_text("raise ImportError('no fcntl on this system (test)')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(stubs), str(Path(__file__).parent.parent)])}
    config = tmp_path / "edge.yaml"
    config.write_text(json.dumps({"storage": {"recordings_dir": str(card)}}))
    out = tmp_path / "office"
    out.mkdir()
    for argv in (["list", "--config", str(config)], ["decrypt", "-i", str(identity), str(card), str(out)]):
        result = subprocess.run([sys.executable, "-m", "edge", *argv], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    assert np.array_equal(wav_file_samples(next(out.rglob("*.wav"))), samples)
    blocked = subprocess.run([sys.executable, "-c", "import fcntl"], env=env, capture_output=True)
    assert blocked.returncode != 0  # the stub really hides it


def test_power_cut_below_the_page_cache_loses_at_most_the_stated_audio(tmp_path, key, lazyfs_built):
    """On LazyFS, whose clear-cache drops every write not fsynced, as a pulled plug does: the
    loss is the fsync interval plus the chunk age was filling, whatever the cut's moment."""
    identity, public = key
    fsync_interval_s = 0.5
    limit = round((fsync_interval_s + CHUNK_S) * 16000)
    fs = lazyfs_built.LazyFs(tmp_path / "card")
    root = fs.mount / "rec"
    try:
        for number, seconds in enumerate((2.5, 4.4, 6.1, 7.3, 9.8)):
            writer = encrypting_writer(root, public, fsync_interval_s)
            final = writer.open(start(offset=100.0 * number))
            samples = audio(seconds, seed=number)
            for frame in np.array_split(samples, len(samples) // FRAME):
                writer.append(frame)
                # A microphone delivers 32 ms at a time: age has sealed what it can between two.
                written = 44 + 2 * (writer._samples)
                wait_until(lambda: age_has_sealed(writer._file, final, written), "age to catch up")
            os.kill(writer._file._age.pid, signal.SIGKILL)
            fs.clear_cache()  # the power goes
            writer._file.abandon()
            writer._file = None
            SegmentWriter(root, "room1", "x", "x").prepare()  # the next start
            entries = [e for e in read_manifest(root / MANIFEST) if e["start_s"] == 100.0 * number]
            if entries:
                kept = pcm_after_header(age_decrypt(root / entries[0]["file"], identity).stdout)
            else:  # no whole chunk was synced: the recovery removed the empty file
                kept = samples[:0]
                assert not final.exists() and not final.with_name(final.name + ".part").exists()
            assert np.array_equal(kept, samples[:len(kept)])
            assert len(samples) - len(kept) <= limit, f"cut {number}: lost {len(samples) - len(kept)} samples"
    finally:
        fs.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_card_stops_the_encrypted_segment_like_a_plain_one(tmp_path, key):
    from edge.storage import StorageUnavailable

    identity, public = key
    card = tmp_path / "card"
    card.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(card)], check=True)
    try:
        writer = encrypting_writer(card, public, fsync_interval_s=0.1)
        writer.open(start())
        samples = audio(30.0, seed=4)  # 960 kB: more than the card holds
        with pytest.raises(StorageUnavailable, match=r"\.wav\.age\.part: age: .*no space left on device"):
            for frame in np.array_split(samples, len(samples) // FRAME):
                writer.append(frame)
            writer.close(END)
        assert not writer.is_open
        # Space comes back: the next start lists what was kept.
        subprocess.run(["mount", "-o", "remount,size=2m", str(card)], check=True)
        [entry] = SegmentWriter(card, "room1", "x", "x").prepare()
        assert entry["recovered"] and not list(card.rglob("*.part*"))
        kept = pcm_after_header(age_decrypt(card / entry["file"], identity).stdout)
        assert len(kept) > 16000 and np.array_equal(kept, samples[:len(kept)])
        assert_no_plaintext(card, pcm_runs(samples))
    finally:
        subprocess.run(["umount", str(card)], check=True)


def fake_age(tmp_path: Path, monkeypatch, script: str) -> None:
    """An `age` command first on PATH that runs the shell ``script`` instead of the real one."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    (folder / "age").write_text("#!/bin/sh\n" + script + "\n")
    (folder / "age").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def encrypt_half_a_second(folder: Path, segments: AgeWav) -> tuple[Path, np.ndarray]:
    """A closed segment of 0.5 s written through ``segments``: its file and its samples."""
    writer = SegmentWriter(folder, "room1", "m", "v", 1.0, segments)
    writer.prepare()
    writer.open(start())
    samples = audio(0.5)
    writer.append(samples)
    return folder / writer.close(END)["file"], samples


def test_every_recipient_reaches_age_and_each_can_decrypt(tmp_path, key):
    identity, public = key
    other = tmp_path / "other-key.txt"
    subprocess.run(["age-keygen", "-o", str(other)], check=True, capture_output=True)
    other_public = subprocess.run(["age-keygen", "-y", str(other)], check=True, capture_output=True,
                                  text=True).stdout.strip()
    listed = tmp_path / "recipients.txt"
    listed.write_text(f"# the office\n\n{other_public}\n")
    segments = AgeWav.for_recipients([f"  {public}\t", f" {listed} "])
    assert segments.arguments == ["-r", public, "-R", str(listed)]
    encrypted, samples = encrypt_half_a_second(tmp_path / "card", segments)
    for secret in (identity, other):
        result = age_decrypt(encrypted, secret)
        assert result.returncode == 0 and np.array_equal(pcm_after_header(result.stdout), samples)


@pytest.mark.skipif(shutil.which("ssh-keygen") is None,
                    reason="ssh-keygen is not installed (make test installs openssh-client when run as root)")
def test_an_ssh_key_is_a_recipient_too(tmp_path, key):
    ssh = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "office", "-f", str(ssh)], check=True)
    ssh_public = ssh.with_name("id_ed25519.pub").read_text().strip()
    segments = AgeWav.for_recipients([key[1], ssh_public])
    assert segments.arguments == ["-r", key[1], "-r", ssh_public]
    encrypted, samples = encrypt_half_a_second(tmp_path / "card", segments)
    for secret in (key[0], ssh):
        result = age_decrypt(encrypted, secret)
        assert result.returncode == 0 and np.array_equal(pcm_after_header(result.stdout), samples)


def test_recipient_mistakes_are_one_line_naming_the_key_or_file(tmp_path, key):
    secret = key[0].read_text().splitlines()[-1].lower()  # lower case is still a secret key
    comments, binary, with_secret, bad = (tmp_path / name for name in ("comments.txt", "binary.txt",
                                                                       "secret.txt", "bad.txt"))
    comments.write_text("  # the office's key, to come\n\n")
    binary.write_bytes(b"\xff\xfe\x00age1")
    with_secret.write_text(f"{key[1]}\n   {secret}\n")
    bad.write_text("hello\n")
    origin = "privacy.recipients"
    for recipients, message in (
            ([secret], f"{origin}: {secret[:19]}... is a secret key (an identity), not a public key: give "
                       "the 'age1...' line that edge keygen printed, and keep the secret key off the device"),
            ([str(tmp_path / "none.txt")], f"{origin}: {tmp_path / 'none.txt'}: cannot read recipients file "
                                           "(No such file or directory); expected a file of 'age1...' lines"),
            ([str(binary)], f"{origin}: {binary}: not a text file of 'age1...' lines"),
            ([str(with_secret)], f"{origin}: {with_secret}: line 2 is a secret key (an identity), not a "
                                 "public key; keep secret keys off the device"),
            ([str(comments)], f"{origin}: {comments}: no public key in the recipients file"),
            ([], f"{origin}: empty list; give at least one 'age1...' public key")):
        with pytest.raises(EdgeError) as raised:
            recipient_arguments(recipients)
        assert str(raised.value) == message
    # What age itself finds wrong with a file is said in age's words, on the same line.
    with pytest.raises(EdgeError) as raised:
        recipient_arguments([str(bad)])
    said = str(raised.value)
    assert said.startswith(f"{origin}: {bad}: not a valid recipients file (") and said.endswith(")")
    assert "error:" not in said and "\n" not in said and len(said) > len(f"{origin}: {bad}: not a valid recipients file ()")


def test_what_age_says_about_a_key_is_passed_on_as_it_is(tmp_path, monkeypatch):
    for script, reason in (
            ('echo "age: error: malformed recipient: error: bad checksum" >&2; exit 1',
             "malformed recipient: error: bad checksum"),
            ('echo "Segmentation fault" >&2; exit 139', "Segmentation fault")):  # no error line
        fake_age(tmp_path, monkeypatch, script)
        with pytest.raises(EdgeError) as raised:
            recipient_arguments(["age1abc"])
        assert str(raised.value) == f"privacy.recipients: 'age1abc' is not a valid age public key ({reason})"


def test_checking_a_key_neither_reads_the_terminal_nor_writes_to_it(key, capfd):
    # `edge doctor` and `edge run` check the keys at start, often in a terminal: here a stdin
    # nobody types into (whatever reads it waits until it is closed) and a captured stdout.
    typed_into, nobody_types = os.pipe()
    terminal = os.dup(0)
    os.dup2(typed_into, 0)
    checked = []
    checker = threading.Thread(target=lambda: checked.append(recipient_arguments([key[1]])), daemon=True)
    try:
        checker.start()
        checker.join(timeout=20)
        waited_for_input = checker.is_alive()
    finally:
        os.close(nobody_types)  # an age that reads its input ends now
        checker.join()
        os.dup2(terminal, 0)
        os.close(terminal)
        os.close(typed_into)
    assert not waited_for_input and checked == [["-r", key[1]]] and capfd.readouterr().out == ""


def age_header_end(path: Path) -> int:
    """Where an age file's payload nonce begins: after the header's MAC line."""
    data = path.read_bytes()
    return data.index(b"\n", data.index(b"\n--- ") + 1) + 1


def test_an_encrypted_segment_s_samples_are_counted_from_its_size(tmp_path, key):
    segments = AgeWav.for_recipients([key[1]])
    in_first_chunk = (CHUNK_BYTES - 44) // 2  # the header takes 44 bytes of it
    for count in (0, 1, in_first_chunk, in_first_chunk + 1, 70000):
        path = tmp_path / f"{count}.wav.age"
        stream = segments.create(path)
        stream.write(audio(count / 16000).tobytes())
        stream.close()
        counted = age_wav_samples(path)
        assert counted == count and type(counted) is int  # an integer in the manifest
    # A damaged payload is counted by its size all the same; a damaged header holds nothing.
    damaged = bytearray(path.read_bytes())
    inside = age_header_end(path) + 5000
    damaged[inside:inside + 7] = b"\n--- x\n"
    path.write_bytes(damaged)
    assert age_wav_samples(path) == 70000
    path.write_bytes(damaged[:age_header_end(path) - 3])
    assert age_wav_samples(path) == 0 and interrupted_age_wav_samples(path) == 0


def test_an_interrupted_encrypted_segment_counts_exactly_the_chunks_age_decrypts(tmp_path, key):
    identity, public = key
    whole = tmp_path / "whole.wav.age"
    stream = AgeWav.for_recipients([public]).create(whole)
    stream.write(audio(5.0).tobytes())  # two whole chunks and part of a third
    stream.close()
    data, payload = whole.read_bytes(), age_header_end(whole) + 16
    sealed = CHUNK_BYTES + 16
    assert age_payload_bytes(whole) == len(data) - payload
    for cut in (payload - 6, payload, payload + sealed - 1, payload + sealed, payload + 2 * sealed - 1,
                payload + 2 * sealed):
        part = tmp_path / "cut.wav.age.part"
        part.write_bytes(data[:cut])
        decrypted = age_decrypt(part, identity).stdout
        assert interrupted_age_wav_samples(part) == max(len(decrypted) - 44, 0) // 2, cut
        assert age_payload_bytes(part) == max(cut - payload, 0)


def test_only_the_first_64_kib_are_read_for_an_age_header(tmp_path):
    # A file whose beginning is no age header is nothing that decrypts, whatever comes after.
    path = tmp_path / "garbage.wav.age"
    path.write_bytes(b"\x00" * (64 * 1024) + b"\n--- x\n" + b"\x00" * 1000)
    assert age_payload_bytes(path) is None and age_wav_samples(path) == 0


def test_the_streamed_header_is_a_plain_segment_s_but_for_its_sizes():
    header = streaming_wav_header()
    assert header[12:36] == wav_header(0)[12:36]  # 16 kHz, mono, 16 bit: the same fmt chunk
    assert header[4:8] == header[40:44] == b"\xff\xff\xff\xff" and len(header) == 44


def test_an_encrypted_part_is_made_like_a_plain_one_never_over_another(tmp_path, key):
    segments = AgeWav.for_recipients([key[1]])
    plain = PlainWav().create(tmp_path / "plain.wav.part")
    plain.close()
    stream = segments.create(tmp_path / "a.wav.age.part")
    try:
        # Its own session: a Ctrl-C meant for `edge run` does not reach age.
        assert os.getsid(stream._age.pid) == stream._age.pid != os.getsid(0)
    finally:
        stream.close()
    mode = stat.S_IMODE((tmp_path / "a.wav.age.part").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.wav.part").stat().st_mode)
    before = (tmp_path / "a.wav.age.part").read_bytes()
    with pytest.raises(FileExistsError):
        segments.create(tmp_path / "a.wav.age.part")
    assert (tmp_path / "a.wav.age.part").read_bytes() == before


def test_an_age_that_fails_is_an_os_error_saying_why(tmp_path, key, monkeypatch):
    segments = AgeWav(["-r", key[1]])
    stream = segments.create(tmp_path / "killed.wav.age.part")
    os.kill(stream._age.pid, signal.SIGKILL)
    stream._age.wait()
    with pytest.raises(OSError) as raised:
        stream.close()
    assert (raised.value.errno, raised.value.strerror) == (errno.EIO, "age: killed by SIGKILL")
    for script, number, reason in (
            ("cat >/dev/null; echo 'age: error: write: no space left on device' >&2; exit 1",
             errno.ENOSPC, "write: no space left on device"),
            (r"cat >/dev/null; printf 'age: error: disk \377 gone: error: 5\n' >&2; exit 1",
             errno.EIO, "disk \ufffd gone: error: 5"),
            ("cat >/dev/null; exit 3", errno.EIO, "exit status 3")):
        fake_age(tmp_path, monkeypatch, script)
        stream = segments.create(tmp_path / f"{number}-{len(reason)}.wav.age.part")
        stream.write(b"\0" * 1000)
        with pytest.raises(OSError) as raised:
            stream.close()
        assert (raised.value.errno, raised.value.strerror) == (number, f"age: {reason}")
    # An age that stops reading fails the next write, even if it said all was well.
    fake_age(tmp_path, monkeypatch, "exit 0")
    stream = segments.create(tmp_path / "quit.wav.age.part")
    stream._age.wait()
    with pytest.raises(OSError) as raised:
        stream.write(b"\0" * 1_000_000)
    assert (raised.value.errno, raised.value.strerror) == (errno.EIO, "age: exit status 0")


def test_an_age_that_cannot_start_is_an_os_error_and_leaks_nothing(tmp_path, key, monkeypatch):
    fake_age(tmp_path, monkeypatch, "")
    (tmp_path / "bin" / "age").write_text("#!/nonexistent/interpreter\n")
    gc.collect()  # what earlier tests left for the collector closes now, not in the count below
    open_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        AgeWav(["-r", key[1]]).create(tmp_path / "a.wav.age.part")
    assert len(os.listdir("/proc/self/fd")) == open_before


def test_a_hung_age_is_killed_not_waited_for_for_ever(tmp_path, key, monkeypatch):
    monkeypatch.setattr(edge.encryption, "STOP_WAIT_S", 0.2)
    # Ages that hang on: with their input closed (a write then fails, or the close's flush),
    # reading nothing, or after reading it all.
    for number, (script, end) in enumerate((
            ("exec 0<&-; exec sleep 600", lambda stream: stream.write(b"\0" * 1_000_000)),
            ("exec sleep 600", lambda stream: stream.abandon()),
            ("cat >/dev/null; exec sleep 600", lambda stream: stream.close()),
            ("exec 0<&-; exec sleep 600", lambda stream: stream.close()))):
        fake_age(tmp_path, monkeypatch, script)
        stream = AgeWav(["-r", key[1]]).create(tmp_path / f"{number}.wav.age.part")
        if "0<&-" in script:
            wait_until(lambda: not os.path.exists(f"/proc/{stream._age.pid}/fd/0"), "age to close its input")
        ended = []

        def finish():
            try:
                end(stream)
            except (OSError, subprocess.SubprocessError) as failure:
                ended.append(failure)
            else:
                ended.append(None)
        ender = threading.Thread(target=finish, daemon=True)
        ender.start()
        ender.join(timeout=20)
        try:
            assert ended, f"{script}: still waiting"
            if number < 2:
                assert stream._age.returncode == -signal.SIGKILL
                assert ended[0] is None or ended[0].strerror == "age: killed by SIGKILL"
        finally:
            stream._age.kill()


def test_without_age_installed_recipients_say_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EdgeError) as raised:
        recipient_arguments(["age1abc"])
    assert str(raised.value) == f"age: command not found; {edge.encryption.INSTALL_HINT}"
