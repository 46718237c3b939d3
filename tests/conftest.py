"""Shared test material: the labelled lesson clip and real ALSA capture devices.

A capture device here is a real ALSA PCM of type `file` (over the `null` PCM) whose
`infile` is raw audio, wrapped in `plug`: PortAudio and PyAudio open it by name exactly
as they open a USB microphone, and it delivers the file's bytes unchanged.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from bench.labels import read_speech_intervals
from edge.audio import EndOfInput
from edge.wavio import read_wav_16k

DATA = Path(__file__).parent / "data"
LESSON_WAV = DATA / "lesson_15s.wav"
# Data too large for the repository: beside a clone, as on the team's machines and CI.
SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
# Set by .ci/run: a test whose outside requirement (LazyFS, ../shared data) is missing fails
# instead of skipping, so CI cannot pass by running less.
REQUIRE_ALL = "EDGE_REQUIRE_ALL"
RATE = 16000
WINDOW = 512


T0 = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)


class FakeClock:
    """A Pi's clocks as the test sets them: wall time, CLOCK_BOOTTIME, boot id, NTP state."""

    def __init__(self, wall=T0, boottime=100.0, boot="boot-a", synced=True):
        self.now, self.boot_s, self.boot, self.is_synced = wall, boottime, boot, synced

    def wall(self):
        return self.now

    def boottime(self):
        return self.boot_s

    def boot_id(self):
        return self.boot

    def synced(self):
        return self.is_synced

    def advance(self, seconds):
        self.now += timedelta(seconds=seconds)
        self.boot_s += seconds

    def reboot(self, boot, wall, synced):
        self.boot, self.boot_s, self.now, self.is_synced = boot, 10.0, wall, synced


def skip_unless_available(missing: str | None) -> None:
    """Skips the test with ``missing`` (what is absent and what would enable it), or fails it
    when $EDGE_REQUIRE_ALL is 1; does nothing when ``missing`` is None."""
    if missing is None:
        return
    if os.environ.get(REQUIRE_ALL) == "1":
        pytest.fail(f"{missing}; {REQUIRE_ALL}=1 requires it", pytrace=False)
    pytest.skip(missing)


@pytest.fixture
def lazyfs_built():
    """The LazyFS module (tests/lazyfs.py), once LazyFS can mount here."""
    import lazyfs

    skip_unless_available(lazyfs.unavailable())
    return lazyfs


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the clone (speech corpora for the quick bench)."""
    needed = SHARED_DATA / "speechocean762-adult"
    skip_unless_available(None if needed.is_dir() else
                          f"../shared data: {needed} not found (a checkout of the team's shared folder "
                          "beside the clone enables this)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def no_installed_config(monkeypatch, tmp_path):
    """Tests mean the bundled defaults, even on a machine where the service is installed."""
    import edge.config

    monkeypatch.setattr(edge.config, "SYSTEM_CONFIG", tmp_path / "not-installed" / "edge.yaml")


@pytest.fixture(autouse=True)
def own_catalogue(monkeypatch, tmp_path):
    """`edge list DIR` keeps its catalogue in the user's cache folder: the test's, not ours."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def root_log_level_as_it_was():
    """edge's main sets the root logger's level (--log-level), once per process for a command;
    tests call it in-process, many times in one worker: each leaves the level as it found it
    (a fuzz run at "error" would hide every warning from the tests after it)."""
    import logging

    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


@pytest.fixture
def ext4_card(tmp_path):
    """A small ext4 filesystem on a loop device, which the test can make fail with EIO
    (FS_IOC_SHUTDOWN, as xfs_io's `shutdown`) and then mount again like a re-seated card."""
    if os.geteuid() != 0 or shutil.which("losetup") is None or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs root, losetup and mkfs.ext4 for a failing ext4 card")
    image = tmp_path / "card.img"
    subprocess.run(["truncate", "-s", "32m", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    attached = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True)
    if attached.returncode != 0:
        pytest.skip(f"no loop device here: {attached.stderr.strip()}")
    loop = attached.stdout.strip()
    mount = tmp_path / "card"
    mount.mkdir()
    subprocess.run(["mount", loop, str(mount)], check=True)
    yield loop, mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)
    subprocess.run(["losetup", "-d", loop], check=True)


@pytest.fixture(scope="session")
def lesson() -> np.ndarray:
    return read_wav_16k(LESSON_WAV)


@pytest.fixture(scope="session")
def lesson_speech() -> list[tuple[float, float]]:
    return read_speech_intervals(DATA / "lesson_15s.csv")


