"""The office side of encrypted recordings: `edge keygen` and `edge decrypt`.

Both run the `age` tools (age-keygen, age), so what they do is what a person could do by
hand with the same files. `edge decrypt` adds what a folder of segments needs: each file is
checked against its manifest before it is opened, the WAV header that could not be
rewritten inside the ciphertext is given its real sizes, a segment cut short by a power cut
keeps every chunk age can authenticate, nothing existing is overwritten and nothing is
deleted (the encrypted files stay where they are).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .encryption import AGE_WAV_EXTENSION, WAV_HEADER_BYTES, age_program
from .errors import EdgeError, printable
from .entries import checked_entry
from .manifest import DAY_FOLDER
from .plain_wav import fit_wav_header
from .storage import MANIFEST, file_sha256, read_manifest

PARTIAL_SUFFIX = ".decrypting"
SECRET_KEY_LINES = (b"AGE-SECRET-KEY-1", b"AGE-PLUGIN-", b"-----BEGIN")
"""How a line of an identity file age takes begins: its own keys, a plugin's, an SSH key."""
WRONG_KEY = "no identity matched"
# What age says when the payload ends before its final chunk: every chunk before the cut
# was authenticated and written out already.
CUT_SHORT = ("failed to decrypt and authenticate payload chunk", "last chunk is empty",
             "unexpected EOF")


@dataclass
class DecryptReport:
    decrypted: int = 0
    problems: list = field(default_factory=list)


@dataclass(frozen=True)
class EncryptedSegment:
    """A .wav.age file to decrypt, with its manifest entry when one lists it."""

    source: Path
    target: Path
    entry: Optional[dict]


def keygen_command(args: argparse.Namespace) -> int:
    key = args.key
    if key.exists():
        raise EdgeError(f"{key}: already exists, not overwritten (a key that is replaced can no "
                        "longer open what was encrypted to it)")
    result = subprocess.run([age_program("age-keygen"), "-o", str(key)], capture_output=True, text=True)
    if result.returncode != 0:
        raise EdgeError(f"{key}: cannot write the key ({_age_error(result.stderr)})")
    public = subprocess.run([age_program("age-keygen"), "-y", str(key)], capture_output=True,
                            text=True, check=True).stdout.strip()
    print(f"secret key written to {key}: keep it on this computer and make a backup; without it "
          "the recordings cannot be opened", file=sys.stderr)
    print("put these lines in the recorder's config (/etc/edge-recorder/edge.yaml):", file=sys.stderr)
    print(f"privacy:\n  recipients: [{public}]")
    return 0


def decrypt_command(args: argparse.Namespace) -> int:
    identity = args.identity
    try:
        key = identity.read_bytes()
    except OSError as exc:
        raise EdgeError(f"{identity}: cannot read the key ({exc.strerror})") from None
    if not any(line.startswith(SECRET_KEY_LINES) for line in key.splitlines()):
        raise EdgeError(f"{identity}: not a secret key (expected the file edge keygen wrote, with a "
                        "line AGE-SECRET-KEY-1...; the age1... public key goes in the recorder's config)")
    segments = find_segments(args.src, args.dest)
    if not segments:
        raise EdgeError(f"{args.src}: no encrypted segments (.wav.age) found")
    report = DecryptReport()
    for segment in segments:
        problem = decrypt_segment(segment, identity)
        if problem is None:
            report.decrypted += 1
            print(f"decrypted {segment.target}", flush=True)
        else:
            report.problems.append(problem)
            print(f"edge: {segment.source}: {problem}", file=sys.stderr, flush=True)
    print(f"{report.decrypted} of {len(segments)} files decrypted to {args.dest}"
          + (f"; {len(report.problems)} not (see above)" if report.problems else ""))
    return 1 if report.problems else 0


def find_segments(src: Path, dest: Path) -> list:
    """The encrypted segments under ``src`` (a card's or an export's folder, or one file) and
    where their decrypted copies go under ``dest``."""
    if src.is_file():
        if not src.name.endswith(AGE_WAV_EXTENSION):
            raise EdgeError(f"{src}: not an encrypted segment (expected a .wav.age file)")
        target = dest / src.name[: -len(".age")] if dest.is_dir() else dest
        if not target.parent.is_dir():
            raise EdgeError(f"{target.parent}: destination folder does not exist")
        return [EncryptedSegment(src, target, _listing_entry(src))]
    if not src.is_dir():
        raise EdgeError(f"{src}: no such file or folder")
    if not dest.is_dir():
        raise EdgeError(f"{dest}: destination folder does not exist")
    listed = {}
    for manifest in sorted(src.rglob(MANIFEST)):
        # A card's day manifest names files from the card's top, one folder up.
        top = manifest.parent.parent if DAY_FOLDER.match(manifest.parent.name) else manifest.parent
        for entry in read_manifest(manifest):
            path = top / entry["file"]
            if entry["file"].endswith(AGE_WAV_EXTENSION) and path.exists():
                listed[path] = checked_entry(manifest, entry)
    segments = []
    for path in sorted(src.rglob("*" + AGE_WAV_EXTENSION)):
        target = dest / path.relative_to(src).as_posix()[: -len(".age")]
        segments.append(EncryptedSegment(path, target, listed.get(path)))
    return segments


