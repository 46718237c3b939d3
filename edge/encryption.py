"""Encryption at rest with age: segments streamed through the `age` command as they are heard.

The device holds only public keys (``privacy.recipients``) and can never read back what it
stored. Each segment is one ``age`` process: the recorder pipes the WAV stream into it and
hands it the ``.wav.age.part`` file as its standard output, so no plaintext sample ever
reaches the card. The recorder keeps that file descriptor and fsyncs it at every
``storage.fsync_interval_s``. age seals its input in chunks of 64 KiB of plaintext (2.05 s of
16 kHz mono audio) and writes only whole sealed chunks, so a power cut loses at most the
fsync interval plus one chunk: the chunk age was filling, which lives only in its memory
(plus the milliseconds age may take to seal a chunk that filled just before an fsync).

The WAV header is the first thing encrypted and cannot be rewritten afterwards: it carries
the "length unknown" sizes of a streamed WAV (0xFFFFFFFF), which players accept and
``edge decrypt`` replaces with the real ones. Recovery after a power cut needs no key: the
interrupted file is closed off as it is; a stream cut inside a chunk decrypts to every
whole chunk before the cut (age authenticates each chunk on its own).

We use Debian's ``age`` binary, not a Python binding: it exists on every Debian architecture
(pyrage has no 32-bit ARM wheels), it is the tool the office uses to open the files anyway,
and it costs the daemon well under 0.1 ms of CPU per second of audio (docs/privacy.md).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import struct
import subprocess
from pathlib import Path
from typing import Optional, Sequence

from .errors import EdgeError

AGE_WAV_EXTENSION = ".wav.age"
SAMPLE_RATE = 16000
WAV_HEADER_BYTES = 44
CHUNK_BYTES = 64 * 1024
"""Plaintext in one age payload chunk (age v1 format)."""
TAG_BYTES = 16
NONCE_BYTES = 16
SECRET_KEY_PREFIX = "AGE-SECRET-KEY-"
INSTALL_HINT = ("install age (Debian, Ubuntu, Raspberry Pi OS: apt install age; macOS: brew install age; "
                "Windows: winget install FiloSottile.age)")
STOP_WAIT_S = 30.0
"""How long a closing segment may take age to finish its last chunk, in seconds."""


def age_program(name: str = "age") -> str:
    """The path of the age (or age-keygen) command; a missing one is named with how to install it."""
    path = shutil.which(name)
    if path is None:
        raise EdgeError(f"{name}: command not found; {INSTALL_HINT}")
    return path


def streaming_wav_header() -> bytes:
    """A 16 kHz mono 16-bit WAV header whose sizes say "as long as the stream"."""
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16
    ) + b"data" + struct.pack("<I", 0xFFFFFFFF)


def _hidden(secret: str) -> str:
    """A secret key as it may appear in a log: enough to recognise, not enough to use."""
    return secret[: len(SECRET_KEY_PREFIX) + 4] + "..."


def recipient_arguments(recipients: Sequence[str], origin: str = "privacy.recipients") -> list:
    """age's command-line arguments for ``recipients`` (public keys and recipients files),
    checked by age itself; anything wrong stops here with one line naming the key or file."""
    arguments = []
    for item in recipients:
        item = item.strip()
        if item.upper().startswith(SECRET_KEY_PREFIX):
            raise EdgeError(f"{origin}: {_hidden(item)} is a secret key (an identity), not a public "
                            "key: give the 'age1...' line that edge keygen printed, and keep the "
                            "secret key off the device")
        if item.startswith(("age1", "ssh-")):
            arguments += ["-r", item]
            _check_with_age(["-r", item], f"{origin}: {item!r} is not a valid age public key")
            continue
        path = Path(item)
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise EdgeError(f"{origin}: {path}: cannot read recipients file "
                            f"({exc.strerror or exc}); expected a file of 'age1...' lines") from None
        except UnicodeDecodeError:
            raise EdgeError(f"{origin}: {path}: not a text file of 'age1...' lines") from None
        for number, line in enumerate(lines, 1):
            if line.strip().upper().startswith(SECRET_KEY_PREFIX):
                raise EdgeError(f"{origin}: {path}: line {number} is a secret key (an identity), not "
                                "a public key; keep secret keys off the device")
        if not any(line.strip() and not line.lstrip().startswith("#") for line in lines):
            raise EdgeError(f"{origin}: {path}: no public key in the recipients file")
        arguments += ["-R", str(path)]
        _check_with_age(["-R", str(path)], f"{origin}: {path}: not a valid recipients file")
    if not arguments:
        raise EdgeError(f"{origin}: empty list; give at least one 'age1...' public key")
    return arguments


def _check_with_age(arguments: list, what: str) -> None:
    result = subprocess.run([age_program(), *arguments], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        reason = next((line for line in result.stderr.splitlines() if "error:" in line),
                      result.stderr.strip())
        raise EdgeError(f"{what} ({reason.split('error:', 1)[-1].strip()})")


class AgeStreamFile:
    """One segment being encrypted: an age process writing into a file we hold open."""

    def __init__(self, part: Path, arguments: list):
        self._fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            # A session of its own: a Ctrl-C meant for `edge run` must not kill age before
            # the recorder has closed the segment (systemd signals the main process only,
            # KillMode=mixed in the unit).
            self._age = subprocess.Popen([age_program(), *arguments], stdin=subprocess.PIPE,
                                         stdout=self._fd, stderr=subprocess.PIPE,
                                         start_new_session=True)
        except OSError:
            os.close(self._fd)
            raise
        try:
            self.write(streaming_wav_header())
        except OSError:
            self.abandon()
            raise

    def write(self, data: bytes) -> None:
        try:
            self._age.stdin.write(data)
        except BrokenPipeError:
            raise self._failed() from None

    def sync(self, data_bytes: int) -> None:
        try:
            self._age.stdin.flush()
        except BrokenPipeError:
            raise self._failed() from None
        # What age has sealed so far is in the file; the chunk it is filling is not.
        os.fsync(self._fd)

    def close(self) -> None:
        try:
            self._age.stdin.close()
            code = self._age.wait(timeout=STOP_WAIT_S)
        except BrokenPipeError:
            code = self._age.wait(timeout=STOP_WAIT_S)
        if code != 0:
            raise self._failed()
        self._age.stderr.close()
        os.fsync(self._fd)
        os.close(self._fd)

    def abandon(self) -> None:
        try:
            self._age.stdin.close()
        except OSError:
            pass
        try:
            self._age.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self._age.kill()
            self._age.wait()
        self._age.stderr.close()
        os.close(self._fd)

    def _failed(self) -> OSError:
        try:
            self._age.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self._age.kill()
            self._age.wait()
        said = self._age.stderr.read().decode(errors="replace")
        reason = next((line for line in said.splitlines() if "error:" in line), "").split("error:", 1)[-1]
        if not reason.strip():
            code = self._age.returncode
            reason = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        failure = errno.ENOSPC if "no space left" in reason else errno.EIO
        return OSError(failure, f"age: {reason.strip()}")


def age_payload_bytes(path: Path) -> Optional[int]:
    """The encrypted payload after an age file's header and nonce, or None when the header
    itself is incomplete (reading the framing only: nothing is decrypted)."""
    with open(path, "rb") as f:
        head = f.read(64 * 1024)
        size = os.fstat(f.fileno()).st_size
    mac_line = head.find(b"\n--- ")
    if mac_line < 0:
        return None
    header_end = head.find(b"\n", mac_line + 1)
    if header_end < 0:
        return None
    return max(size - (header_end + 1) - NONCE_BYTES, 0)


def plaintext_bytes_at_most(payload: int) -> int:
    """The plaintext an age payload of this size holds when its last chunk is whole."""
    chunks, rest = divmod(payload, CHUNK_BYTES + TAG_BYTES)
    return chunks * CHUNK_BYTES + max(rest - TAG_BYTES, 0)


def age_wav_samples(path: Path) -> int:
    """The samples of a whole encrypted segment (age sealed its last, shorter chunk when the
    segment closed), from the file's size: nothing is decrypted."""
    payload = age_payload_bytes(path)
    if payload is None:
        return 0
    return max(plaintext_bytes_at_most(payload) - WAV_HEADER_BYTES, 0) // 2


def interrupted_age_wav_samples(path: Path) -> int:
    """The samples certainly in an encrypted segment a power cut interrupted: those of the
    chunks age sealed whole. The bytes after them are a chunk the card got only part of (it
    decrypts to nothing: ext4 may have written some of its pages before the power went), or,
    rarely, the last chunk age sealed as the segment closed, which `edge decrypt` then finds
    beyond this count."""
    payload = age_payload_bytes(path)
    if payload is None:
        return 0
    return max(payload // (CHUNK_BYTES + TAG_BYTES) * CHUNK_BYTES - WAV_HEADER_BYTES, 0) // 2


class AgeWav:
    """Segments as WAV streams encrypted to ``recipients`` (``.wav.age``)."""

    extension = AGE_WAV_EXTENSION

    def __init__(self, arguments: list):
        self.arguments = arguments

    @classmethod
    def for_recipients(cls, recipients: Sequence[str]) -> "AgeWav":
        return cls(recipient_arguments(recipients))

    def create(self, part: Path) -> AgeStreamFile:
        return AgeStreamFile(part, self.arguments)
