"""Power cuts: a real daemon process on a real ALSA capture, killed with SIGKILL at random
moments; after every restart the card must be whole (see cardcheck)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time

import numpy as np

from cardcheck import assert_card_consistent
from edge.storage import SegmentWriter

KILLS = int(os.environ.get("EDGE_POWER_CUTS", "20"))
SEED = int(os.environ.get("EDGE_POWER_CUT_SEED", "20261124"))


def start_daemon(config, notify_path, env):
    env = {**env, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "200000"}
    return subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(config)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(sock, wanted: bytes, timeout: float = 30.0) -> list[bytes]:
    """Datagrams from the daemon until one contains ``wanted``."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            seen.append(sock.recv(4096))
        except socket.timeout:
            raise AssertionError(f"no {wanted!r} from the daemon; got {seen}") from None
        if wanted in seen[-1]:
            return seen


def test_sigkill_at_random_moments_never_loses_or_corrupts_a_segment(alsa, lesson, tmp_path):
    stream = np.tile(lesson, 8)  # two minutes of lessons, read as fast as the CPU allows
    alsa.add("testmic", stream)
    recordings = tmp_path / "rec"
    config = tmp_path / "edge.yaml"
    config.write_text(
        "audio: {device: testmic, buffer_s: 120}\n"
        f"storage: {{recordings_dir: {recordings}, fsync_interval_s: 0.1, min_free_mb: 0}}\n"
        f"led: {{pin: null}}\nservice: {{status_file: {tmp_path / 'status.json'}}}\n")
    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    rng = random.Random(SEED)
    recovered = 0
    try:
        for _ in range(KILLS):
            daemon = start_daemon(config, notify_path, os.environ)
            try:
                wait_for(sock, b"READY=1")
                time.sleep(rng.uniform(0.0, 0.6))  # the random moment of the power cut
            finally:
                daemon.send_signal(signal.SIGKILL)
                daemon.wait(timeout=30)
            # What the next start does first: finish what the cut interrupted.
            recovered += len(SegmentWriter(recordings, "x", "x", "x").prepare())
            assert_card_consistent(recordings, stream)
        # A clean stop after all that: the open segment is closed and kept.
        daemon = start_daemon(config, notify_path, os.environ)
        seen = wait_for(sock, b"READY=1")
        seen += wait_for(sock, b"WATCHDOG=1")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0, daemon.stderr.read().decode()
    finally:
        sock.close()
    entries = assert_card_consistent(recordings, stream)
    assert len(entries) > KILLS  # segments were being written while the cuts came
    assert sum(e["recovered"] for e in entries) == recovered
    assert recovered > 0, "no cut hit an open segment: the test proved nothing"
