"""Segments as plain WAV files: 16 kHz mono 16-bit PCM whose header is brought up to date at
every fsync, so a file cut off by a power loss is a valid WAV of the audio it had, with its
blocks allocated ahead so that those fsyncs journal no allocation. ``SegmentFormat`` is what
edge.storage asks of a format; the encrypted one is edge.encryption's."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HEADER_BYTES = 44
RESERVE_BYTES = 1 << 20
"""Card space allocated ahead of an open segment's audio (33 s), so that the fsync every
second journals no block allocation: 70 % written over the audio instead of 93 % (ext4,
docs/sd-card.md)."""
RESERVE_ONLY_ABOVE_BYTES = 64 * RESERVE_BYTES
_FALLOC_FL_KEEP_SIZE = 1
try:
    _fallocate = getattr(ctypes.CDLL(None, use_errno=True), "fallocate64", None)
except (OSError, TypeError):  # no C library to load by name (Windows: the office commands)
    _fallocate = None


def wav_header(data_bytes: int) -> bytes:
    """The 44-byte header of a 16 kHz mono 16-bit PCM WAV with ``data_bytes`` of audio."""
    return b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16
    ) + b"data" + struct.pack("<I", data_bytes)


class SegmentFile(Protocol):
    """One open segment file, fed int16 audio as bytes."""

    def write(self, data: bytes) -> None: ...

    def sync(self, data_bytes: int) -> None:
        """Make what was written durable; ``data_bytes`` of audio were written so far."""

    def close(self) -> None:
        """Finish the file durably (raises OSError when it could not be finished)."""

    def abandon(self) -> None:
        """Let go of the file after an error, leaving it for recovery."""


class SegmentFormat(Protocol):
    """How segments are written: the file name's extension and the open file."""

    extension: str

    def create(self, part: Path) -> SegmentFile: ...


def reserve(fd: int, offset: int, length: int) -> bool:
    """Allocate the blocks of ``offset`` to ``offset + length`` without changing the file's
    size (fallocate with KEEP_SIZE); False where the filesystem cannot (FUSE) or the card
    has little room left (every free byte is kept for audio and the free-space floor):
    then the writes allocate their blocks as usual."""
    if _fallocate is None:
        return False
    card = os.fstatvfs(fd)
    if card.f_bavail * card.f_frsize < RESERVE_ONLY_ABOVE_BYTES:
        return False
    if _fallocate(fd, _FALLOC_FL_KEEP_SIZE, ctypes.c_int64(offset), ctypes.c_int64(length)) == 0:
        return True
    code = ctypes.get_errno()
    if code not in (errno.EOPNOTSUPP, errno.ENOSPC, errno.ENOSYS, errno.EINVAL):
        log.debug("cannot reserve space ahead of the audio: %s", os.strerror(code))
    return False


class PlainWavFile:
    """A WAV whose header is brought up to date at every sync, its blocks allocated ahead."""

    def __init__(self, part: Path):
        self._file = open(part, "xb")
        self._file.write(wav_header(0))
        self._reserved = RESERVE_BYTES if reserve(self._file.fileno(), 0, RESERVE_BYTES) else 0

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def sync(self, data_bytes: int) -> None:
        self._file.flush()
        fd = self._file.fileno()
        # Half the reservation used: the next one, past the end (no written pages in it).
        if self._reserved and self._reserved - (HEADER_BYTES + data_bytes) < RESERVE_BYTES // 2:
            if reserve(fd, self._reserved, RESERVE_BYTES):
                self._reserved += RESERVE_BYTES
        os.pwrite(fd, struct.pack("<I", 36 + data_bytes), 4)
        os.pwrite(fd, struct.pack("<I", data_bytes), 40)
        os.fsync(fd)

    def close(self) -> None:
        if self._reserved:
            # Give back what was reserved past the end (a power cut before this keeps at
            # most RESERVE_BYTES allocated to the file, harmlessly).
            self._file.flush()
            os.ftruncate(self._file.fileno(), os.fstat(self._file.fileno()).st_size)
        self._file.close()

    def abandon(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass


class PlainWav:
    """Segments as plain 16 kHz mono WAV files."""

    extension = ".wav"

    def create(self, part: Path) -> PlainWavFile:
        return PlainWavFile(part)


def fit_wav_header(f) -> int:
    """Cut an open WAV file to whole samples and write the header that matches them, durably;
    returns its samples."""
    size = os.fstat(f.fileno()).st_size
    samples = max(size - HEADER_BYTES, 0) // 2
    # Only when it must: LazyFS (the power-cut test's card) zeroes a file whose cache it
    # dropped on any ftruncate, and the size is already right after most cuts.
    if size != HEADER_BYTES + 2 * samples:  # half a sample, or a header cut short
        f.truncate(HEADER_BYTES + 2 * samples)
    f.seek(0)
    f.write(wav_header(2 * samples))
    f.flush()
    os.fsync(f.fileno())
    return samples
