"""The system test's checks, run as root inside a Debian booted with systemd as PID 1
(tests/system/run.sh boots it and runs this file from a fresh clone of the committed HEAD).

The recorder is installed with `make install` exactly as on a Pi. Its microphone is an ALSA
`file` plugin PCM whose `infile` is a FIFO written by tests/system/feeder.py, a transient unit
of its own: SIGSTOP on the feeder is a microphone that stays open and sends nothing.

Each check prints one line, ``PASS name: what was seen`` or ``FAIL name: what went wrong``
(with the evidence indented below it); run.sh counts them. Standard library only: this runs
on the system's own Python.
"""

from __future__ import annotations

import json
import math
import os
import pwd
import re
import stat
import subprocess
import sys
import time
import traceback
import wave
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import feeder  # noqa: E402  (beside this file, not a package)

REPO = Path(__file__).resolve().parents[2]
UNIT = "edge-recorder.service"
FEEDER_UNIT = "edge-test-feeder.service"
CONFIG = Path("/etc/edge-recorder/edge.yaml")
STATE = Path("/var/lib/edge-recorder")
RUNTIME = Path("/run/edge-recorder")
RECORDINGS = STATE / "recordings"
WORK = Path("/srv/edge-system-test")
FIFO = Path("/run/edge-system-test/mic.fifo")
PCM = "edgetest"
RATE = feeder.RATE
SAMPLE_BYTES = feeder.SAMPLE_BYTES
OTHER_USER = "teacher"
TEN_MINUTES_S = 600.0
# The recorder's own part of a stop, SIGTERM to its exit: it polls the microphone every
# 0.25 s and closes the capture process with SIGKILL; the socket's thread, the status and
# an open segment's last second add little. A thread that does not wake to end took 5 s.
PROMPT_STOP_S = 3.0

# The test config changes only what the README documents: the device, and a shorter longest
# wait between reopen attempts so that a one-minute stall holds as many attempts as ten
# minutes would at the default (30 s).
STALL_TIMEOUT_S = 2.0
REOPEN_BACKOFF_MAX_S = 1.0
DEFAULT_REOPEN_BACKOFF_MAX_S = 30.0
TEST_CONFIG = f"""\
audio:
  device: {PCM}
  stall_timeout_s: {STALL_TIMEOUT_S}
  reopen_backoff_max_s: {REOPEN_BACKOFF_MAX_S}
storage:
  recordings_dir: {RECORDINGS}
  device_name: systemtest
service:
  status_file: {RUNTIME / 'status.json'}
"""
ASOUND_CONF = (f'pcm.{PCM} {{ type plug slave.pcm {{ type file slave.pcm "null" file "/dev/null" '
               f'infile "{FIFO}" format "raw" }} }}\n')


class Failed(Exception):
    """A check saw something other than what it expects; the message says what."""

    def __init__(self, message: str, evidence: str = ""):
        super().__init__(message)
        self.evidence = evidence


# ---------------------------------------------------------------------------------------------
# Small tools


def run(command: list[str], timeout: float = 60, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise Failed(f"'{' '.join(command)}' exited with {result.returncode}",
                     (result.stdout + result.stderr).strip())
    return result


def wait_for(condition: Callable[[], object], what: str, timeout: float, every: float = 0.2):
    """Poll ``condition`` until it returns something true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:.0f} s waiting for {what}", journal())
        time.sleep(every)


def show(unit: str = UNIT, *props: str) -> dict[str, str]:
    out = run(["systemctl", "show", unit, *[f"--property={p}" for p in props]], check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def stop_times() -> tuple[float, float]:
    """The last stop of the unit, from systemd's clock: seconds from SIGTERM (the unit
    leaving `active`) to the recorder's exit, and from then to the unit's end (ExecStopPost=)."""
    t = {k: int(v) / 1e6 for k, v in show(UNIT, "ActiveExitTimestampMonotonic", "ExecMainExitTimestampMonotonic",
                                           "InactiveEnterTimestampMonotonic").items()}
    return (t["ExecMainExitTimestampMonotonic"] - t["ActiveExitTimestampMonotonic"],
            t["InactiveEnterTimestampMonotonic"] - t["ExecMainExitTimestampMonotonic"])


def journal(lines: int = 25, unit: str = UNIT) -> str:
    return run(["journalctl", "-u", unit, "--no-pager", "-o", "short-monotonic", "-n", str(lines)]).stdout.strip()


TIMESPAN_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0,
                  "w": 604800.0, "M": 2629800.0, "y": 31557600.0}


def timespan_s(text: str) -> float:
    """systemd's printed timespan ("1min 30s", "100ms", "infinity", "0") in seconds."""
    text = text.strip()
    if text == "infinity":
        return math.inf
    if text in ("", "0"):
        return 0.0
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)\s*([a-zA-Z]+)", text):
        total += float(number) * TIMESPAN_UNITS[unit]
    return total


