"""The microphone of the system test: writes a raw 16 kHz int16 recording into a FIFO, looped,
at the pace a microphone delivers audio, for ALSA's file plugin (`infile`) to read.

Runs as a process of its own (a transient unit inside the booted system) so that the test can
stall it with SIGSTOP while it keeps the FIFO open, which is what a hung USB microphone looks
like to the recorder: the device is open and no audio comes. Standard library only: it runs
on the system's Python before anything is installed.

The file plugin reads as much as it is asked for at once and pads a short read with silence,
so the pipe is kept `--lead` seconds ahead of real time: every read finds whole data and the
captured bytes are exactly the file's. The stream position goes on across the reader's
closes and re-opens (PortAudio opens the device while probing, the recorder re-opens it after
a fault), like a room that keeps talking while the recorder is away; each opening is logged
with the stream sample it began at.
"""

from __future__ import annotations

import argparse
import errno
import os
import time

RATE = 16000
# Samples per write: one block of the recorder's capture (edge.capture.BLOCK, 128 ms), 4096
# bytes, PIPE_BUF, so each write is atomic and a read of a block never finds part of one.
CHUNK = 2048
SAMPLE_BYTES = 2


def looped(data: bytes) -> bytes:
    """The part of ``data`` that is sent, over and over: its whole chunks."""
    chunk_bytes = CHUNK * SAMPLE_BYTES
    return data[:len(data) // chunk_bytes * chunk_bytes]


def feed(fifo: str, data: bytes, lead_s: float) -> None:
    data = looped(data)
    chunk_bytes = CHUNK * SAMPLE_BYTES
    loop_chunks = len(data) // chunk_bytes
    position = 0  # chunks written since the start, over all openings
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader has the FIFO open yet
                raise
            time.sleep(0.005)
            continue
        os.set_blocking(fd, True)
        print(f"opened at stream sample {position * CHUNK}", flush=True)
        started = time.monotonic() - lead_s
        written = 0
        try:
            while True:
                due = started + written * CHUNK / RATE
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # the audio clock of the simulated microphone
                index = position % loop_chunks
                os.write(fd, data[index * chunk_bytes:(index + 1) * chunk_bytes])
                position += 1
                written += 1
        except BrokenPipeError:
            pass  # the reader closed it: wait for the next opening
        finally:
            os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fifo")
    parser.add_argument("raw", help="16 kHz mono int16 little-endian audio, looped")
    parser.add_argument("--lead", type=float, default=1.0, help="seconds kept in the pipe ahead of real time")
    args = parser.parse_args()
    with open(args.raw, "rb") as raw:
        data = raw.read()
    feed(args.fifo, data, args.lead)


if __name__ == "__main__":
    main()