class AlsaDevices:
    """Writes an ALSA configuration with one PCM per call to ``add`` (and the others)."""

    def __init__(self, folder: Path, monkeypatch):
        self.folder = folder
        self.config = folder / "asound.conf"
        self.pcms: dict[str, str] = {}  # name -> its definition
        self.plugins: dict[str, Path] = {}  # ALSA PCM type -> its library
        monkeypatch.setenv("ALSA_CONFIG_PATH", str(self.config))

    def add(self, name: str, samples: np.ndarray, only_rate: int | None = None, failing: bool = False) -> Path:
        """A capture PCM delivering ``samples``; with ``only_rate``, one that opens at that
        rate only (like a USB microphone that offers 48 kHz and nothing else); ``failing``,
        one whose reads fail once its first buffer is full, as a pulled USB microphone's do
        (the file plugin's copy of what it captures goes to /dev/full)."""
        raw = self.folder / f"{name}.raw"
        raw.write_bytes(np.asarray(samples, dtype="<i2").tobytes())
        self._define(name, self._file_pcm(raw, "/dev/full" if failing else "/dev/null"), only_rate)
        return raw

    def add_fifo(self, name: str) -> Path:
        """A capture PCM reading a FIFO: audio arrives only as a feeder writes it, and a
        feeder that stops writing (but keeps the FIFO open) stalls the capture in read()."""
        fifo = self.folder / f"{name}.fifo"
        os.mkfifo(fifo)
        self._define(name, self._file_pcm(fifo, "/dev/null"), None)
        return fifo

    def add_fixed(self, name: str, channels: int, only_rate: int | None = None) -> None:
        """A capture PCM that opens with exactly ``channels`` channels, as a microphone's
        hardware does (ALSA's multi plugin), and ``only_rate`` as ``add``. It delivers
        silence: under the file plugin, multi mixes up a file's samples, so it reads /dev/zero."""
        slave = '"null"' if only_rate is None else self._only_rate('"null"', only_rate)
        bindings = " ".join(f"bindings.{c} {{ slave a channel {c} }}" for c in range(channels))
        multi = f"{{ type multi slaves.a {{ pcm {slave} channels {channels} }} {bindings} }}"
        self.pcms[name] = f'{{ type file slave.pcm {multi} file "/dev/null" infile "/dev/zero" format "raw" }}'
        self._write()

    def add_fed(self, name: str, plugin: Path, sample_format: str = "S16_LE") -> Path:
        """A capture PCM that has captured what was written to its FIFO, as it was written
        (the test is its clock), and overruns like a sound card when its reader falls more
        than a buffer behind: tests/alsa_fed_mic.c (``plugin``, the fed_mic_plugin fixture).
        Mono, 16 kHz, samples in ``sample_format`` (S16_LE or FLOAT_LE)."""
        fifo = self.folder / f"{name}.fifo"
        os.mkfifo(fifo)
        self.plugins["fedmic"] = plugin
        self.pcms[name] = f'{{ type fedmic fifo "{fifo}" format "{sample_format}" }}'
        self._write()
        return fifo

    def add_speaker(self, name: str) -> None:
        """A playback-only PCM: PortAudio lists it, with no input channels."""
        self.pcms[name] = '{ type asym playback.pcm "null" }'
        self._write()

    @staticmethod
    def _file_pcm(infile: Path, outfile: str) -> str:
        return f'{{ type file slave.pcm "null" file "{outfile}" infile "{infile}" format "raw" }}'

    @staticmethod
    def _only_rate(pcm: str, rate: int) -> str:
        # plug converts only through a rate converter, and this one does not exist.
        return f'{{ type plug slave {{ pcm {pcm} rate {rate} }} rate_converter "edge-test-no-such-converter" }}'

    def _define(self, name: str, pcm: str, only_rate: int | None) -> None:
        self.pcms[name] = f"{{ type plug slave.pcm {pcm} }}" if only_rate is None else self._only_rate(pcm, only_rate)
        self._write()

    def _write(self) -> None:
        # `pcm.default` must exist or PortAudio's device enumeration asserts: the first PCM.
        lines = ["pcm.null { type null }", f'pcm.default "{next(iter(self.pcms))}"']
        lines += [f'pcm_type.{kind} {{ lib "{library}" }}' for kind, library in self.plugins.items()]
        lines += [f"pcm.{name} {definition}" for name, definition in self.pcms.items()]
        self.config.write_text("\n".join(lines) + "\n")