def manifest() -> list[dict]:
    """The segment lines of the card's manifests (one per day folder, docs/card-layout.md), by seq."""
    entries = []
    for path in RECORDINGS.glob("*/manifest.jsonl"):
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            continue  # a day retired while we looked
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line is the recorder's business, not a finished segment
            if isinstance(entry, dict) and "seq" in entry and "deleted" not in entry:
                entries.append(entry)
    return sorted(entries, key=lambda entry: entry["seq"])


def open_part(min_audio_s: float) -> Optional[Path]:
    """The segment being recorded, once at least ``min_audio_s`` of it is on the card."""
    for part in sorted(RECORDINGS.glob("*/*.wav.part")):
        try:
            if part.stat().st_size >= 44 + min_audio_s * RATE * SAMPLE_BYTES:
                return part
        except FileNotFoundError:
            pass
    return None


def segment_bytes(entry: dict) -> bytes:
    with wave.open(str(RECORDINGS / entry["file"])) as wav:
        if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (RATE, 1, SAMPLE_BYTES):
            raise Failed(f"{entry['file']} is not 16 kHz mono 16-bit")
        return wav.readframes(wav.getnframes())


class Stream:
    """What the feeder sends: the input recording, looped in whole chunks."""

    def __init__(self, raw: bytes):
        self.loop = feeder.looped(raw)
        self.samples = len(self.loop) // SAMPLE_BYTES

    def offsets(self, audio: bytes) -> set[int]:
        """Every stream position (in samples, modulo the loop) where ``audio`` is found whole."""
        if not audio:
            return set()
        copies = len(audio) // len(self.loop) + 2
        haystack = self.loop * copies
        probe = audio[:4096]
        found = set()
        start = haystack.find(probe)
        while 0 <= start < len(self.loop):
            if start % SAMPLE_BYTES == 0 and haystack[start:start + len(audio)] == audio:
                found.add(start // SAMPLE_BYTES)
            start = haystack.find(probe, start + 1)
        return found


def seconds(entry: dict) -> float:
    return entry["samples"] / RATE


def flowing(status_text: str) -> bool:
    """Whether systemd's STATUS line says audio is coming in."""
    return status_text.split(" ", 1)[0] in ("listening", "speech")


def wait_active(timeout: float) -> dict:
    def active():
        state = show(UNIT, "ActiveState", "SubState", "Result", "MainPID", "NRestarts", "StatusText")
        if state["ActiveState"] == "failed":
            raise Failed(f"{UNIT} failed (Result={state['Result']})", journal())
        return state if state["ActiveState"] == "active" and state["SubState"] == "running" else None
    return wait_for(active, f"{UNIT} to be active (running)", timeout)


def paused_with_open_segment() -> Path:
    """The recorder's main process SIGSTOPped while a segment is being recorded, so that the
    segment is still open when the signal that the check is about arrives."""
    for _ in range(5):
        part = wait_for(lambda: open_part(0.5), "a segment being recorded", 60)
        run(["systemctl", "kill", "--kill-whom=main", "-s", "SIGSTOP", UNIT], check=True)
        if part.exists():
            return part
        run(["systemctl", "kill", "--kill-whom=main", "-s", "SIGCONT", UNIT], check=True)
    raise Failed("every segment ended before the recorder could be paused in it")


def starts_in_journal() -> int:
    """How often systemd started the unit in this boot."""
    log = run(["journalctl", "-b", "-u", UNIT, "--no-pager", "-o", "cat"]).stdout
    return sum(1 for line in log.splitlines() if line.startswith("Starting "))


def feeder_signal(signal_name: str) -> None:
    run(["systemctl", "kill", "--kill-whom=main", "-s", signal_name, FEEDER_UNIT], check=True)


def iso_time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# ---------------------------------------------------------------------------------------------
# The checks, in the order they run. Each returns what it saw, or raises Failed.


class SystemTest:
    def __init__(self):
        self.stream: Optional[Stream] = None
        self.unit: dict[str, str] = {}

    # -- set-up (part of the first check: without it nothing else can run) ------------------

    def prepare_microphone(self) -> None:
        WORK.mkdir(parents=True, exist_ok=True)
        with wave.open(str(REPO / "tests/data/lesson_15s.wav")) as wav:
            raw = wav.readframes(wav.getnframes())
        (WORK / "input.raw").write_bytes(raw)
        self.stream = Stream(raw)
        FIFO.parent.mkdir(parents=True, exist_ok=True)
        FIFO.parent.chmod(0o755)
        if not FIFO.exists():
            os.mkfifo(FIFO, 0o644)
        Path("/etc/asound.conf").write_text(ASOUND_CONF)
        run(["systemd-run", "--unit", FEEDER_UNIT, "--quiet", sys.executable,
             str(Path(__file__).parent / "feeder.py"), str(FIFO), str(WORK / "input.raw")], check=True)
        # An edited config is kept by `make install`, as on a Pi set up by hand before.
        CONFIG.parent.mkdir(parents=True, exist_ok=True)
        CONFIG.write_text(TEST_CONFIG)
        if run(["id", OTHER_USER]).returncode != 0:
            run(["useradd", "--create-home", OTHER_USER], check=True)

    def check_install(self) -> str:
        self.prepare_microphone()
        started = time.monotonic()
        result = run(["make", "install"], cwd=REPO, timeout=600)
        took = time.monotonic() - started
        (WORK / "install.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise Failed(f"make install exited with {result.returncode} after {took:.0f} s",
                         "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:]))
        enabled = run(["systemctl", "is-enabled", UNIT]).stdout.strip()
        if enabled != "enabled":
            raise Failed(f"{UNIT} is '{enabled}' after make install, not enabled")
        self.unit = show(UNIT, "Type", "Restart", "RestartUSec", "RestartSteps", "RestartMaxDelayUSec",
                         "StartLimitIntervalUSec", "StartLimitBurst", "WatchdogUSec", "TimeoutStopUSec")
        return f"make install took {took:.0f} s; {UNIT} enabled"

    def check_ready_and_status(self) -> str:
        state = wait_active(120)
        if self.unit["Type"] != "notify":
            raise Failed(f"Type={self.unit['Type']}: systemd does not wait for READY=1")
        times = show(UNIT, "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
        ready_after = (int(times["ActiveEnterTimestampMonotonic"])
                       - int(times["ExecMainStartTimestampMonotonic"])) / 1e6
        text = wait_for(lambda: (lambda t: t if flowing(t) else None)(show(UNIT, "StatusText")["StatusText"]),
                        "a STATUS line saying the recorder listens", 30)
        if not re.fullmatch(r"(listening|speech) · \d+ segments? today · [\d.]+ [KMGT]B free", text):
            raise Failed(f"STATUS line {text!r} is not 'listening · N segments today · X GB free'")
        return (f"READY=1 (Type=notify, active {ready_after:.1f} s after the process started, "
                f"pid {state['MainPID']}); STATUS: {text!r}")

    def check_status_as_root(self) -> str:
        result = run(["edge", "status"])
        out = result.stdout.strip()
        if result.returncode != 0:
            raise Failed(f"edge status exited with {result.returncode}", out + result.stderr)
        if not re.search(r"\brunning\b", out) or re.search(r"not running", out, re.I):
            raise Failed("edge status does not say the recorder is running", out)
        if "listening" not in out and "speech" not in out:
            raise Failed("edge status does not show the listening state", out)
        return f"exit 0: {out.splitlines()[0].strip()!r}, {out.splitlines()[1].strip()!r}"

    def check_status_in_memory(self) -> str:
        """Rewritten every 5 s: in the RuntimeDirectory (a tmpfs), readable by the group only."""
        status = RUNTIME / "status.json"
        if not status.exists() or (STATE / "status.json").exists():
            raise Failed(f"the status is not (only) at {status}", run(["ls", "-l", str(RUNTIME), str(STATE)]).stdout)
        filesystem = run(["findmnt", "--noheadings", "--output", "FSTYPE", "--target", str(status)]).stdout.strip()
        info = status.stat()
        owner = run(["stat", "--format", "%U:%G %a", str(status)], check=True).stdout.strip()
        if filesystem != "tmpfs" or owner != "edge-recorder:edge-recorder 640" or stat.S_IMODE(
                RUNTIME.stat().st_mode) != 0o750 or info.st_size == 0:
            raise Failed(f"{status}: {owner} on {filesystem or 'an unknown filesystem'}, folder "
                         f"{oct(stat.S_IMODE(RUNTIME.stat().st_mode))}; expected edge-recorder:edge-recorder "
                         "640 on tmpfs in a 0750 folder")
        return f"{status}: {owner} on {filesystem}; nothing at {STATE / 'status.json'}"

    def check_status_as_other_user(self) -> str:
        result = run(["runuser", "-u", OTHER_USER, "--", "edge", "status"])
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        evidence = "\n".join(lines[-12:])
        if "Traceback" in evidence or len(lines) != 1:
            raise Failed(f"{len(lines)} lines of output (exit {result.returncode}), not one", evidence)
        if result.returncode != 2:
            raise Failed(f"exit code {result.returncode}, not 2", evidence)
        if "/etc/edge-recorder" not in lines[0] and str(STATE) not in lines[0]:
            raise Failed("the message does not name the file it cannot read", evidence)
        if "sudo" not in lines[0] and "group" not in lines[0]:
            raise Failed("the message does not say how to run it (sudo or a group)", evidence)
        return f"exit 2 as {OTHER_USER}: {lines[0].strip()!r}"

    def check_status_in_group(self) -> str:
        """The advice of the message above, followed: the user joins the service's group."""
        run(["usermod", "--append", "--groups", "edge-recorder", OTHER_USER], check=True)
        result = run(["runuser", "-u", OTHER_USER, "--", "edge", "status"])
        out = (result.stdout + result.stderr).strip()
        if result.returncode != 0 or re.search(r"not running", out, re.I) or "running" not in out:
            raise Failed(f"edge status as {OTHER_USER} in the group edge-recorder exited with "
                         f"{result.returncode} and does not say the recorder runs", out)
        return f"exit 0 as {OTHER_USER} in the group edge-recorder: {out.splitlines()[0].strip()!r}"

    def check_device_policy(self) -> str:
        """A character device outside DeviceAllow= refuses to open inside the unit's cgroup and
        opens outside it, for the same user: the refusal is the device policy's."""
        node = Path("/dev/edge-system-test-not-allowed")  # /run is mounted nodev
        if not node.exists():
            os.mknod(node, 0o666 | 0o020000, os.makedev(10, 200))  # /dev/net/tun: no hardware needed
        node.chmod(0o666)
        policy = show(UNIT, "DevicePolicy", "DeviceAllow", "ControlGroup")
        cgroup = Path("/sys/fs/cgroup") / policy["ControlGroup"].lstrip("/")
        probe = f"import os; os.close(os.open({str(node)!r}, os.O_RDWR)); print('opened')"
        user = pwd.getpwnam("edge-recorder")
        as_service_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                           "--init-groups", sys.executable, "-c", probe]
        outside = run(as_service_user)
        if outside.returncode != 0:
            raise Failed("the probe cannot open the node even outside the service: no proof",
                         outside.stderr.strip())
        inside = run(["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup), *as_service_user])
        allowed = ", ".join(v for k, v in (line.split("=", 1) for line in run(
            ["systemctl", "show", UNIT, "--property=DeviceAllow"]).stdout.splitlines()) if k == "DeviceAllow")
        if inside.returncode == 0:
            raise Failed(f"char 10:200 opened inside {policy['ControlGroup']} "
                         f"(DevicePolicy={policy['DevicePolicy']}, DeviceAllow={allowed})")
        if "Operation not permitted" not in inside.stderr:
            raise Failed("the probe inside the unit failed, but not with EPERM", inside.stderr.strip())
        return (f"char 10:200 opens as edge-recorder outside the unit and fails with EPERM inside "
                f"{policy['ControlGroup']} (DevicePolicy={policy['DevicePolicy']}; DeviceAllow={allowed})")

    def check_sigkill_recovered(self) -> str:
        before = show(UNIT, "NRestarts", "MainPID")
        part = paused_with_open_segment()
        killed_at = time.monotonic()
        run(["systemctl", "kill", "--kill-whom=main", "-s", "SIGKILL", UNIT], check=True)
        restart_s = timespan_s(self.unit["RestartUSec"])
        state = wait_for(lambda: (lambda s: s if s["NRestarts"] != before["NRestarts"]
                                  and s["ActiveState"] == "active" else None)(
            show(UNIT, "NRestarts", "ActiveState", "MainPID")), "the automatic restart", restart_s + 60)
        back_after = time.monotonic() - killed_at
        name = str(part.relative_to(RECORDINGS)).removesuffix(".part")
        entry = wait_for(lambda: next((e for e in manifest() if e["file"] == name), None),
                         f"{name} in the manifest", 30)
        if entry.get("recovered") is not True:
            raise Failed(f"{name} is in the manifest with recovered: {entry.get('recovered')}")
        if not self.stream.offsets(segment_bytes(entry)):
            raise Failed(f"the recovered {name} ({seconds(entry):.2f} s) is not a stretch of the input")
        return (f"pid {before['MainPID']} killed while {name} was open; restarted by systemd "
                f"(NRestarts {before['NRestarts']} -> {state['NRestarts']}) and active again after "
                f"{back_after:.1f} s; {name} listed with recovered: true, {seconds(entry):.2f} s of input audio")

    def check_stop_finishes_segment(self) -> str:
        part = paused_with_open_segment()
        started = time.monotonic()
        # systemd sends SIGCONT right after SIGTERM: the paused recorder handles the stop.
        result = run(["systemctl", "stop", UNIT], timeout=120)
        took = time.monotonic() - started
        state = show(UNIT, "ActiveState", "Result")
        recorder_s, after_s = stop_times()
        name = str(part.relative_to(RECORDINGS)).removesuffix(".part")
        entry = next((e for e in manifest() if e["file"] == name), None)
        if result.returncode != 0 or state["Result"] != "success" or recorder_s > PROMPT_STOP_S:
            raise Failed(f"systemctl stop took {took:.1f} s (the recorder {recorder_s:.1f} s of it, more than "
                         f"{PROMPT_STOP_S:g} s, ExecStopPost= {after_s:.1f} s), Result={state['Result']}", journal())
        if part.exists() or entry is None:
            raise Failed(f"{name} was not finished by the stop (part left: {part.exists()})", journal())
        if entry["recovered"]:
            raise Failed(f"{name} was only recovered, not finished by the stop")
        if not self.stream.offsets(segment_bytes(entry)):
            raise Failed(f"{name} ({seconds(entry):.2f} s) is not a stretch of the input")
        return (f"stopped in {took:.1f} s (the recorder {recorder_s:.2f} s, ExecStopPost= {after_s:.2f} s; "
                f"Result=success); {name} finished with "
                f"{seconds(entry):.2f} s of input audio, recovered: false")

    def check_status_after_stop(self) -> str:
        try:
            result = run(["edge", "status"])
            out = (result.stdout + result.stderr).strip()
            first = out.splitlines()[0] if out else ""
            if re.search(r"not running", out, re.I) is None or re.search(r"\brunning \(pid", out):
                raise Failed(f"edge status right after systemctl stop (exit {result.returncode}) "
                             "does not say the recorder is not running", out)
            return f"exit {result.returncode}: {first.strip()!r}"
        finally:
            run(["systemctl", "start", UNIT], timeout=180)
            wait_active(120)

    # -- a stalled microphone -------------------------------------------------------------------

    def stall_duration_s(self) -> tuple[float, int]:
        """A stall as long as the reopen attempts of ten minutes at the default backoff, and
        long enough for a watchdog restart to happen inside it."""
        cycles = math.ceil(TEN_MINUTES_S / (STALL_TIMEOUT_S + DEFAULT_REOPEN_BACKOFF_MAX_S))
        attempts_s = STALL_TIMEOUT_S + cycles * (STALL_TIMEOUT_S + REOPEN_BACKOFF_MAX_S)
        watchdog_cycle_s = timespan_s(self.unit["WatchdogUSec"]) + timespan_s(self.unit["RestartUSec"]) + 10
        return max(attempts_s, watchdog_cycle_s), cycles

    def check_stall(self) -> list[tuple[str, Callable[[], str]]]:
        """SIGSTOP on the feeder for a long stall, watched every half second; then SIGCONT."""
        wait_active(60)
        before = show(UNIT, "NRestarts", "InvocationID", "ControlGroup")
        procs = Path("/sys/fs/cgroup") / before["ControlGroup"].lstrip("/") / "cgroup.procs"

        def processes() -> int:
            try:
                return len(procs.read_text().split())
            except FileNotFoundError:
                return 0
        processes_before = processes()
        seqs_before = {e["seq"] for e in manifest()}
        stall_s, cycles = self.stall_duration_s()
        feeder_signal("SIGSTOP")
        stopped_at = time.monotonic()
        reported: Optional[tuple[float, str]] = None
        seen: list[tuple[float, dict]] = []
        while time.monotonic() - stopped_at < stall_s:
            state = show(UNIT, "ActiveState", "SubState", "Result", "NRestarts", "StatusText")
            now = time.monotonic() - stopped_at
            state["processes"] = str(processes())
            seen.append((now, state))
            if reported is None and state["ActiveState"] == "active" and not flowing(state["StatusText"]):
                reported = (now, state["StatusText"])
            time.sleep(0.5)
        feeder_signal("SIGCONT")
        resumed_wall = time.time()
        resumed_at = time.monotonic()
        restarts = int(seen[-1][1]["NRestarts"]) - int(before["NRestarts"])
        most_processes = max(int(state["processes"]) for _, state in seen)
        failed = [(t, s) for t, s in seen if s["ActiveState"] == "failed"]
        watchdog = [(t, s) for t, s in seen if s["Result"] == "watchdog"]
        states = sorted({f"{s['ActiveState']}/{s['SubState']}" for _, s in seen})
        timeline = "\n".join(f"+{t:5.1f} s {s['ActiveState']}/{s['SubState']} Result={s['Result']} "
                             f"NRestarts={s['NRestarts']} processes={s['processes']} {s['StatusText']!r}"
                             for i, (t, s) in enumerate(seen) if i == 0 or s != seen[i - 1][1])

        def reported_check() -> str:
            if reported is None or reported[0] > STALL_TIMEOUT_S + 10:
                raise Failed("the stall was not shown in the STATUS line within "
                             f"{STALL_TIMEOUT_S + 10:.0f} s", timeline)
            return f"after {reported[0]:.1f} s: STATUS {reported[1]!r}"

        def never_failed_check() -> str:
            if failed:
                raise Failed(f"{UNIT} failed {failed[0][0]:.0f} s into the stall "
                             f"(Result={failed[0][1]['Result']})", timeline + "\n" + journal())
            return (f"{stall_s:.0f} s of stall ({cycles} reopen cycles of {STALL_TIMEOUT_S:.0f} s + "
                    f"{REOPEN_BACKOFF_MAX_S:.0f} s, as many as 10 minutes at the default "
                    f"{DEFAULT_REOPEN_BACKOFF_MAX_S:.0f} s backoff): states {', '.join(states)}, never failed")

        def no_watchdog_check() -> str:
            if restarts or watchdog:
                first = watchdog[0][0] if watchdog else None
                raise Failed(f"{restarts} restart(s) during the stall" +
                             (f", the first by the watchdog {first:.0f} s in" if first is not None else ""),
                             timeline + "\n" + journal(15))
            return f"no restart and no watchdog timeout in {stall_s:.0f} s (NRestarts stayed {before['NRestarts']})"

        def resumes_check() -> str:
            timeout = (REOPEN_BACKOFF_MAX_S + STALL_TIMEOUT_S + timespan_s(self.unit["WatchdogUSec"])
                       + timespan_s(self.unit["RestartUSec"]) + 40)

            def fresh():
                return next((e for e in manifest() if e["seq"] not in seqs_before
                             and iso_time(e["start"]) >= resumed_wall - 5.0 and not e["recovered"]), None)
            entry = wait_for(fresh, "a segment recorded after the audio came back", timeout)
            if not self.stream.offsets(segment_bytes(entry)):
                raise Failed(f"{entry['file']} ({seconds(entry):.2f} s), recorded after the stall, "
                             "is not a stretch of the input")
            gaps = entry.get("mic_gaps") or []
            if not gaps:
                raise Failed(f"{entry['file']}, the first segment after the stall, has no mic_gaps "
                             "in its manifest line", json.dumps(entry))
            return (f"{entry['file']} ({seconds(entry):.2f} s of input audio) began "
                    f"{iso_time(entry['start']) - resumed_wall:.1f} s after the audio came back, stored "
                    f"{time.monotonic() - resumed_at:.1f} s after; its manifest line has the gap: {gaps[-1]}")

        def no_leftovers_check() -> str:
            after, = wait_for(lambda: (lambda n: (n,) if n <= processes_before else None)(processes()),
                              f"the unit to be back to {processes_before} process(es)", 30)
            return (f"processes in the unit: {processes_before} before the stall, at most {most_processes} "
                    f"during it, {after} after")

        return [("stall: shown in systemctl status", reported_check),
                ("stall: never a failed unit", never_failed_check),
                ("stall: handled without a watchdog restart", no_watchdog_check),
                ("stall: recording resumes once audio returns", resumes_check),
                ("stall: no capture process left behind", no_leftovers_check)]

    def check_stop_during_stall(self) -> str:
        wait_active(60)
        wait_for(lambda: flowing(show(UNIT, "StatusText")["StatusText"]), "audio flowing again", 60)
        feeder_signal("SIGSTOP")
        try:
            wait_for(lambda: not flowing(show(UNIT, "StatusText")["StatusText"]),
                     "the stall to show in the STATUS line", STALL_TIMEOUT_S + 15)
            started = time.monotonic()
            run(["systemctl", "stop", UNIT], timeout=120)
            took = time.monotonic() - started
            state = show(UNIT, "Result")
            recorder_s, after_s = stop_times()
        finally:
            feeder_signal("SIGCONT")
            run(["systemctl", "start", UNIT], timeout=180)
        if state["Result"] != "success" or recorder_s > PROMPT_STOP_S:
            raise Failed(f"systemctl stop during a stall took {took:.1f} s: the recorder {recorder_s:.1f} s "
                         f"(more than {PROMPT_STOP_S:g} s), ExecStopPost= {after_s:.1f} s; "
                         f"Result={state['Result']}", journal(12))
        wait_active(120)
        return (f"stopped in {took:.1f} s (the recorder {recorder_s:.2f} s, ExecStopPost= {after_s:.2f} s), "
                "Result=success; started again")

    # -- the restart policy ---------------------------------------------------------------------

    def restart_delays(self) -> Callable[[int], float]:
        """The wait systemd puts before the n-th automatic restart (1-based), from the loaded
        unit: RestartSec=, growing to RestartMaxDelaySec= in RestartSteps= (systemd >= 254)."""
        first = timespan_s(self.unit["RestartUSec"])
        steps = int(self.unit.get("RestartSteps") or 0)
        longest = timespan_s(self.unit.get("RestartMaxDelayUSec") or "infinity")

        def delay(n: int) -> float:
            if steps == 0 or longest == math.inf or longest <= first or n <= 1:
                return first
            if n > steps:
                return longest
            return first * (longest / first) ** ((n - 1) / steps)
        return delay

    def check_restart_policy(self) -> str:
        """Ten minutes of restarts, at the densest pace the unit allows, never end failed.

        Whatever the fault (a hang ended by the watchdog, a crash at start), systemd waits at
        least the restart delay between two starts, so ten minutes hold at most N starts. The
        start limit counts every start, automatic or manual: N starts back to back (SIGKILL,
        then `systemctl restart`, which skips the delay) are denser than any fault can make
        them, so if they leave the unit running, ten minutes of a real fault do too."""
        if self.unit["Restart"] not in ("always", "on-failure", "on-abnormal"):
            raise Failed(f"Restart={self.unit['Restart']}: a crash is not restarted at all")
        delay = self.restart_delays()
        budget, starts = TEN_MINUTES_S, 1
        while starts < 200 and budget >= delay(starts):
            budget -= delay(starts)
            starts += 1
        interval = timespan_s(self.unit["StartLimitIntervalUSec"])
        limit = (f"StartLimitBurst={self.unit['StartLimitBurst']} in StartLimitIntervalSec={interval:.0f} s"
                 if interval > 0 and int(self.unit["StartLimitBurst"]) > 0 else "no start limit")
        earlier = starts_in_journal()
        started = time.monotonic()
        for done in range(1, starts + 1):
            run(["systemctl", "kill", "--kill-whom=main", "-s", "SIGKILL", UNIT], check=True)
            result = run(["systemctl", "restart", UNIT], timeout=180)
            state = show(UNIT, "ActiveState", "SubState", "Result")
            if result.returncode != 0 or state["ActiveState"] == "failed":
                log = journal(8)
                why = "the start limit was hit: " if "repeated too quickly" in log else ""
                raise Failed(f"start {done} of {starts} (in {time.monotonic() - started:.0f} s, after "
                             f"{earlier} earlier starts in this boot): {why}{UNIT} {state['ActiveState']}, "
                             f"Result={state['Result']} ({limit})", (result.stderr.strip() + "\n" + log).strip())
            wait_active(120)
        return (f"{starts} starts in {time.monotonic() - started:.0f} s after {earlier} earlier ones, each after a SIGKILL "
                f"(RestartSec={timespan_s(self.unit['RestartUSec']):g} s allows at most {starts} in 10 minutes; "
                f"{limit}): still active, Result={show(UNIT, 'Result')['Result']}")


def main() -> int:
    test = SystemTest()
    checks: list[tuple[str, Callable]] = [
        ("make install", test.check_install),
        ("READY and the STATUS line", test.check_ready_and_status),
        ("edge status as root", test.check_status_as_root),
        ("the status file is in memory, not on the card", test.check_status_in_memory),
        ("edge status as a user who is not root", test.check_status_as_other_user),
        ("edge status as a user in the group edge-recorder", test.check_status_in_group),
        ("device policy: a node outside DeviceAllow= refuses to open", test.check_device_policy),
        ("SIGKILL -> restart -> recovered segment", test.check_sigkill_recovered),
        ("systemctl stop finishes the open segment", test.check_stop_finishes_segment),
        ("edge status after systemctl stop", test.check_status_after_stop),
        ("stall", test.check_stall),
        ("stall: systemctl stop is prompt", test.check_stop_during_stall),
        ("restart policy: 10 minutes of restarts never end failed", test.check_restart_policy),
    ]
    failed = 0
    for index, (name, check) in enumerate(checks):
        started = time.monotonic()
        try:
            outcome = check()
        except Exception as exc:  # noqa: BLE001  (every failure is reported, none ends the run)
            evidence = exc.evidence if isinstance(exc, Failed) else traceback.format_exc()
            report(False, name, str(exc) or type(exc).__name__, evidence, started)
            failed += 1
            if index == 0:  # nothing is installed: the other checks cannot mean anything
                for rest, _ in checks[1:]:
                    report(False, rest, "not run: make install failed", "", time.monotonic())
                return 1
            continue
        subchecks = outcome if isinstance(outcome, list) else [(name, lambda o=outcome: o)]
        for sub_name, sub in subchecks:
            try:
                report(True, sub_name, sub(), "", started)
            except Exception as exc:  # noqa: BLE001
                evidence = exc.evidence if isinstance(exc, Failed) else traceback.format_exc()
                report(False, sub_name, str(exc), evidence, started)
                failed += 1
            started = time.monotonic()
    return 1 if failed else 0


def report(ok: bool, name: str, message: str, evidence: str, started: float) -> None:
    took = time.monotonic() - started
    print(f"{'PASS' if ok else 'FAIL'} {name}: {message} [{took:.0f} s]", flush=True)
    for line in evidence.strip().splitlines()[-20:]:
        print(f"    {line}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
