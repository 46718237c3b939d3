"""`edge run` started the way systemd starts it (NOTIFY_SOCKET, WATCHDOG_USEC,
STATE_DIRECTORY, SIGTERM to stop), on a real ALSA file-plugin capture; every wait is on
something the daemon does (a datagram, a file), bounded in time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from cardcheck import assert_card_consistent
from conftest import NotifySocket, wait_until
from edge.plain_wav import HEADER_BYTES
from edge.storage import MANIFEST, read_manifest


class Service:
    """The daemon as a child process, with the socket systemd would listen on."""

    def __init__(self, tmp_path: Path, config_text: str, env: dict | None = None, cwd: Path | None = None):
        self.config = tmp_path / "edge.yaml"
        self.config.write_text(config_text)
        self.notify = NotifySocket(tmp_path / "notify.sock")
        self.log = tmp_path / "daemon.log"
        with open(self.log, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge", "run", "--config", str(self.config)],
                env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), **(env or {})},
                cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr)

    def wait_for(self, wanted: bytes, times: int = 1) -> None:
        """Until the daemon has sent ``times`` datagrams containing ``wanted``."""
        try:
            self.notify.wait_for(wanted, self.process, times)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log.read_text()[-2000:]}") from None

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.notify.close()


def open_part(root: Path, seconds: float):
    def found():
        for part in root.glob("*/*.wav.part"):
            if part.stat().st_size >= HEADER_BYTES + 2 * int(seconds * 16000):
                return True
        return False
    return found


def test_sigterm_closes_the_open_segment_and_keeps_its_audio(alsa, lesson, tmp_path):
    # Pauses under min_silence_ms stay inside the segment: with a long minimum silence the
    # whole stream is one segment, open at whatever moment SIGTERM comes.
    stream = np.tile(lesson, 20)
    alsa.add("testmic", stream)
    recordings = tmp_path / "rec"
    service = Service(tmp_path, "audio: {device: testmic, buffer_s: 120}\n"
                      "segmenter: {min_silence_ms: 60000}\n"
                      f"storage: {{recordings_dir: {recordings}, min_free_mb: 0}}\n"
                      f"led: {{pin: null}}\nservice: {{status_file: {tmp_path / 'status.json'}}}\n")
    try:
        service.wait_for(b"READY=1")
        wait_until(open_part(recordings, seconds=2.0), "a segment with 2 s of audio", timeout=60)
        assert service.stop() == 0, service.log.read_text()[-2000:]
    finally:
        service.close()
    entries = assert_card_consistent(recordings, stream)
    assert len(entries) == 1 and entries[0]["recovered"] is False
    assert entries[0]["duration_s"] >= 2.0


def test_relative_paths_are_under_the_state_and_runtime_directories(alsa, lesson, tmp_path):
    alsa.add("testmic", np.tile(lesson, 4))
    state, runtime = tmp_path / "state", tmp_path / "run"
    state.mkdir()
    runtime.mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    service = Service(tmp_path, "audio: {device: testmic, buffer_s: 120}\n"
                      "storage: {recordings_dir: rec, min_free_mb: 0}\n"
                      "led: {pin: null}\nservice: {status_file: status.json}\n",
                      env={"STATE_DIRECTORY": str(state), "RUNTIME_DIRECTORY": str(runtime)}, cwd=elsewhere)
    try:
        service.wait_for(b"READY=1")
        wait_until(lambda: read_manifest(state / "rec" / MANIFEST), "a segment under $STATE_DIRECTORY")
        # Rewritten every few seconds: in memory (systemd's tmpfs), never on the card.
        wait_until((runtime / "status.json").exists, "the status under $RUNTIME_DIRECTORY")
        assert service.stop() == 0
    finally:
        service.close()
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in state.iterdir()) == ["rec"]
    assert_card_consistent(state / "rec")


def test_each_part_of_the_start_is_given_the_start_timeout_of_its_own(alsa, lesson, tmp_path):
    from edge.notify import START_PART_S

    alsa.add("testmic", np.tile(lesson, 4))
    service = Service(tmp_path, "audio: {device: testmic, buffer_s: 120}\n"
                      f"storage: {{recordings_dir: {tmp_path / 'rec'}, min_free_mb: 0}}\n"
                      f"led: {{pin: null}}\nservice: {{status_file: {tmp_path / 'status.json'}}}\n")
    try:
        service.wait_for(b"READY=1")
        assert service.stop() == 0
    finally:
        service.close()
    sent = [data for pid, data in service.notify.received if pid == service.process.pid]
    # Loading the model, finishing what a power cut left on the card, opening the microphone:
    # a slow start that moves on is not killed and begun again.
    extend = f"EXTEND_TIMEOUT_USEC={START_PART_S * 1_000_000}".encode()
    assert sent[:sent.index(b"READY=1")] == [extend] * 3


def test_outside_systemd_the_status_is_in_the_sessions_runtime_directory(alsa, lesson, tmp_path):
    alsa.add("testmic", np.tile(lesson, 4))
    session = tmp_path / "user-run"
    session.mkdir(mode=0o700)
    service = Service(tmp_path, "audio: {device: testmic, buffer_s: 120}\n"
                      f"storage: {{recordings_dir: {tmp_path / 'rec'}, min_free_mb: 0}}\n"
                      "led: {pin: null}\n", env={"XDG_RUNTIME_DIR": str(session)}, cwd=tmp_path)
    try:
        service.wait_for(b"READY=1")
        status = session / "edge-recorder" / "status.json"
        wait_until(status.exists, "the status under $XDG_RUNTIME_DIR/edge-recorder")
        assert service.stop() == 0
    finally:
        service.close()
    assert not (tmp_path / "status.json").exists()


def test_microphone_missing_at_boot_is_waited_for_with_watchdog_pings(alsa, lesson, tmp_path):
    raw = alsa.add("testmic", np.tile(lesson, 4))
    unplugged = raw.with_name("unplugged.raw")
    raw.rename(unplugged)  # the PCM exists, its device does not open: a USB mic not yet there
    recordings = tmp_path / "rec"
    service = Service(tmp_path, "audio: {device: testmic, buffer_s: 120, reopen_backoff_s: 0.05,"
                      " reopen_backoff_max_s: 0.2}\n"
                      f"storage: {{recordings_dir: {recordings}, min_free_mb: 0}}\n"
                      f"led: {{pin: null}}\nservice: {{status_file: {tmp_path / 'status.json'}}}\n",
                      env={"WATCHDOG_USEC": "200000"})
    try:
        service.wait_for(b"READY=1")
        service.wait_for(b"STATUS=mic missing")
        # Waiting for the microphone is the daemon doing its job: systemd must hear so.
        service.wait_for(b"WATCHDOG=1", times=2)
        assert read_manifest(recordings / MANIFEST) == []
        unplugged.rename(raw)
        wait_until(lambda: read_manifest(recordings / MANIFEST), "a segment once the microphone is there")
        assert service.stop() == 0, service.log.read_text()[-2000:]
    finally:
        service.close()
    entries = assert_card_consistent(recordings)
    assert entries[0]["mic_gaps"] and entries[0]["mic_gaps"][0]["start"] < entries[0]["mic_gaps"][0]["end"]
