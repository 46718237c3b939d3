"""A capture that hangs instead of failing, on the real PortAudio/ALSA path in a real daemon.

The microphone is ALSA's file plugin reading a FIFO. A feeder that is SIGSTOPped keeps the
FIFO open without writing: PortAudio's capture thread then blocks in read(), where nothing in
the process can end it. The daemon must notice, keep trying to reopen without ever blocking,
record again once audio returns, and stop promptly while the capture is stuck.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from cardcheck import assert_card_consistent
from conftest import LESSON_WAV, RATE, Daemon, wait_until
from edge.capture import BLOCK
from edge.config import load_config
from edge.status import read_status
from edge.storage import MANIFEST, read_manifest

SPEED = 4  # the feeder writes audio four times faster than a microphone would
# Starting a Python process with PortAudio's device scan, on a loaded two-core machine.
PROCESS_SLACK_S = 3.0

FEEDER = """
import os, sys, time
from edge.wavio import read_wav_16k
samples = read_wav_16k(sys.argv[2]).astype("<i2")
block = int(sys.argv[4])  # the capture's: the file plugin pads a shorter read with silence
blocks = [samples[i:i + block].tobytes() for i in range(0, len(samples) - block + 1, block)]
# Read-write: a FIFO without a reader (between two capture processes) must not end the feeder.
fd = os.open(sys.argv[1], os.O_RDWR)
period, start, n = block / 16000 / float(sys.argv[3]), time.monotonic(), 0
while True:
    os.write(fd, blocks[n % len(blocks)])
    n += 1
    time.sleep(max(0.0, start + n * period - time.monotonic()))
"""


def test_stalled_capture_is_reopened_recovers_and_stops_promptly(alsa, tmp_path):
    fifo = alsa.add_fifo("testmic")
    recordings = tmp_path / "rec"
    status_path = tmp_path / "status.json"
    config = tmp_path / "edge.yaml"
    config.write_text(
        "audio: {device: testmic, stall_timeout_s: 0.5, reopen_backoff_s: 0.1, "
        "reopen_backoff_max_s: 0.4, open_timeout_s: 3}\n"
        f"storage: {{recordings_dir: {recordings}, min_free_mb: 0}}\n"
        f"led: {{pin: null}}\nservice: {{status_file: {status_path}}}\n")
    audio = load_config(config).audio
    # After audio returns: at most one wait between attempts, one open, one stall timeout.
    recovery_s = audio.reopen_backoff_max_s + audio.open_timeout_s + audio.stall_timeout_s + PROCESS_SLACK_S
    lesson_s = LESSON_WAV.stat().st_size / 2 / RATE / SPEED  # long enough for a speech segment
    # A stop waits at most for an open in progress.
    stop_s = audio.open_timeout_s + PROCESS_SLACK_S

    feeder = subprocess.Popen([sys.executable, "-c", FEEDER, str(fifo), str(LESSON_WAV), str(SPEED), str(BLOCK)])
    daemon = Daemon(tmp_path, config)
    try:
        wait_until(lambda: len(read_manifest(recordings / MANIFEST)) >= 2, "segments before the stall")
        feeder.send_signal(signal.SIGSTOP)
        wait_until(lambda: (read_status(status_path) or {}).get("state") == "mic missing",
                   "the stall to be noticed", timeout=audio.stall_timeout_s + PROCESS_SLACK_S)
        # Reopening goes on while the audio stays away: no attempt blocks the next one.
        opened = daemon.logged("capturing from")
        wait_until(lambda: daemon.logged("capturing from") >= opened + 3, "three reopen attempts",
                   timeout=3 * recovery_s)
        assert daemon.process.poll() is None
        assert len(daemon.capture_processes()) <= 1  # stuck ones are ended, not piled up

        stored = len(read_manifest(recordings / MANIFEST))
        feeder.send_signal(signal.SIGCONT)
        wait_until(lambda: any(e["mic_gaps"] for e in read_manifest(recordings / MANIFEST)[stored:]),
                   "speech stored after the stall", timeout=recovery_s + lesson_s)
        assert (read_status(status_path) or {}).get("state") in ("listening", "speech")

        # Stalled again, a stop must not wait for the stuck capture.
        feeder.send_signal(signal.SIGSTOP)
        wait_until(lambda: (read_status(status_path) or {}).get("state") == "mic missing",
                   "the second stall", timeout=audio.stall_timeout_s + PROCESS_SLACK_S)
        children = daemon.capture_processes()
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=stop_s) == 0, "\n".join(daemon.log)
        wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children),
                   "the capture process to end with the daemon", timeout=PROCESS_SLACK_S)
    finally:
        feeder.kill()
        feeder.wait()
        daemon.close()
    entries = assert_card_consistent(recordings)
    gaps = [e["mic_gaps"] for e in entries if e["mic_gaps"]]
    # One stall is one outage, however many reopens it took.
    assert len(gaps) == 1 and len(gaps[0]) == 1 and gaps[0][0]["start"] < gaps[0][0]["end"]
