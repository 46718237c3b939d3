"""python -m bench.wear [--tree DIR] [--minutes M]: what the recorder writes to the SD card.

The card is a real block device: a loop device with ext4 on it (mkfs defaults, mounted
with the default 5 s commit interval), holding the recorder's state directory and its
recordings; the runtime directory is a tmpfs, as systemd's RuntimeDirectory= gives it.
`edge run` is started the way systemd starts it (STATE_DIRECTORY, RUNTIME_DIRECTORY,
NOTIFY_SOCKET, WATCHDOG_USEC) on an ALSA file-plugin microphone fed in real time through a
FIFO. Four cases, each the same length of real time, scaled to an hour:

- stopped: no recorder (what ext4 itself writes to an idle card: the reference);
- silence: room tone only;
- lesson: 30 s of speech then 30 s of room tone, every minute (speech half the time);
- unplugged: the microphone's device does not exist; the recorder waits for it.

Bytes written are the sectors written to the loop device (/sys/block/loopN/stat), counted
from a syncfs after warm-up to a syncfs at the end. The daemon's log lines (what journald
would store) are counted beside them. Goals (issue 25): silence and unplugged add at most
100 KB per hour over the stopped card; a lesson at most 5 % over the audio bytes stored.

Needs root (losetup, mount). EDGE_WEAR_QUICK=1: 6 s per case, a smoke test that it runs
(too short for the goals). --tree runs another checkout's recorder (the "before" figures).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from edge.capture import BLOCK
from edge.wavio import read_wav_16k

from .recorders import REPO

SAMPLE_RATE = 16000
CASE_S = 300.0
QUICK_CASE_S = 6.0  # more than one status interval (5 s): a status on the card would show
WARMUP_S = 15.0
QUICK_WARMUP_S = 1.0
READY_TIMEOUT_S = 120.0
IMAGE_MB = 512
SILENCE_BUDGET_BYTES_PER_H = 100_000
LESSON_OVERHEAD = 0.05
LESSON_CLIP = REPO / "tests" / "data" / "lesson_15s.wav"
LESSON_LABELS = REPO / "tests" / "data" / "lesson_15s.csv"
CASES = ("stopped", "silence", "lesson", "unplugged")
LONGER_FSYNC = "lesson-fsync10s"
"""Not run unless named (--cases): the lesson with storage.fsync_interval_s: 10, what the
owner's durability setting buys in writes."""


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


@dataclass
class Card:
    """An ext4 loop device mounted at ``mount``, and a tmpfs at ``runtime``."""

    image: Path
    device: str = ""
    mount: Path = Path()
    runtime: Path = Path()

    def sectors_written(self) -> int:
        name = Path(self.device).name
        return int(Path(f"/sys/block/{name}/stat").read_text().split()[6])

    def sync(self) -> None:
        run("sync", "--file-system", str(self.mount))