def _listing_entry(path: Path) -> Optional[dict]:
    """The manifest entry of one file: the manifest is in the file's day folder (a card) or
    at the top of a card's or an export's device folder, one day folder above the file; its
    paths start at that top."""
    for folder, manifest in ((path.parent, path.parent / MANIFEST), (path.parent.parent, path.parent / MANIFEST),
                             (path.parent.parent, path.parent.parent / MANIFEST)):
        for entry in read_manifest(manifest) if manifest.is_file() else []:
            if (folder / entry["file"]).resolve() == path.resolve():
                return checked_entry(manifest, entry)
    return None


def decrypt_segment(segment: EncryptedSegment, identity: Path) -> Optional[str]:
    """Decrypt one segment; returns None, or the one-line reason it was not decrypted."""
    target, entry = segment.target, segment.entry
    if target.exists():
        return f"{target} already exists, not overwritten"
    try:
        if entry is not None and file_sha256(segment.source) != entry["sha256"]:
            return "does not match its manifest entry (damaged or altered), not decrypted"
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = open(partial, "xb")
    except FileExistsError:
        return f"{partial} exists: is another decrypt running? Remove it if not"
    except OSError as exc:
        # A read-only or full destination fails every file alike: one line, then stop.
        raise EdgeError(f"{exc.filename}: cannot write the decrypted files there ({exc.strerror})") from None
    with out:
        result = subprocess.run([age_program(), "--decrypt", "-i", str(identity), str(segment.source)],
                                stdout=out, stderr=subprocess.PIPE, text=True)
    error = _age_error(result.stderr) if result.returncode else ""
    cut_short = bool(error) and any(text in error for text in CUT_SHORT)
    if error and not cut_short:
        partial.unlink()
        if WRONG_KEY in error:
            return f"not encrypted to the key {identity} (wrong key?)"
        return f"cannot decrypt ({error})"
    samples = _repair_header(partial)
    if samples is None:
        partial.unlink()
        return "nothing authentic to decrypt: the file was cut off before its first chunk was whole"
    expected = entry["samples"] if entry else None
    # A recovered segment's count is what recovery could prove without the key: its last
    # chunk, sealed as the segment closed just before the power went, can add to it.
    if expected is not None and samples != expected and not entry.get("recovered"):
        os.replace(partial, target.with_name(target.name + ".damaged"))
        return (f"decrypts to {samples} samples, its manifest says {expected}; "
                f"kept as {target.name}.damaged")
    os.replace(partial, target)
    if cut_short and not (entry and entry.get("recovered")):
        return f"ends early (cut short), the authentic {samples / 16000:.1f} s are in {target}"
    return None


def _repair_header(path: Path) -> Optional[int]:
    """Give a decrypted WAV the real sizes of the audio it holds; returns its samples, or
    None when not even the header survived."""
    with open(path, "r+b") as f:
        if os.fstat(f.fileno()).st_size < WAV_HEADER_BYTES or f.read(4) != b"RIFF":
            return None
        return fit_wav_header(f)


def _age_error(stderr: str) -> str:
    line = next((line for line in stderr.splitlines() if "error:" in line), stderr.strip())
    # age quotes what it could not parse: from a damaged file, any bytes.
    text = printable(line.split("error:", 1)[-1].strip())
    return text if len(text) <= 160 else text[:157] + "..."


def add_command(subparsers) -> None:
    keygen = subparsers.add_parser(
        "keygen", help="make a key for encrypted recordings (on the office computer)",
        description="Write a new age secret key to KEYFILE (readable by you only) and print the "
                    "public key to put in the recorder's config.")
    keygen.add_argument("key", type=Path, metavar="KEYFILE")
    keygen.set_defaults(func=keygen_command)

    decrypt = subparsers.add_parser(
        "decrypt", help="decrypt exported recordings (.wav.age) with your key",
        description="Decrypt a folder of exported recordings, or one .wav.age file, into DEST. "
                    "Each file is checked against its manifest first; nothing is overwritten or "
                    "deleted.")
    decrypt.add_argument("--identity", "-i", type=Path, required=True, metavar="KEYFILE",
                         help="the secret key made by edge keygen")
    decrypt.add_argument("src", type=Path, metavar="SRC", help="an export folder, or one .wav.age file")
    decrypt.add_argument("dest", type=Path, metavar="DEST",
                         help="folder for the WAV files (or, for one file, the WAV file to write)")
    decrypt.set_defaults(func=decrypt_command)
