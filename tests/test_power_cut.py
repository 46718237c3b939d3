"""Power cuts below the page cache: a real daemon on a real ALSA capture records onto a
LazyFS mount; at random moments it is SIGKILLed and every write it had not fsynced is dropped
(LazyFS's clear-cache), as a pulled plug does to an SD card. The daemon is then restarted
and recovers by itself. After every cut: each open ``.part`` is a valid WAV of the audio it
kept, no more than ``fsync_interval_s`` + one window of the audio it had written is gone once
the restarted daemon has finished it, and every manifest line is true.

The moments are random points in the daemon's progress (bytes it has written), not in wall
time, so a slower machine cuts at the same places of the recording; a fifth of the cuts
fall while the daemon is still starting (loading, recovering the previous cut).

LazyFS reports 0 bytes free, so the test config sets ``storage.min_free_mb: 0`` (the
free-space guard accepts free >= floor, so 0 free is enough room at floor 0)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from cardcheck import assert_card_consistent, header_agrees_with_data
from conftest import NotifySocket
from edge.plain_wav import HEADER_BYTES
from edge.storage import MANIFEST, file_sha256, read_manifest
from edge.wavio import read_wav_16k

CUTS = int(os.environ.get("EDGE_POWER_CUTS", "40"))
SEED = int(os.environ.get("EDGE_POWER_CUT_SEED", "20261124"))
RATE = 16000
WINDOW = 512
FSYNC_INTERVAL_S = 1.0  # the default: the README's promise as it stands
LOSS_BOUND = int(FSYNC_INTERVAL_S * RATE) + WINDOW  # samples

class Daemon:
    """`edge run` as systemd starts it: NOTIFY_SOCKET set, so READY=1 says it is listening
    (which is after it finished whatever the previous cut interrupted)."""

    def __init__(self, config: Path, notify: NotifySocket, log: Path):
        self.notify = notify
        self.log = log
        with open(log, "ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge", "run", "--config", str(config)],
                env={**os.environ, "NOTIFY_SOCKET": notify.path},
                stdout=subprocess.DEVNULL, stderr=stderr)

    def wait_ready(self) -> None:
        try:
            self.notify.wait_for(b"READY=1", self.process, timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log.read_text()[-2000:]}") from None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)


def samples_by_segment(root: Path) -> dict[str, int]:
    """Audio in every segment file, finished or open, by its final name (from file sizes)."""
    found = {}
    for path in root.glob("*/*"):
        if path.name.endswith((".wav", ".wav.part")):
            name = path.relative_to(root).as_posix().removesuffix(".part")
            found[name] = max(path.stat().st_size - HEADER_BYTES, 0) // 2
    return found


def written_bytes(root: Path) -> int:
    total = 0
    for path in root.glob("*/*"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass  # renamed under us
    return total


def wait_for_progress(daemon: Daemon, condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert daemon.process.poll() is None, f"daemon exited: {daemon.log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def open_segment_reached(root: Path, samples: int):
    def reached() -> bool:
        for path in root.glob("*/*.wav.part"):
            try:
                if path.stat().st_size >= HEADER_BYTES + 2 * samples:
                    return True
            except FileNotFoundError:
                pass
        return False
    return reached


def assert_parts_are_valid_wavs(root: Path) -> None:
    """After the cut and before any repair: what the README promises of a .part."""
    for part in root.glob("*/*.wav.part"):
        size = part.stat().st_size
        if size == 0:
            continue  # created, header not yet synced: recovery removes it
        assert header_agrees_with_data(part), f"{part.name}: header does not match its {size} bytes"
        with wave.open(str(part)) as wav:
            read = len(wav.readframes(wav.getnframes())) // 2
        assert read == (size - HEADER_BYTES) // 2, f"{part.name}: wave reads {read} samples"


def assert_listed_entries_true(root: Path, stream: np.ndarray, verified: set) -> list[dict]:
    """Every manifest line names a whole file with its hash, sample count and audio (those
    not in ``verified`` yet are checked and added: a finished segment never changes)."""
    entries = read_manifest(root / MANIFEST)
    for entry in entries:
        if entry["file"] in verified:
            continue
        path = root / entry["file"]
        assert header_agrees_with_data(path), entry["file"]
        assert file_sha256(path) == entry["sha256"], entry["file"]
        assert entry["samples"] == (path.stat().st_size - HEADER_BYTES) // 2, entry["file"]
        audio = read_wav_16k(path)
        first = round(entry["start_s"] * RATE)
        assert np.array_equal(audio, stream[first:first + len(audio)]), entry["file"]
        verified.add(entry["file"])
    return entries


def test_power_cuts_lose_at_most_the_unsynced_audio_and_the_daemon_recovers(alsa, lesson, tmp_path, lazyfs_built):
    # Five minutes of lessons, read as fast as the CPU allows: far more than a daemon gets
    # through before its cut.
    stream = np.tile(lesson, 20)
    alsa.add("testmic", stream)
    fs = lazyfs_built.LazyFs(tmp_path / "card")
    recordings = fs.mount / "rec"
    config = tmp_path / "edge.yaml"
    config.write_text(
        "audio: {device: testmic, buffer_s: 120}\n"
        f"storage: {{recordings_dir: {recordings}, fsync_interval_s: {FSYNC_INTERVAL_S}, min_free_mb: 0}}\n"
        f"led: {{pin: null}}\nservice: {{status_file: {tmp_path / 'status.json'}}}\n")
    notify = NotifySocket(tmp_path / "notify.sock")
    log = tmp_path / "daemon.log"
    rng = random.Random(SEED)
    pending: list[tuple] = []  # (page cache, medium) after each cut, until a daemon recovered it
    losses, kinds, startup_s = [], [], None
    verified: set = set()  # finished segments already checked
    daemon = None
    try:
        for _ in range(CUTS):
            started = time.monotonic()
            daemon = Daemon(config, notify, log)
            kind = "starting" if startup_s is not None and rng.random() < 0.2 else rng.choice(
                ["recording", "anywhere"])
            kinds.append(kind)
            if kind == "starting":
                # The audio clock of a starting daemon is the machine's: a fraction of the
                # time the last start took, so the cut falls in start-up on any machine.
                time.sleep(rng.uniform(0.0, startup_s))  # the random moment, not synchronisation
            else:
                daemon.wait_ready()
                startup_s = time.monotonic() - started
                for before, kept in pending:
                    losses.append(check_recovered(recordings, before, kept, stream, verified))
                pending = []
                if kind == "recording":
                    wait_for_progress(daemon, open_segment_reached(recordings, rng.randrange(3 * RATE // 2)),
                                      "an open segment to grow")
                else:
                    target = written_bytes(recordings) + rng.randrange(4 * 2 * RATE)
                    wait_for_progress(daemon, lambda: written_bytes(recordings) >= target, "audio written")
            daemon.kill()
            before = samples_by_segment(recordings)  # what the page cache had
            fs.clear_cache()
            assert_parts_are_valid_wavs(recordings)
            pending.append((before, samples_by_segment(recordings)))
        daemon = Daemon(config, notify, log)
        daemon.wait_ready()
        for before, kept in pending:
            losses.append(check_recovered(recordings, before, kept, stream, verified))
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=60) == 0, log.read_text()[-2000:]
        fs.clear_cache()  # all that a clean stop finished is on the medium
        entries = assert_card_consistent(recordings, stream)
    finally:
        notify.close()
        if daemon is not None and daemon.process.poll() is None:
            daemon.process.kill()
        fs.close()
    recovered = [e for e in entries if e["recovered"]]
    print(f"\n{CUTS} cuts ({', '.join(f'{k} {kinds.count(k)}' for k in sorted(set(kinds)))}), "
          f"{len(entries)} segments, {len(recovered)} recovered; audio lost per cut: "
          f"max {max(losses) / RATE:.3f} s, mean {np.mean(losses) / RATE:.3f} s "
          f"(bound {LOSS_BOUND / RATE:.3f} s)")
    assert recovered, "no cut hit an open segment: the test proved nothing"
    assert max(losses) <= LOSS_BOUND


def check_recovered(root: Path, before: dict[str, int], on_medium: dict[str, int],
                    stream: np.ndarray, verified: set) -> int:
    """Once a daemon has started after a cut: every segment the cut left with audio on the
    medium is listed, with no more audio gone than the page cache had; returns the samples
    lost. (One left empty is removed, and its name may be taken again by the new daemon.)"""
    listed = {e["file"]: e for e in assert_listed_entries_true(root, stream, verified)}
    lost = 0
    for name, had in before.items():
        kept = on_medium.get(name, 0)
        if kept > 0:
            assert name in listed, f"{name}: left unlisted after recovery: {sorted(p.name for p in (root / name).parent.iterdir())}, {on_medium}"
            assert listed[name]["samples"] == kept, f"{name}: recovery did not keep all the medium had"
        assert had - kept <= LOSS_BOUND, f"{name}: {had - kept} of {had} samples lost"
        lost += max(had - kept, 0)
    return lost