@pytest.fixture
def timesync(tmp_path, monkeypatch) -> Path:
    """Where systemd-timesyncd would say the clock is synchronised: the test decides
    (touch it: synchronised; leave it absent: not)."""
    import edge.clock

    flag = tmp_path / "timesync" / "synchronized"
    flag.parent.mkdir()
    monkeypatch.setattr(edge.clock, "TIMESYNC_FLAG", flag)
    return flag


@pytest.fixture(scope="session")
def fed_mic_plugin(tmp_path_factory) -> Path:
    """tests/alsa_fed_mic.c built: the ALSA plugin of AlsaDevices.add_fed."""
    source = Path(__file__).with_name("alsa_fed_mic.c")
    library = tmp_path_factory.mktemp("alsa-plugin") / "libasound_module_pcm_fedmic.so"
    compiler = shutil.which("cc")
    built = subprocess.run([compiler, "-shared", "-fPIC", "-DPIC", "-O2", "-o", str(library), str(source), "-lasound"],
                           capture_output=True, text=True) if compiler else None
    skip_unless_available(None if built and built.returncode == 0 else
                          f"cannot build {source.name}, an ALSA plugin: cc and libasound2-dev are needed "
                          f"({built.stderr.strip() if built else 'no cc'})")
    return library


@pytest.fixture
def alsa(tmp_path, monkeypatch) -> AlsaDevices:
    folder = tmp_path / "alsa"
    folder.mkdir()
    return AlsaDevices(folder, monkeypatch)


class StopAfter:
    """A frame source that sets ``stop`` once ``count`` frames went through: the file
    plugin repeats its last buffer after the end of the file, so the test ends the run."""

    def __init__(self, source, count: int, stop):
        self.source, self.count, self.stop = source, count, stop
        self.name = source.name
        self.delivered = 0

    def __getattr__(self, name):
        return getattr(self.source, name)

    def open(self):
        self.source.open()

    def close(self):
        self.source.close()

    def read(self, timeout):
        frames = self.source.read(timeout)
        if frames is not None:
            self.delivered += len(frames) // WINDOW
            if self.delivered >= self.count:
                self.stop.set()
        return frames


class PacedSource:
    """Frames of ``samples`` handed out at ``speed`` times the pace a microphone would deliver
    them (so that times seen by the LED follow the audio timeline), once or, with ``loop``,
    over and over like a room where someone keeps talking; counts the frames delivered."""

    name = "mic:paced"
    overflows = 0
    dropped_frames = 0

    def __init__(self, samples: np.ndarray, speed: float = 1.0, loop: bool = False):
        self.frames = [samples[i:i + WINDOW] for i in range(0, len(samples) - WINDOW + 1, WINDOW)]
        self.period = WINDOW / RATE / speed
        self.loop = loop
        self.delivered = 0
        self.start = None

    def open(self):
        self.start = time.monotonic()
        self.delivered = 0

    def read(self, timeout):
        if not self.loop and self.delivered >= len(self.frames):
            raise EndOfInput
        due = self.start + (self.delivered + 1) * self.period
        time.sleep(max(0.0, due - time.monotonic()))  # the audio clock, not synchronisation
        frame = self.frames[self.delivered % len(self.frames)]
        self.delivered += 1
        return frame

    def close(self):
        pass


def frame_count(samples: np.ndarray) -> int:
    return len(samples) // WINDOW


def read_frames(source, count: int, timeout: float = 2.0) -> np.ndarray:
    """The first ``count`` frames a source gives, in one array (a read gives whole frames,
    a capture block of them at a time)."""
    frames = np.zeros(0, dtype=np.int16)
    while len(frames) < count * WINDOW:
        more = source.read(timeout)
        assert more is not None and len(more) % WINDOW == 0, more
        frames = np.concatenate([frames, more])
    return frames[:count * WINDOW]


@pytest.fixture(scope="session")
def detector():
    """The bare model. These tests are about capture, storage and faults; the noise suppressor
    in front of it has tests of its own (test_denoise.py), and the daemon tests (test_service.py,
    the system test) run `edge run` with the whole detector. (Behind the suppressor, the lesson
    clip's last sentence is stored to 13.760 s and its energy label, padded by 30 ms, ends at
    13.761 s: the capture tests' exact coverage check would fail on that millisecond.)"""
    from edge.vad import DEFAULT_MODEL, SileroVad

    return SileroVad(DEFAULT_MODEL)


