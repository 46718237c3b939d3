"""The virtual Pi's checks, run inside the booted VM by edge-vm-check.service with the
recorder's own venv Python (numpy, PyAudio and the edge package as installed by `make install`).

The check is named on the kernel command line (edge.vm=mic|cut|final); everything it has to
say goes to the second serial port (/dev/ttyS1; a virtio console on arm64), one line each, which tests/vm/run.py reads on
the host: ``PASS name: ...``, ``FAIL name: ...``, ``INFO ...``, and for the power cuts
``RECORDING`` (the host may cut from now on), ``HAD file samples`` (what the recorder had
written, sampled every 20 ms) and ``RECOVERED file samples``. ``END`` closes a boot that
powers itself off.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import traceback
import wave
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from edge.config import load_config
from edge.decrypt import CUT_SHORT
from edge.encryption import CHUNK_BYTES
from edge.storage import file_sha256, read_manifest, stored_samples

UNIT = "edge-recorder.service"
CONFIG = Path("/etc/edge-recorder/edge.yaml")
RECORDINGS = Path("/var/lib/edge-recorder/recordings")
MANIFEST = RECORDINGS / "manifest.jsonl"
KIT = Path("/usr/local/lib/edge-vm")
LESSON = KIT / "lesson.wav"
IDENTITY = KIT / "identity.txt"  # present when the card is encrypted
PLAYBACK = "hw:Loopback,0,0"
LED_VALUE = Path("/sys/devices/platform/gpio-sim.0/gpiochip0/sim_gpio{pin}/value")
ALOOP = Path("/sys/bus/platform/drivers/snd_aloop")
LED_PIN = 17  # where the virtual Pi's LED is wired (tests/vm/edge.yaml says the same)
RATE = 16000
WINDOW = 512

# The second serial port on a PC; arm64's virt machine has one UART, so there it is a virtio
# console (edge.report= on the kernel command line).
REPORT = re.search(r"\bedge\.report=(\S+)", Path("/proc/cmdline").read_text())
out = open(REPORT.group(1) if REPORT else "/dev/ttyS1", "w", buffering=1)


def say(line: str) -> None:
    out.write(line + "\n")


class Failed(Exception):
    pass


def check(name: str, condition: bool, message: str) -> bool:
    say(f"{'PASS' if condition else 'FAIL'} {name}: {message}")
    return condition


def run(command: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed as it was closed
        return 0


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def wait_for(condition: Callable[[], object], what: str, timeout: float, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def show(*props: str) -> dict[str, str]:
    text = run(["systemctl", "show", UNIT, *[f"--property={p}" for p in props]]).stdout
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def listening() -> Optional[dict]:
    state = show("ActiveState", "SubState", "StatusText", "NRestarts", "MainPID")
    if state["ActiveState"] == "failed":
        raise Failed(f"{UNIT} failed")
    ok = state["ActiveState"] == "active" and state["StatusText"].split(" ", 1)[0] in ("listening", "speech")
    return state if ok else None


def lesson() -> np.ndarray:
    with wave.open(str(LESSON)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").copy()


def segment_audio(entry: dict) -> np.ndarray:
    path = RECORDINGS / entry["file"]
    if path.name.endswith(".age"):
        result = subprocess.run(["age", "-d", "-i", str(IDENTITY), str(path)], capture_output=True,
                                timeout=120)
        # A segment recovered after a cut ends where the power went: age gives every whole
        # chunk and then says the stream was cut short, as `edge decrypt` expects.
        cut_short = entry["recovered"] and any(text in result.stderr.decode() for text in CUT_SHORT)
        if result.returncode and not cut_short:
            raise Failed(f"{entry['file']}: age -d: {result.stderr.decode().strip()}")
        return np.frombuffer(result.stdout[44:], dtype="<i2")
    with wave.open(str(path)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")


def find(needle: np.ndarray, haystack: np.ndarray) -> list[int]:
    """Every position where ``needle`` (at least 32 samples) is found whole in ``haystack``."""
    probe = needle[:256].tobytes()
    raw = haystack.tobytes()
    found, at = [], raw.find(probe)
    while at >= 0:
        if at % 2 == 0:
            start = at // 2
            if np.array_equal(haystack[start:start + len(needle)], needle):
                found.append(start)
        at = raw.find(probe, at + 1)
    return found


def input_stretches(audio: np.ndarray, stream: np.ndarray) -> Optional[int]:
    """How many stretches of ``stream``, one after another, ``audio`` is made of (runs of
    silence count as input); None when some of it is not the input at all."""
    stretches, at = 0, 0
    while at < len(audio):
        nonzero = np.flatnonzero(audio[at:])
        if len(nonzero) == 0:
            break
        rest = audio[at + int(nonzero[0]):]
        longest = 0
        for start in find(rest[:32], stream):
            same = stream[start:start + len(rest)] == rest[:len(stream) - start]
            longest = max(longest, len(same) if same.all() else int(np.argmin(same)))
        if not longest:
            return None
        stretches += 1
        at = len(audio) - len(rest) + longest
    return stretches


class Led:
    """The simulator's side of the LED line, sampled every 2 ms with boot-clock times."""

    def __init__(self, pin: int):
        self.path = Path(str(LED_VALUE).format(pin=pin))
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append((boottime(), int(self.path.read_text())))
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def runs(self, since: float = 0.0, until: float = float("inf")) -> list[tuple[float, float, int]]:
        """(start, end, value) of every steady stretch between ``since`` and ``until``."""
        stretches: list[list] = []
        for t, value in self.samples:
            if t < since or t > until:
                continue
            if stretches and stretches[-1][2] == value:
                stretches[-1][1] = t
            else:
                stretches.append([t, t, value])
        return [tuple(s) for s in stretches]