@contextlib.contextmanager
def card(work: Path) -> Iterator[Card]:
    result = Card(work / "card.img", mount=work / "card", runtime=work / "run")
    with open(result.image, "wb") as f:
        f.truncate(IMAGE_MB << 20)
    # 4 KiB blocks as on a real card (mke2fs would pick 1 KiB for a small image). No lazy
    # init: ext4lazyinit would zero the inode tables in the background for minutes after
    # mounting, and be counted as the recorder's writes.
    run("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0",
        str(result.image))
    result.device = run("losetup", "--find", "--show", str(result.image))
    try:
        result.mount.mkdir()
        result.runtime.mkdir()
        run("mount", "-t", "ext4", result.device, str(result.mount))
        try:
            run("mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(result.runtime))
            try:
                yield result
            finally:
                run("umount", str(result.runtime))
        finally:
            run("umount", str(result.mount))
    finally:
        run("losetup", "-d", result.device)


def room_tone(seconds: float) -> np.ndarray:
    """The lesson clip's room tone before its first sentence, looped."""
    clip = read_wav_16k(LESSON_CLIP)
    first_speech = float(LESSON_LABELS.read_text().splitlines()[1].split(",")[0])
    tone = clip[: int((first_speech - 0.1) * SAMPLE_RATE)]
    return np.resize(tone, int(seconds * SAMPLE_RATE))


def speech(seconds: float) -> np.ndarray:
    """The clip's three sentences back to back (0.3 s apart: one segment), looped."""
    clip = read_wav_16k(LESSON_CLIP)
    parts = []
    for line in LESSON_LABELS.read_text().splitlines()[1:]:
        start, end, _ = line.split(",")
        parts += [clip[int(float(start) * SAMPLE_RATE): int(float(end) * SAMPLE_RATE)], room_tone(0.3)]
    return np.resize(np.concatenate(parts), int(seconds * SAMPLE_RATE))


def case_audio(case: str) -> Optional[np.ndarray]:
    """One minute of the case's microphone, looped by the feeder; None: no microphone."""
    if case == "silence":
        return room_tone(60.0)
    if case in ("lesson", LONGER_FSYNC):
        return np.concatenate([speech(30.0), room_tone(30.0)])
    return None


class Feeder(threading.Thread):
    """Writes ``audio`` (looped) into the FIFO at the pace a microphone would, in the recorder's
    capture blocks: ALSA's file plugin pads a read that finds less than a block with silence."""

    def __init__(self, fifo: Path, audio: np.ndarray):
        super().__init__(daemon=True)
        whole = audio[:len(audio) // BLOCK * BLOCK]
        self.fifo, self.audio, self.stopped = fifo, whole.astype("<i2"), threading.Event()

    def run(self) -> None:
        step = BLOCK
        start = time.monotonic()
        while not self.stopped.is_set():
            try:
                # Blocks until the recorder opens its microphone; probing the device opens and
                # closes it first, so each opening is served again, from the audio of the moment.
                with open(self.fifo, "wb", buffering=0) as out:
                    sent = int((time.monotonic() - start) * SAMPLE_RATE / step) * step
                    while not self.stopped.is_set():
                        at = sent % len(self.audio)  # a whole number of blocks long
                        out.write(self.audio[at:at + step].tobytes())
                        sent += step
                        self.stopped.wait(max(0.0, start + sent / SAMPLE_RATE - time.monotonic()))
            except OSError:  # BrokenPipeError: the recorder closed it
                continue


class Daemon:
    """`edge run` as systemd starts it, its stderr (the journal) kept off the card."""

    def __init__(self, tree: Path, work: Path, card_: Card, alsa_config: Path, fsync_interval_s: float = 1.0):
        self.state = card_.mount / "state"
        self.runtime = card_.runtime / "edge-recorder"
        for folder, mode in ((self.state, 0o750), (self.runtime, 0o750)):
            folder.mkdir(exist_ok=True)
            folder.chmod(mode)
        self.config = work / "edge.yaml"
        self.config.write_text(
            "audio: {device: benchmic}\nled: {pin: null}\n"
            f"storage: {{min_free_mb: 100, fsync_interval_s: {fsync_interval_s}}}\n")
        self.log = work / f"daemon-{time.monotonic_ns()}.log"
        self.notify_path = work / "notify.sock"
        self.notify_path.unlink(missing_ok=True)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        # Read all the time, as systemd does: a socket nobody reads holds 10 datagrams
        # (net.unix.max_dgram_qlen), then the recorder's next notification blocks it.
        self.ready = threading.Event()
        threading.Thread(target=self._read_notify, daemon=True).start()
        env = {**os.environ, "STATE_DIRECTORY": str(self.state), "RUNTIME_DIRECTORY": str(self.runtime),
               "NOTIFY_SOCKET": str(self.notify_path), "WATCHDOG_USEC": "30000000",
               "ALSA_CONFIG_PATH": str(alsa_config), "PYTHONPATH": str(tree)}
        env.pop("JOURNAL_STREAM", None)
        env.pop("XDG_RUNTIME_DIR", None)
        with open(self.log, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge", "run", "--config", str(self.config)],
                cwd=self.state, env=env, stdout=subprocess.DEVNULL, stderr=stderr)

    def _read_notify(self) -> None:
        while True:
            try:
                message = self.notify.recv(4096)
            except OSError:
                return
            if not message:
                return  # shut down: the recorder has stopped
            if b"READY=1" in message:
                self.ready.set()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and self.process.poll() is None:
            if self.ready.wait(1.0):
                return
        raise RuntimeError(f"the recorder did not start: {self.log.read_text()[-2000:]}")

    def log_size(self) -> tuple[int, int]:
        text = self.log.read_bytes()
        return text.count(b"\n"), len(text)

    def log_lines(self, skip: int) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()[skip:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(OSError):
            self.notify.shutdown(socket.SHUT_RDWR)
        self.notify.close()
        self.notify_path.unlink(missing_ok=True)


def listing(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under ``root``: (inode, size, mtime_ns)."""
    found = {}
    for path in root.rglob("*"):
        with contextlib.suppress(FileNotFoundError):
            status = path.lstat()
            found[str(path.relative_to(root))] = (status.st_ino, status.st_size, status.st_mtime_ns)
    return found


def changes(before: dict, after: dict) -> list[str]:
    changed = [f"+{name}" for name in after if name not in before]
    changed += [f"-{name}" for name in before if name not in after]
    changed += [f"~{name}" for name in after if name in before and after[name] != before[name]]
    return sorted(changed, key=lambda item: item[1:])


def audio_bytes(files: dict) -> int:
    return sum(size for name, (_, size, _) in files.items() if name.endswith((".wav", ".wav.part", ".age")))


@dataclass
class Result:
    case: str
    seconds: float
    written: int
    audio: int = 0
    log_lines: int = 0
    log_bytes: int = 0
    changed: list = field(default_factory=list)
    logged: list = field(default_factory=list)

    def per_hour(self, value: float) -> float:
        return value * 3600.0 / self.seconds


def measure(case: str, seconds: float, warmup: float, tree: Path, work: Path, card_: Card) -> Result:
    alsa_config = work / "asound.conf"
    fifo = work / "benchmic.fifo"
    fifo.unlink(missing_ok=True)
    audio = case_audio(case)
    infile = fifo if audio is not None else work / "unplugged.raw"  # absent: the device fails to open
    file_pcm = f'{{ type file slave.pcm "null" file "/dev/null" infile "{infile}" format "raw" }}'
    alsa_config.write_text('pcm.null { type null }\npcm.default "benchmic"\n'
                           f"pcm.benchmic {{ type plug slave.pcm {file_pcm} }}\n")
    feeder = daemon = None
    if audio is not None:
        os.mkfifo(fifo)
        feeder = Feeder(fifo, audio)
        feeder.start()
    try:
        if case != "stopped":
            daemon = Daemon(tree, work, card_, alsa_config, 10.0 if case == LONGER_FSYNC else 1.0)
            daemon.wait_ready()
        time.sleep(warmup)  # start-up (model, manifest, device probing) is not the hour
        before = listing(card_.mount)  # first: reading a new folder may update its atime
        card_.sync()
        sectors, logged = card_.sectors_written(), (0, 0)
        if daemon is not None:
            logged = daemon.log_size()
        time.sleep(seconds)
        card_.sync()
        written = (card_.sectors_written() - sectors) * 512
        after = listing(card_.mount)
        result = Result(case, seconds, written, audio_bytes(after) - audio_bytes(before),
                        changed=changes(before, after))
        if daemon is not None:
            lines, size = daemon.log_size()
            result.log_lines, result.log_bytes = lines - logged[0], size - logged[1]
            result.logged = daemon.log_lines(logged[0])
        return result
    finally:
        if daemon is not None:
            daemon.stop()
        if feeder is not None:
            feeder.stopped.set()
            with contextlib.suppress(OSError):  # unblock a feeder still waiting for a reader
                os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
            feeder.join(timeout=5)
            fifo.unlink(missing_ok=True)


def goal(result: Result, stopped: Result) -> str:
    extra = result.per_hour(result.written) - stopped.per_hour(stopped.written)
    if result.case in ("silence", "unplugged"):
        ok = extra <= SILENCE_BUDGET_BYTES_PER_H
        return f"{'OK  ' if ok else 'OVER'} <= {SILENCE_BUDGET_BYTES_PER_H / 1000:.0f} KB/h extra"
    if result.case in ("lesson", LONGER_FSYNC):
        allowed = result.per_hour(result.audio) * LESSON_OVERHEAD
        overhead = extra - result.per_hour(result.audio)
        ok = overhead <= allowed
        return f"{'OK  ' if ok else 'OVER'} overhead {100 * overhead / max(result.per_hour(result.audio), 1):.1f} % <= 5 %"
    return "reference"


def table(results: list[Result]) -> list[str]:
    stopped = next(r for r in results if r.case == "stopped")
    lines = [f"{'case':<15} {'card KB/h':>11} {'over stopped':>13} {'audio KB/h':>11} "
             f"{'log lines/h':>11} {'log KB/h':>9}  goal"]
    for r in results:
        extra = r.per_hour(r.written) - stopped.per_hour(stopped.written)
        lines.append(f"{r.case:<15} {r.per_hour(r.written) / 1000:>11.1f} {extra / 1000:>13.1f} "
                     f"{r.per_hour(r.audio) / 1000:>11.1f} {r.per_hour(r.log_lines):>11.0f} "
                     f"{r.per_hour(r.log_bytes) / 1000:>9.1f}  {goal(r, stopped)}")
    return lines


def summarise_changes(changed: list[str]) -> str:
    """The files that changed on the card, segments counted rather than named."""
    segments = sum(1 for c in changed if ".wav" in c and "manifest" not in c)
    others = [c for c in changed if ".wav" not in c]
    return ", ".join(others + ([f"{segments} segment files"] if segments else [])) or "nothing"


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wear", description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=REPO, help="checkout whose recorder runs (default: this one)")
    parser.add_argument("--minutes", type=float, default=None, help=f"per case (default {CASE_S / 60:g})")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated, of {', '.join(CASES + (LONGER_FSYNC,))} (stopped always runs)")
    args = parser.parse_args(argv)
    quick = os.environ.get("EDGE_WEAR_QUICK") == "1"
    seconds = args.minutes * 60 if args.minutes else (QUICK_CASE_S if quick else CASE_S)
    cases = [c for c in CASES + (LONGER_FSYNC,) if c in args.cases.split(",") or c == "stopped"]
    # A stop (timeout, kill) still unmounts the card and detaches the loop device.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    if os.geteuid() != 0 or not shutil.which("losetup"):
        print("wear: skipped (needs root and losetup for a loop-mounted ext4 card)")
        return 0
    tree = args.tree.resolve()
    print(f"wear: {tree} ({run('git', '-C', str(tree), 'rev-parse', '--short', 'HEAD')}), "
          f"{seconds:.0f} s of real time per case scaled to an hour, ext4 on a loop device, "
          f"commit=5 s{' (QUICK: too short for the goals)' if quick else ''}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="wearbench-") as tmp:
        work = Path(tmp)
        with card(work) as card_:
            for case in cases:
                result = measure(case, seconds, QUICK_WARMUP_S if quick else WARMUP_S, tree, work, card_)
                results.append(result)
                print(f"wear: {case}: {result.written} bytes written in {seconds:.0f} s; "
                      f"changed on the card: {summarise_changes(result.changed)}", flush=True)
                for line in result.logged[:3] + (["..."] if len(result.logged) > 4 else []) + result.logged[3:][-1:]:
                    print(f"wear: {case}: logged: {line}", flush=True)
    print("\n".join(table(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