def make_recorder(settings, detector, recordings: Path, **kwargs):
    from edge.recorder import Recorder
    from edge.storage import SegmentWriter

    writer = SegmentWriter(recordings, "test", detector.sha256, "test",
                           settings.storage.fsync_interval_s)
    writer.prepare()
    return Recorder(settings, detector, writer, **kwargs)


def segment_audio(recordings: Path, entry: dict) -> np.ndarray:
    return read_wav_16k(recordings / entry["file"])


def covered(intervals, start: float, end: float) -> bool:
    return any(s <= start and end <= e for s, e in intervals)


def pin_time_tolerance_s() -> float:
    """How far a blink on a mock pin may be off its time here and now: gpiozero's 50 ms
    for a non-realtime machine, plus four times the worst lateness of a sleeping thread
    measured now (a loaded or slow machine wakes its blink thread late)."""
    late = 0.0
    for _ in range(10):
        began = time.monotonic()
        time.sleep(0.02)  # the measurement itself: how late does a 20 ms sleep end?
        late = max(late, time.monotonic() - began - 0.02)
    return 0.05 + 4 * late


def feed(fifo: Path, samples: np.ndarray, dtype: str = "<i2") -> int:
    """Put all of ``samples`` into the microphone's FIFO at once, without waiting for a reader;
    the returned descriptor keeps the FIFO open, so capture stalls after them instead of ending."""
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    data = np.asarray(samples, dtype=dtype).tobytes()
    fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, max(len(data), 65536))
    assert os.write(fd, data) == len(data)
    return fd


def child_processes() -> set[int]:
    """This process's children now (of every thread)."""
    children = set()
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        try:
            children.update(int(p) for p in open(f"/proc/{os.getpid()}/task/{task}/children").read().split())
        except FileNotFoundError:
            continue
    return children


def wait_until(condition, what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class Daemon:
    """`edge run` as systemd runs it: notify socket, watchdog, log lines collected."""

    def __init__(self, tmp_path: Path, config: Path, name: str = "daemon"):
        sock = str(tmp_path / f"{name}.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(sock)
        self.messages: list[bytes] = []
        env = {**os.environ, "NOTIFY_SOCKET": sock, "WATCHDOG_USEC": "1000000"}
        self.process = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(config)],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        threading.Thread(target=self._read_notify, daemon=True).start()

    def _read_log(self):
        for line in self.process.stderr:
            self.log.append(line.rstrip("\n"))

    def _read_notify(self):
        while True:
            try:
                self.messages.append(self.notify.recv(4096))
            except OSError:
                return

    def logged(self, text: str) -> int:
        return sum(text in line for line in list(self.log))

    def capture_processes(self) -> set[int]:
        """The daemon's capture processes now (threads and children come and go meanwhile)."""
        def read(path: Path) -> bytes:
            try:
                return path.read_bytes()
            except (FileNotFoundError, ProcessLookupError):
                return b""

        children = set()
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            children.update(int(pid) for pid in read(task / "children").split())
        return {pid for pid in children if b"edge.capture" in read(Path(f"/proc/{pid}/cmdline"))}

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.notify.close()


class NotifySocket:
    """The socket systemd listens on for sd_notify: read all the time, as systemd does (a
    queue nobody reads blocks the sender after a few datagrams), keeping every datagram
    with the pid that sent it (SO_PASSCRED), so a dead daemon's READY=1 is never taken
    for the next one's."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.1)
        self.received: list[tuple] = []  # (pid, datagram)
        self.arrived = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._closed:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except socket.timeout:
                continue
            except OSError:
                return
            pid = next((struct.unpack("iII", payload[:12])[0] for level, kind, payload in ancillary
                        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), None)
            with self.arrived:
                self.received.append((pid, data))
                self.arrived.notify_all()

    def count(self, wanted: bytes, pid: int) -> int:
        with self.arrived:
            return sum(p == pid and wanted in data for p, data in self.received)

    def wait_for(self, wanted: bytes, process, times: int = 1, timeout: float = 60.0) -> None:
        """Until ``process`` (a Popen) has sent ``times`` datagrams containing ``wanted``."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while self.count(wanted, process.pid) < times:
                assert process.poll() is None, f"the daemon exited ({process.returncode}) before {wanted!r}"
                left = deadline - time.monotonic()
                assert left > 0, f"no {wanted!r} x{times} from the daemon within {timeout} s"
                self.arrived.wait(min(left, 0.5))

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        self._thread.join(timeout=5)