# ---------------------------------------------------------------------------------------------
# edge.vm=mic: the microphone, the LED and the card going away, in one boot


def step_time_s(settings) -> float:
    """The detector's time per window on this (emulated) CPU, as the recorder builds and
    calls it (a capture block at a time)."""
    from edge.capture import BLOCK
    from edge.detector import make_detector
    detector = make_detector(settings)
    blocks = lesson()[:40 * WINDOW].reshape(-1, BLOCK)
    detector.probabilities(blocks[0])
    started = time.perf_counter()
    for block in blocks:
        detector.probabilities(block)
    return (time.perf_counter() - started) / (blocks.size // WINDOW)


# The player's buffer, in microseconds: many times the recorder's driver buffer
# (edge.capture.DRIVER_BUFFER_S), so a stall of the emulated machine long enough to starve the
# player overruns the recorder's capture first, which the recorder counts. With aplay's own
# 0.5 s, a stall could starve the player alone: the loopback card then plays its stale buffer
# and silence, and a segment holds stretches of the input no counter explains (CI at 5e76139).
PLAYER_BUFFER_US = 4_000_000


def play(path: Path = LESSON) -> subprocess.Popen:
    player = subprocess.Popen(["aplay", "-q", "-D", PLAYBACK, f"--buffer-time={PLAYER_BUFFER_US}",
                               str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    threading.Thread(target=relay_player, args=(player,), daemon=True).start()
    return player


def relay_player(player: subprocess.Popen) -> None:
    """aplay says "underrun!!!" even when quiet: the report shows when the input was not the file."""
    for line in player.stderr:
        say(f"INFO player: {line.strip()}")


def mic_boot() -> None:
    settings = load_config(CONFIG)
    pin = LED_PIN
    wait_for(listening, "the recorder listening", 600)
    say(f"INFO recorder listening at {boottime():.1f} s after boot")
    # The detector's step on this emulated CPU, measured while nothing else runs: the LED's
    # time bound is derived from it.
    run(["systemctl", "stop", UNIT])
    step = step_time_s(settings)
    say(f"INFO detector step time in the guest: {step * 1000:.2f} ms per {WINDOW}-sample window")
    run(["systemctl", "start", UNIT])
    state = wait_for(listening, "the recorder listening again", 600)
    restarts0 = state["NRestarts"]
    opened = run(["journalctl", "-b", "-u", UNIT, "-o", "cat", "--grep", "capturing from"]).stdout.split("\n")
    say(f"INFO the recorder's last open: {opened[-2] if len(opened) > 1 else 'not in the journal'}")
    started = int(show("ExecMainStartTimestampMonotonic")["ExecMainStartTimestampMonotonic"]) / 1e6
    # How many segments `edge process` stores from the lesson (the host ran it).
    expected = int((KIT / "expected-segments").read_text())
    led = Led(pin)
    before = {e["file"] for e in read_manifest(MANIFEST)}
    audio = lesson()

    # 1. The lesson played into the loopback card at real time. The recorder may lag behind
    # (an emulated CPU): wait until it stored as many segments as edge process did and is
    # listening again, or until it had plenty of time.
    player = play()
    player.wait(timeout=120)

    def caught_up():
        live = [e for e in read_manifest(MANIFEST) if e["file"] not in before]
        return live if len(live) >= expected and show("StatusText")["StatusText"].startswith(
            "listening") else None
    # As long as the lesson takes the detector here, twice, and a minute: a recorder that
    # lost audio would otherwise be waited for in vain.
    catch_up_s = 2 * len(audio) / RATE * max(1.0, step * RATE / WINDOW) + 60
    try:
        wait_for(caught_up, "the recorder to store the lesson", catch_up_s, every=0.5)
    except Failed as exc:
        say(f"INFO {exc}")
    live = [e for e in read_manifest(MANIFEST) if e["file"] not in before]
    # The host compares these with edge process once the VM is off.
    (KIT / "lesson-segments.txt").write_text("".join(e["file"] + "\n" for e in live))
    os.sync()
    check_led_speech(led, live, settings, step, started)

    # 2. The card goes away mid-segment and comes back.
    check_card_gone(led, settings, restarts0)

    # 3. systemctl stop: the LED goes dark.
    run(["systemctl", "stop", UNIT])
    stopped = boottime()
    time.sleep(1.5)  # a stretch of time to look at the line in, not synchronisation
    led.stop()
    after = led.runs(since=stopped + 0.3)
    check("LED dark after systemctl stop", bool(after) and all(v == 0 for _, _, v in after),
          f"line {pin} after the stop: {[(round(a - stopped, 2), round(b - stopped, 2), v) for a, b, v in after]}")


# The emulated machine's threads (the recorder's, its LED's blink thread, the LED sampler
# here, aplay) share two vCPUs on a host that may be busy: time for one of them to get its
# turn, allowed in every LED bound (the LED is on and off between scheduled moments).
SCHEDULING_S = 0.3


def check_led_speech(led: Led, live: list[dict], settings, step: float, started: float) -> None:
    """Lit while a segment is open, dark (but for the heartbeat) once it closed, and still dark
    a heartbeat period and more after the last one."""
    seg = settings.segmenter
    window_s = WINDOW / RATE
    # Where the detector is slower than real time (TCG), the recorder falls behind the audio
    # by (step / window - 1) seconds per second since it started.
    lag_rate = max(0.0, step / window_s - 1.0)

    def latency(at: float) -> float:
        """From a sample heard at ``at`` to the LED showing its window: the capture block it
        came in (a few windows), the steps of that block, the lag, and the scheduling."""
        return 8 * window_s + 10 * step + (at - started) * lag_rate + SCHEDULING_S

    def dark_by(entry: dict) -> float:
        # A segment ends at or after the window its pause began in (its tail is kept), and it
        # closes min_silence_ms after that window.
        end = entry["monotonic_s"] + entry["duration_s"]
        return end + seg.min_silence_ms / 1000 + latency(end)

    # Light that lasts half the shortest a segment gives (it stays lit min_silence_ms after its
    # speech) is not the listening heartbeat (0.05 s every 3 s), even with its blink thread late.
    steady_s = seg.min_silence_ms / 2000

    def steady(runs):
        return [r for r in runs if r[2] == 1 and r[1] - r[0] > steady_s]

    problems, lines = [], []
    for entry in live:
        start = entry["monotonic_s"]
        end = start + entry["duration_s"]
        # The segmenter confirms speech min_speech_ms after it began, which is pre_roll_ms (at
        # most) after the segment's first sample.
        lit_by = start + (seg.pre_roll_ms + seg.min_speech_ms) / 1000 + latency(start)
        dark = dark_by(entry)
        # Up to just past its bound: the next segment's light must not count as this one's.
        lit = steady(led.runs(since=start, until=dark + steady_s))
        if not lit:
            problems.append(f"{entry['file']}: never lit steadily")
            continue
        lines.append(f"lit {lit[0][0] - start:.2f} s after the segment's first sample (bound "
                     f"{lit_by - start:.2f} s), dark {lit[-1][1] - end:+.2f} s from its last (bound "
                     f"{dark - end:+.2f} s)")
        if lit[0][0] > lit_by:
            problems.append(f"{entry['file']}: lit {lit[0][0] - start:.2f} s after its first sample, "
                            f"bound {lit_by - start:.2f} s")
        if lit[-1][1] > dark:
            problems.append(f"{entry['file']}: still lit {lit[-1][1] - end:.2f} s after its last sample, "
                            f"bound {dark - end:.2f} s")
    if live:
        last = max(live, key=lambda e: e["monotonic_s"])
        last_end = last["monotonic_s"] + last["duration_s"]
        since = dark_by(last)
        # A stretch to look at the line in, not synchronisation: a heartbeat period and more.
        time.sleep(max(0.0, since + 3.5 - boottime()))
        for a, b, _ in steady(led.runs(since=since)):
            problems.append(f"lit {a - last_end:+.2f} s to {b - last_end:+.2f} s from the last segment's "
                            f"last sample, dark by {since - last_end:+.2f} s")
    check("LED: lit with speech, dark after", not problems,
          "; ".join(problems) if problems else f"GPIO{LED_PIN}: " + "; ".join(lines))


def check_card_gone(led: Led, settings, restarts0: str) -> None:
    before = {e["file"] for e in read_manifest(MANIFEST)}
    player = play()
    part = wait_for(lambda: next((p for p in RECORDINGS.glob("*/*.wav.part") if size(p) > 44 + RATE * 2), None),
                    "a segment being recorded", 600)
    had = (size(part) - 44) // 2
    name = part.relative_to(RECORDINGS).as_posix().removesuffix(".part")
    gone_at = boottime()
    (ALOOP / "unbind").write_text("snd_aloop.0")
    player.wait(timeout=30)
    states: list[str] = []
    # The recorder may be behind the audio (TCG): it learns of the loss after its backlog.
    status = wait_for(lambda: (lambda r: r if "lost" in r.stdout.lower() or "missing" in r.stdout.lower() else None)(
        run(["edge", "status"])), "edge status to say the microphone is lost", 600, every=0.5)
    states.append(show("ActiveState")["ActiveState"])
    entry = wait_for(lambda: next((e for e in read_manifest(MANIFEST) if e["file"] == name), None),
                     "the open segment to be stored", 60)
    check("card gone: the open segment is closed with its audio",
          entry["samples"] >= had and not entry["recovered"],
          f"{entry['file']}: {entry['samples']} samples stored, {had} were on the card when the card went")
    status_line = next((l for l in status.stdout.splitlines() if "lost" in l.lower() or "missing" in l.lower()), "")
    check("card gone: edge status says the microphone is lost", True, status_line.strip())
    t0 = boottime()
    time.sleep(2.0)  # the stretch of the line to look at
    blink = [r for r in led.runs(since=t0, until=t0 + 2.0)]
    ons = [r for r in blink if r[2] == 1]
    periods = np.diff([r[0] for r in ons]) if len(ons) > 1 else np.array([])
    check("card gone: the LED blinks the lost-microphone pattern",
          len(ons) >= 6 and periods.size and abs(float(np.median(periods)) - 0.2) < 0.08,
          f"{len(ons)} flashes in 2 s, median period {float(np.median(periods)) if periods.size else 0:.3f} s "
          "(pattern: 0.1 s on, 0.1 s off)")
    for _ in range(20):
        states.append(show("ActiveState")["ActiveState"])
        time.sleep(0.25)
    (ALOOP / "bind").write_text("snd_aloop.0")
    back_at = boottime()
    # The recorder retries on its own backoff (up to reopen_backoff_max_s): play once it is
    # listening again, or the lesson goes by unheard.
    wait_for(listening, "the recorder listening again once the card is back", 300, every=0.2)
    player = play()
    try:
        fresh = wait_for(lambda: [e for e in read_manifest(MANIFEST) if e["file"] not in before
                                  and e["monotonic_s"] > back_at], "a segment recorded after the card came back", 900,
                         every=0.5)
    finally:
        player.wait(timeout=60)
    state = show("ActiveState", "NRestarts")
    states.append(state["ActiveState"])
    check("card gone: recording again once the card is back, no restart, never failed",
          "failed" not in states and state["NRestarts"] == restarts0 and bool(fresh[0]["mic_gaps"]),
          f"{fresh[0]['file']} began {fresh[0]['monotonic_s'] - back_at:.1f} s after the card came back, "
          f"mic_gaps {fresh[0]['mic_gaps']}; states {sorted(set(states))}, NRestarts {restarts0} -> {state['NRestarts']}; "
          f"card gone at {gone_at:.1f} s")


# ---------------------------------------------------------------------------------------------
# edge.vm=cut / final: what the previous power cut left, then recording until the next one


def check_card(stream: np.ndarray) -> None:
    """Every manifest line true, every segment the input at its offset, nothing torn."""
    entries = read_manifest(MANIFEST)
    problems = []
    files = [e["file"] for e in entries]
    if len(files) != len(set(files)):
        problems.append("a file is listed twice")
    leftovers = [p.name for p in RECORDINGS.rglob("*") if p.name.endswith((".part", ".part.json", ".tmp"))]
    if leftovers:
        problems.append(f"left after recovery: {leftovers}")
    on_card = sorted(p.relative_to(RECORDINGS).as_posix() for p in RECORDINGS.glob("*/*.wav*"))
    if on_card != sorted(files):
        problems.append(f"files and manifest disagree: {sorted(set(on_card) ^ set(files))}")
    origins: dict[str, set] = {}
    # Audio lost before the detector (a driver overflow, a full queue) is counted in the
    # manifest line, and the start_s of every later segment of that session is short by it:
    # the lost counts of each boot's last two segments tell where a new origin begins.
    lost: dict[str, list] = {}
    for entry in entries:
        path = RECORDINGS / entry["file"]
        if not path.exists():
            continue
        if file_sha256(path) != entry["sha256"]:
            problems.append(f"{entry['file']}: sha256 is not the file's")
        audio = segment_audio(entry)
        # Recovery counts what it can prove without the key: an encrypted segment's last
        # chunk, sealed as it closed just before the cut, may add to the count (edge.encryption).
        beyond_count = len(audio) - entry["samples"]
        sealed_last = entry["recovered"] and path.name.endswith(".age") and 0 < beyond_count <= CHUNK_BYTES // 2
        if beyond_count and not sealed_last:
            problems.append(f"{entry['file']}: {len(audio)} samples, the manifest says {entry['samples']}")
        counts = (entry["overflows"], entry["dropped_frames"])
        say(f"{'RECOVERED' if entry['recovered'] else 'LISTED'} {entry['file']} {len(audio)} {sum(counts)}")
        nonzero = np.flatnonzero(audio)
        if len(nonzero) == 0:
            continue
        first = int(nonzero[0])
        # Counters are per recorder process, from 0 (a loss in a boot's first segment counts);
        # one that went down is a new process.
        history = lost.setdefault(entry["boot_id"], [(0, 0), (0, 0)])
        new_losses = sum(max(now - then, 0) for now, then in zip(counts, history[-1]))
        history.append(counts)
        at = find(audio[first:], stream)
        if not at:
            stretches = input_stretches(audio[first:], stream)
            # Each loss event may split a segment once; a dropped block is a loss event.
            if stretches is None or stretches > 1 + new_losses:
                made_of = "partly not the input" if stretches is None else f"{stretches} stretches of it"
                problems.append(f"{entry['file']}: not a stretch of the input ({made_of}; {new_losses} losses "
                                f"counted since the segment before: {entry['dropped_frames']} frames dropped, "
                                f"{entry['overflows']} overflows)")
                continue
            say(f"LOSS {entry['file']}: {stretches} stretches of the input, {new_losses} losses counted")
            at = find(audio[first:first + 256], stream)
        start = round(entry["start_s"] * RATE)
        found = {start + first - a for a in at}
        known = None if len(set(history[-3:])) > 1 else origins.get(entry["boot_id"])
        widened = {o + d for o in found for d in range(-16, 17)}
        origins[entry["boot_id"]] = widened if known is None else known & widened
        if not origins[entry["boot_id"]]:
            problems.append(f"{entry['file']}: input audio, but not at the offset its start_s gives")
    check("card after the cut", not problems, "; ".join(problems) if problems else
          f"{len(entries)} segments, each listed once with its true sha256 and samples, each the input at "
          f"its offset, nothing left half-done")


def watch_parts(stop: threading.Event) -> None:
    """What the recorder has written of each open segment, as the host last saw it before the cut."""
    last: dict[str, int] = {}
    while not stop.is_set():
        for part in RECORDINGS.glob("*/*.part"):
            try:
                samples = max(stored_samples(part), 0)
            except (OSError, ValueError):
                continue
            name = part.relative_to(RECORDINGS).as_posix().removesuffix(".part")
            if last.get(name) != samples:
                last[name] = samples
                say(f"HAD {name} {samples}")
        time.sleep(0.02)


def cut_boot(final: bool) -> None:
    # The stream the recorder hears: silence, then the lesson looped from its start.
    one = lesson()
    stream = np.tile(one, 40)
    wait_for(listening, "the recorder listening (after recovering the last cut)", 600)
    say(f"INFO recorder listening at {boottime():.1f} s after boot")
    check_card(stream)
    if final:
        return
    looped = Path("/run/edge-vm-lesson-x40.wav")
    with wave.open(str(looped), "wb") as wav:
        wav.setnchannels(1), wav.setsampwidth(2), wav.setframerate(RATE)
        wav.writeframes(stream.tobytes())
    stop = threading.Event()
    threading.Thread(target=watch_parts, args=(stop,), daemon=True).start()
    player = play(looped)
    # Random moments while recording: from when the recorder has a segment open (it may lag
    # behind the audio on an emulated CPU) on.
    wait_for(lambda: any(RECORDINGS.glob("*/*.part")), "a segment being recorded", 600, every=0.02)
    say("RECORDING")
    player.wait()  # the host cuts the power long before the end


def main() -> int:
    mode = re.search(r"\bedge\.vm=(\w+)", Path("/proc/cmdline").read_text()).group(1)
    try:
        if mode == "mic":
            mic_boot()
        else:
            cut_boot(final=(mode == "final"))
    except Exception as exc:  # noqa: BLE001
        say(f"FAIL {mode}: {exc}")
        for line in traceback.format_exc().splitlines()[-8:]:
            say(f"    {line}")
        journal = run(["journalctl", "-b", "-u", UNIT, "--no-pager", "-n", "15", "-o", "cat"]).stdout
        for line in journal.splitlines():
            say(f"    journal: {line}")
    say("END")
    out.flush()
    subprocess.run(["systemctl", "poweroff"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
