"""What the recorder reports about itself: the day's count across midnight and restarts, the
audio the microphone lost (in the manifest and in `edge status`), and the error it stopped on."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import threading
import wave
from datetime import datetime, timedelta, timezone
from typing import Optional

import numpy as np
import pytest

from conftest import PacedSource, StopAfter, make_recorder, wait_until
from edge.cli import main
from edge.audio import CaptureError, EndOfInput, WavFileSource
from edge.capture import BLOCK
from edge.config import load_config, settings_from_dict
from edge.status import RecorderStatus, read_status
from edge.storage import MANIFEST, read_manifest
from edge.supervisor import StatusPublisher
from edge.vad import WindowByWindow


class FakeClock:
    """Wall time from ``start``, moved by the test."""

    def __init__(self, start: datetime):
        self.now = start

    def wall(self) -> datetime:
        return self.now

    def boottime(self) -> float:
        return 100.0

    def boot_id(self) -> str:
        return "boot"

    def synced(self) -> bool:
        return True


class Notifier:
    def status(self, text):
        pass


def write_config(tmp_path):
    config = tmp_path / "edge.yaml"
    config.write_text(f"storage: {{recordings_dir: {tmp_path / 'rec'}, min_free_mb: 0}}\n"
                      f"led: {{pin: null}}\nservice: {{status_file: {tmp_path / 'status.json'}}}\n")
    return config


def test_segments_today_starts_again_at_midnight():
    clock = FakeClock(datetime(2026, 11, 24, 23, 59, 58, tzinfo=timezone.utc))
    publisher = StatusPublisher(RecorderStatus(segments_today=4), None, Notifier(), clock, lambda: 0.0,
                                lambda: 1.0)
    publisher.segment_stored({"end": "2026-11-24T23:59:59", "file": "a.wav"})
    assert publisher.status.segments_today == 5
    clock.now += timedelta(seconds=3)  # 00:00:01 the next day
    publisher.segment_stored({"end": "2026-11-25T00:00:01", "file": "b.wav"})
    assert publisher.status.segments_today == 1
    publisher.segment_stored({"end": "2026-11-25T00:00:09", "file": "c.wav"})
    assert publisher.status.segments_today == 2
    assert publisher.status.last_speech == "2026-11-25T00:00:09"


class LossySource(PacedSource):
    """Speech whose microphone lost audio on the way: the counts a MicrophoneSource keeps."""

    name = "mic:lossy"

    def read(self, timeout):
        frame = super().read(timeout)
        self.dropped_frames = self.delivered // 40  # the detector fell behind now and then
        self.overflows = self.delivered // 100  # and the driver overran less often
        return frame


def test_lost_audio_is_counted_in_the_manifest_and_in_edge_status(tmp_path, lesson, detector, capsys):
    config = write_config(tmp_path)
    settings = load_config(config)
    recorder = make_recorder(settings, detector, tmp_path / "rec", status_path=tmp_path / "status.json")
    stop = threading.Event()
    source = LossySource(lesson, speed=1000, loop=True)
    recorder.run(StopAfter(source, 2 * len(lesson) // 512, stop), stop)
    entries = read_manifest(tmp_path / "rec" / MANIFEST)
    assert len(entries) >= 4
    # Each line counts what was lost up to its segment's end (32 ms frames; driver overruns).
    counts = [(e["dropped_frames"], e["overflows"]) for e in entries]
    assert all(d > o > 0 for d, o in counts[1:]), counts
    assert counts == sorted(counts) and counts[0] < counts[-1]
    for entry in entries:
        # Closed within a second or two after its end (the pause that ended it): the counts
        # then, not those of the start or of the end of the run.
        frames_then = (entry["end_s"] * 16000) // 512
        assert frames_then // 40 <= entry["dropped_frames"] <= (frames_then + 60) // 40
    status = read_status(tmp_path / "status.json")
    assert (status["dropped_frames"], status["overflows"]) == (source.delivered // 40, source.delivered // 100)
    capsys.readouterr()
    main(["status", "--config", str(config)])
    out = capsys.readouterr().out
    assert str(source.delivered // 40) in out and "dropped" in out, out


class BrokenDetector(WindowByWindow):
    """A detector that fails on the 50th frame (a runtime bug, a corrupted model)."""

    def __init__(self, detector):
        self.detector, self.sha256, self.calls = detector, detector.sha256, 0

    def reset(self):
        self.detector.reset()

    def __call__(self, frame):
        self.calls += 1
        if self.calls == 50:
            raise RuntimeError("tensor shape mismatch")
        return self.detector(frame)


def test_the_error_the_recorder_stopped_on_is_its_last_error_in_edge_status(tmp_path, lesson, detector, capsys):
    config = write_config(tmp_path)
    recorder = make_recorder(load_config(config), BrokenDetector(detector), tmp_path / "rec",
                             status_path=tmp_path / "status.json")
    stop = threading.Event()
    with pytest.raises(RuntimeError):
        recorder.run(PacedSource(lesson, speed=1000, loop=True), stop)
    status = read_status(tmp_path / "status.json")
    assert status["state"] == "stopped"
    assert status["errors"][-1].endswith("stopped by an error: RuntimeError('tensor shape mismatch')")
    capsys.readouterr()
    assert main(["status", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "RuntimeError('tensor shape mismatch')" in out, out


def test_a_restart_counts_only_today_s_segments(tmp_path, detector):
    root = tmp_path / "rec"
    root.mkdir()
    today = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)
    for n, hours in enumerate([30, 12, 10.5, 9, 1, 0], 1):  # 25 Nov starts 10 h before "today"
        start = today - timedelta(hours=hours)
        day = start.strftime("%Y%m%d")
        (root / day).mkdir(exist_ok=True)
        line = {"file": f"{day}/{n:06d}_000000_room.wav", "seq": n, "start": start.isoformat(),
                "duration_s": 1.0, "sha256": "0" * 64}
        with open(root / day / MANIFEST, "a") as f:
            f.write(json.dumps(line) + "\n")
    # A damaged line of today's (a hand edit): never counted, never a reason not to record.
    with open(root / today.strftime("%Y%m%d") / MANIFEST, "a") as f:
        f.write(json.dumps(dict(line, seq=7, file=f"{day}/000007_000000_room.wav", start="today")) + "\n")
    recorder = make_recorder(load_config(write_config(tmp_path)), detector, root, clock=FakeClock(today))
    assert recorder.status.segments_today == 3


class LoudnessDetector(WindowByWindow):
    """Speech wherever a window is loud: segments the test places itself, no model needed."""

    sha256 = "loudness"

    def reset(self):
        pass

    def __call__(self, frame):
        return 0.95 if np.abs(frame).max() > 1000 else 0.02


def wav_file(path, samples):
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(samples.astype("<i2").tobytes())
    return path


@pytest.mark.parametrize("loud_s", [(), ((2.0, 4.0), (7.0, 8.5))])
def test_a_file_s_segments_are_placed_on_its_own_timeline_and_summed_up(tmp_path, loud_s):
    """`edge process`: a segment's times are its offset in the file, from the wall and boot
    clocks read when the file began; the summary line counts what the manifest lists."""
    samples = np.zeros(344 * 512, np.int16)  # 11.008 s, whole 32 ms windows
    noise = np.random.default_rng(1).integers(-8000, 8000, len(samples)).astype(np.int16)
    for begin, end in loud_s:
        samples[int(begin * 16000):int(end * 16000)] = noise[int(begin * 16000):int(end * 16000)]
    wall0 = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)
    clock = FakeClock(wall0)
    clock.boottime = lambda: 100.00025
    recorder = make_recorder(settings_from_dict({}), LoudnessDetector(), tmp_path / "rec", clock=clock)
    path = wav_file(tmp_path / "lesson.wav", samples)
    summary = recorder.process_file(WavFileSource(path))
    entries = [e for day in sorted((tmp_path / "rec").glob("2*")) for e in read_manifest(day / MANIFEST)]
    assert len(entries) == len(loud_s) and list(recorder.entries) == entries
    for entry, (begin, end) in zip(entries, loud_s):
        assert entry["start_s"] <= begin and end <= entry["end_s"] <= end + 3.0  # the speech, with its rolls
        assert entry["start"] == (wall0 + timedelta(seconds=entry["start_s"])).isoformat(timespec="milliseconds")
        assert entry["monotonic_s"] == round(100.00025 + entry["start_s"], 3)
        assert (entry["source"], entry["mic_gaps"], entry["boot_id"]) == (str(path), [], "boot")
    kept = sum(e["duration_s"] for e in entries)
    assert (summary.segments, summary.kept_s, summary.total_s) == (len(entries), kept, 11.008)
    found = "speech found" if loud_s else "no speech found"
    assert summary.line() == f"{path}: {found}, {len(entries)} segments, {kept:.1f} s kept, {11.008 - kept:.1f} s skipped"


def test_the_writer_the_service_makes_finishes_a_cut_segment_and_says_how_many(tmp_path, caplog):
    from edge import __version__
    from edge.recorder import make_writer
    from edge.storage import SegmentStart

    settings = settings_from_dict({"storage": {"recordings_dir": str(tmp_path / "rec"), "device_name": "room-7"}})
    writer = make_writer(settings, tmp_path / "rec", LoudnessDetector())
    for second in range(2):  # two segments cut by a power loss
        writer.open(SegmentStart("mic:test", second, f"2026-11-24T09:00:0{second}.000+00:00", 100.0 + second, "b", True))
        writer.append(np.ones(1600, np.int16))
        writer._file._file.flush()
        writer._abandon()
    writer = make_writer(settings, tmp_path / "rec", LoudnessDetector())
    assert "recovered 2 interrupted segments" in caplog.messages
    (first, second) = read_manifest(tmp_path / "rec" / "20261124" / MANIFEST)
    assert (first["model_sha256"], first["version"], first["device"]) == ("loudness", __version__, "room-7")
    assert first["file"].endswith("_room-7.wav") and writer.format.extension == ".wav"  # no recipients: plain WAV


@pytest.mark.skipif(shutil.which("age-keygen") is None, reason="age is not installed")
def test_the_writer_the_service_makes_encrypts_to_the_configured_recipients(tmp_path):
    from edge.encryption import AGE_WAV_EXTENSION
    from edge.recorder import make_writer

    public = subprocess.run(["age-keygen"], check=True, capture_output=True, text=True).stderr.split()[-1]
    settings = settings_from_dict({"privacy": {"recipients": [public]}})
    writer = make_writer(settings, tmp_path / "rec", LoudnessDetector())
    assert writer.format.extension == AGE_WAV_EXTENSION and writer.format.arguments == ["-r", public]


def test_a_card_that_refuses_the_repair_at_start_is_named_in_one_warning(tmp_path, monkeypatch, caplog):
    import edge.storage as storage
    from edge.recorder import make_writer

    def read_only(writer):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(storage.SegmentWriter, "prepare", read_only)
    make_writer(settings_from_dict({}), tmp_path / "rec", LoudnessDetector())
    assert caplog.messages == [f"{tmp_path / 'rec'}: cannot finish interrupted segments now (Read-only file system)"]


def test_a_live_segment_is_dated_back_from_the_clocks_by_the_audio_since_its_first_sample(tmp_path):
    """While listening, a segment opens after its first sample was heard (pre-roll, the
    detector's confirmation): its wall and boot times are the clocks' now minus that much audio,
    the same amount for both; its offset is from the start of the session."""
    samples = np.zeros(344 * 512, np.int16)
    noise = np.random.default_rng(2).integers(-8000, 8000, len(samples)).astype(np.int16)
    for begin, end in ((2.0, 4.0), (7.0, 8.5)):
        samples[int(begin * 16000):int(end * 16000)] = noise[int(begin * 16000):int(end * 16000)]
    now = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)
    recorder = make_recorder(settings_from_dict({}), LoudnessDetector(), tmp_path / "rec", clock=FakeClock(now))
    recorder.run(PacedSource(samples, speed=1000), threading.Event())
    entries = list(recorder.entries)
    assert len(entries) == 2
    for entry, begin in zip(entries, (2.0, 7.0)):
        assert begin - 1.0 < entry["start_s"] <= begin  # with its pre-roll
        age = (now - datetime.fromisoformat(entry["start"])).total_seconds()
        assert abs((100.0 - entry["monotonic_s"]) - age) <= 0.001  # the FakeClock's boot time is 100 s
        assert 0.0 < age < 1.0 and entry["start_s"] + age <= entry["end_s"]


class UnpluggedMicrophone:
    """A microphone that is not there: every open fails as a missing ALSA device does."""

    name = "mic:unplugged"
    overflows = 0
    dropped_frames = 0

    def __init__(self):
        self.opens = 0

    def open(self):
        self.opens += 1
        raise CaptureError("audio.device 'usbmic' not found (capture devices: none)")

    def read(self, timeout):
        raise CaptureError("not open")

    def close(self):
        pass


def test_a_microphone_missing_at_start_stops_a_person_s_run_with_its_reason(tmp_path):
    recorder = make_recorder(settings_from_dict({}), LoudnessDetector(), tmp_path / "rec")
    stop, raised = threading.Event(), []

    def run():
        try:
            recorder.run(UnpluggedMicrophone(), stop)
        except CaptureError as exc:
            raised.append(str(exc))

    person = threading.Thread(target=run, daemon=True)
    person.start()
    person.join(timeout=10)
    stop.set()  # a run that waits for the microphone instead would go on
    assert raised == ["audio.device 'usbmic' not found (capture devices: none)"]


class MicrophoneOpenedDuringAStop(UnpluggedMicrophone):
    """A stop arrives while the device opens; the open gives up, as MicrophoneSource does."""

    def __init__(self, stop: threading.Event):
        super().__init__()
        self.stop = stop

    def open(self):
        self.opens += 1
        self.stop.set()
        raise CaptureError("opening 'usbmic' given up: the recorder is stopping")


@pytest.mark.parametrize("wait_for_device", [False, True])
def test_a_stop_during_the_first_open_ends_the_run_quietly(tmp_path, wait_for_device):
    """Not an error to report (a person's run) nor an outage to wait out (the service's)."""
    status_path = tmp_path / "status.json"
    recorder = make_recorder(settings_from_dict({}), LoudnessDetector(), tmp_path / "rec", status_path=status_path)
    stop = threading.Event()
    microphone = MicrophoneOpenedDuringAStop(stop)
    recorder.run(microphone, stop, wait_for_device=wait_for_device)
    assert microphone.opens == 1
    assert not (read_status(status_path) or {}).get("errors")  # no outage: "microphone lost" is not true


def test_the_service_waits_for_a_microphone_missing_at_start_and_stops_at_once_when_told(tmp_path):
    """A USB microphone may be plugged in after the Pi booted: the service waits for it,
    says why in `edge status`, and a `systemctl stop` during a long wait ends it at once."""
    settings = settings_from_dict({"audio": {"reopen_backoff_s": 60, "reopen_backoff_max_s": 60}})
    status_path = tmp_path / "status.json"
    recorder = make_recorder(settings, LoudnessDetector(), tmp_path / "rec", status_path=status_path)
    microphone, stop = UnpluggedMicrophone(), threading.Event()
    service = threading.Thread(target=recorder.run, args=(microphone, stop), kwargs={"wait_for_device": True},
                               daemon=True)
    service.start()
    wait_until(lambda: (read_status(status_path) or {}).get("state") == "mic missing", "the status 'mic missing'")
    errors = read_status(status_path)["errors"]
    assert [e.split(" ", 1)[1] for e in errors] == [
        "microphone lost: audio.device 'usbmic' not found (capture devices: none)"]
    stop.set()
    service.join(timeout=10)  # the wait is 60 s
    assert not service.is_alive(), "the stop waited for the microphone's next reopen attempt"
    assert read_status(status_path)["state"] == "stopped" and microphone.opens == 1


def test_every_change_of_state_is_in_edge_status_at_once(tmp_path):
    """The status file is rewritten every 5 s while nothing changes, and at once when the
    microphone or the card goes or comes back: `edge status` right after unplugging the
    microphone must not show the state before."""
    clock = FakeClock(datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc))
    status_path = tmp_path / "status.json"
    # No time passes between two publications: only a change may publish.
    recorder = make_recorder(settings_from_dict({}), LoudnessDetector(), tmp_path / "rec", clock=clock,
                             monotonic=lambda: 0.0, status_path=status_path)
    recorder.waiting()
    changes = {"microphone lost": lambda: recorder.microphone_lost("unplugged"),
               "microphone back": lambda: recorder.microphone_back({"lost": "unplugged"}),
               "card lost": lambda: recorder.storage_lost("the card is full"),
               "card back": recorder.storage_back}
    for change, act in changes.items():
        clock.now += timedelta(seconds=1)
        act()
        assert read_status(status_path)["updated"] == clock.now.isoformat(timespec="seconds"), change
    assert [e.split(" ", 1)[1] for e in read_status(status_path)["errors"]] == [
        "microphone lost: unplugged", "not storing audio: the card is full"]


def test_a_stored_segment_is_in_edge_status_at_once(tmp_path):
    samples = np.zeros(8 * 16000, np.int16)
    samples[16000:3 * 16000] = np.random.default_rng(3).integers(-8000, 8000, 2 * 16000)
    status_path = tmp_path / "status.json"
    seen = {}

    def probe():  # 7 s in: the segment closed about 4 s before
        if source.delivered == 7 * 16000 // 512:
            seen.update(read_status(status_path))

    source = TickingSource(samples=samples, before_read=probe)
    # No time passes between two publications: only a change may publish.
    recorder = make_recorder(settings_from_dict({}), LoudnessDetector(), tmp_path / "rec",
                             monotonic=lambda: 0.0, status_path=status_path)
    recorder.run(source, threading.Event())
    (entry,) = recorder.entries
    assert entry["end_s"] < 5.0
    assert (seen["segments_today"], seen["last_speech"]) == (1, entry["end"])


def test_each_segment_gives_its_detector_probabilities_and_one_log_line(tmp_path, caplog):
    samples = np.zeros(10 * 16000, np.int16)
    samples[2 * 16000:4 * 16000] = np.random.default_rng(4).integers(-8000, 8000, 2 * 16000)
    samples[6 * 16000:7 * 16000] = np.random.default_rng(5).integers(-8000, 8000, 16000)
    caplog.set_level(logging.INFO, logger="edge.recorder")
    recorder = make_recorder(settings_from_dict({}), LoudnessDetector(), tmp_path / "rec")
    recorder.process_file(WavFileSource(wav_file(tmp_path / "two.wav", samples)))
    entries = read_manifest(tmp_path / "rec")
    assert len(entries) == 2
    for entry in entries:
        # Loud windows score 0.95, quiet ones 0.02: the segment's highest, and a mean between.
        assert entry["prob_max"] == 0.95 and 0.02 < entry["prob_mean"] < 0.95, entry
    assert [r.getMessage() for r in caplog.records if r.name == "edge.recorder"] == [
        f"stored {e['file']} ({e['duration_s']:.1f} s)" for e in entries]


class SystemdNotifier:
    """What the service tells systemd: each watchdog ping at its time on ``now``."""

    def __init__(self, now):
        self.now, self.pings = now, []

    def ready(self):
        pass

    def extend_start(self):
        pass

    def watchdog(self):
        self.pings.append(self.now())

    def status(self, text):
        pass

    def stopping(self):
        pass


def test_the_service_pings_systemd_s_watchdog_at_its_interval_while_frames_arrive(tmp_path):
    source = TickingSource(10)
    notifier = SystemdNotifier(source.clock)
    recorder = make_recorder(settings_from_dict({}), LoudnessDetector(), tmp_path / "rec", notifier=notifier,
                             watchdog_every=1.0, monotonic=source.clock)
    recorder.run(source, threading.Event())
    # The first frame pings, then the first frame a whole interval after the last ping.
    assert notifier.pings == [1 / 32 + n * 1.0 for n in range(10)]


class NamedLed:
    name = "GPIO17"

    def show(self, pattern):
        pass

    def close(self):
        pass


def test_edge_status_names_the_led_the_recorder_holds(tmp_path):
    """`edge doctor` must not open a pin the running recorder holds: the status names it."""
    status_path = tmp_path / "status.json"
    recorder = make_recorder(settings_from_dict({}), LoudnessDetector(), tmp_path / "rec", indicator=NamedLed(),
                             status_path=status_path)
    recorder.run(PacedSource(np.zeros(16000, np.int16), speed=1000), threading.Event())
    assert read_status(status_path)["led"] == "GPIO17"


def test_a_recorder_keeps_only_its_last_segments_in_memory(tmp_path):
    """The daemon runs for a school year: what it keeps of the segments it stored is bounded."""
    from edge.recorder import ENTRIES_KEPT

    bursts = ENTRIES_KEPT + 5
    samples = np.zeros(bursts * 16000, np.int16)
    noise = np.random.default_rng(6).integers(-8000, 8000, len(samples)).astype(np.int16)
    for n in range(bursts):
        samples[n * 16000:n * 16000 + 4000] = noise[n * 16000:n * 16000 + 4000]
    settings = settings_from_dict({"segmenter": {"min_silence_ms": 300, "min_speech_ms": 100}})
    recorder = make_recorder(settings, LoudnessDetector(), tmp_path / "rec")
    recorder.process_file(WavFileSource(wav_file(tmp_path / "bursts.wav", samples)))
    stored = read_manifest(tmp_path / "rec")
    assert len(stored) == bursts
    assert list(recorder.entries) == stored[-ENTRIES_KEPT:]


class TickingSource(PacedSource):
    """``seconds`` of silence (or ``samples``) from a microphone whose clock ticks 1/32 s a
    frame (exact in binary, so a check due at a whole interval is due exactly then), and
    which has dropped every frame so far once more (a count that changes all the time);
    ``before_read`` is called before each frame is handed out."""

    name = "mic:ticking"

    def __init__(self, seconds: float = 0.0, before_read=lambda: None, samples: Optional[np.ndarray] = None):
        super().__init__(np.zeros(int(seconds * 32) * 512, np.int16) if samples is None else samples, speed=100000)
        self.before_read = before_read

    def clock(self) -> float:
        return self.delivered / 32

    @property
    def dropped_frames(self):
        return self.delivered

    def read(self, timeout):
        self.before_read()
        return super().read(timeout)


def test_while_nothing_changes_edge_status_is_rewritten_every_interval_with_the_counts_then(tmp_path):
    from edge.supervisor import STATUS_EVERY_S

    status_path = tmp_path / "status.json"
    seen = []
    source = TickingSource(3 * STATUS_EVERY_S + 1, before_read=lambda: seen.append(read_status(status_path)))
    recorder = make_recorder(settings_from_dict({}), LoudnessDetector(), tmp_path / "rec", monotonic=source.clock,
                             status_path=status_path)
    recorder.run(source, threading.Event())
    published = sorted({status["dropped_frames"] for status in seen if status})
    # At the start, then after each frame that completed an interval since the last publication.
    assert published == [int(n * STATUS_EVERY_S * 32) for n in range(4)]
    # And as the recorder stopped, with the counts of its last frame.
    assert read_status(status_path)["dropped_frames"] == source.delivered == int((3 * STATUS_EVERY_S + 1) * 32)


def test_housekeeping_runs_at_its_intervals(tmp_path):
    from edge.recorder import EXTRA_CHECK_S, RETENTION_CHECK_S

    source = TickingSource(RETENTION_CHECK_S + 2)
    checks, sweeps = [], []
    recorder = make_recorder(settings_from_dict({}), LoudnessDetector(), tmp_path / "rec", monotonic=source.clock,
                             extra_pattern=lambda: checks.append(source.clock()))
    real_sweep = recorder.retention.sweep
    recorder.retention.sweep = lambda: sweeps.append(source.clock()) or real_sweep()
    recorder.run(source, threading.Event())
    first = 1 / 32  # after the first frame
    assert checks[:3] == [first, first + EXTRA_CHECK_S, first + 2 * EXTRA_CHECK_S]
    assert sweeps == [first, first + RETENTION_CHECK_S]


class OutageClock(FakeClock):
    """The clocks of a recorder whose microphone was away for ``outage_s`` once."""

    def __init__(self, start: datetime):
        super().__init__(start)
        self.heard_s, self.outage_s = 0.0, 0.0

    def boottime(self) -> float:
        return 100.0 + self.heard_s + self.outage_s


class UnpluggedOnce:
    """Speech, then the microphone unplugged for ``outage_s``, then speech again, in capture
    blocks of four frames, each read when its last sample has been heard."""

    name = "mic:unplugged-once"
    overflows = 0
    dropped_frames = 0

    def __init__(self, before: np.ndarray, after: np.ndarray, clock: OutageClock, outage_s: float):
        self.openings = [[a[i:i + BLOCK] for i in range(0, len(a) - BLOCK + 1, BLOCK)] for a in (before, after)]
        self.clock, self.outage_s, self.opened, self.read_in_opening = clock, outage_s, 0, 0

    def open(self):
        if self.opened == 1:
            self.clock.outage_s = self.outage_s
        self.opened, self.read_in_opening = self.opened + 1, 0

    def read(self, timeout):
        frames = self.openings[self.opened - 1]
        if self.read_in_opening == len(frames):
            if self.opened == 1:
                raise CaptureError("the device is gone")
            raise EndOfInput
        self.read_in_opening += 1
        self.clock.heard_s += BLOCK / 16000
        return frames[self.read_in_opening - 1]

    def close(self):
        pass


def test_segments_after_a_microphone_outage_stay_on_the_session_s_timeline(tmp_path):
    """start_s counts from the start of the session, by the boot clock: the outage's time is
    in it, as the audio before it is."""
    speech = np.random.default_rng(7).integers(-8000, 8000, 16000).astype(np.int16)
    before = np.concatenate([np.zeros(16000, np.int16), speech, np.zeros(2 * 16000, np.int16)])  # 4 s
    after = np.concatenate([np.zeros(3 * 16000, np.int16), speech, np.zeros(2 * 16000, np.int16)])  # speech at 3 s
    clock = OutageClock(datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc))
    settings = settings_from_dict({"audio": {"reopen_backoff_s": 0.05}})
    recorder = make_recorder(settings, LoudnessDetector(), tmp_path / "rec", clock=clock)
    recorder.run(UnpluggedOnce(before, after, clock, outage_s=10.0), threading.Event())
    first, second = read_manifest(tmp_path / "rec")
    assert 0.0 < first["start_s"] <= 1.0  # with its pre-roll
    assert 4.0 + 10.0 + 2.0 < second["start_s"] <= 4.0 + 10.0 + 3.0
    assert second["mic_gaps"]
    # The boot clock read when a block arrives is the time of its last sample, whichever of
    # the block's frames the segment began in.
    for entry in (first, second):
        assert entry["monotonic_s"] == pytest.approx(100.0 + entry["start_s"], abs=1e-3), entry


class CardOfSetSpace:
    """The card's free space as the test sets it (MB), for the recorder's free-space floor."""

    def __init__(self, guard, free_mb: float):
        self.min_free_mb, self.when_full, self.free = guard.min_free_mb, guard.when_full, free_mb

    def free_mb(self) -> float:
        return self.free

    def has_room(self) -> bool:
        return self.free >= self.min_free_mb


def test_a_card_that_comes_back_while_someone_talks_keeps_the_rest_of_what_they_say(tmp_path):
    from edge.supervisor import STORAGE_RETRY_S

    speaking_s = STORAGE_RETRY_S + 6
    samples = np.zeros(int(speaking_s + 4) * 16000, np.int16)
    samples[16000:int((1 + speaking_s) * 16000)] = np.random.default_rng(8).integers(-8000, 8000, int(speaking_s * 16000))
    back = {}

    def card():
        frames = source.delivered
        if frames == 3 * 32:  # 3 s in: the card fills under the open segment
            space.free = 0.0
        elif frames == 4 * 32:
            space.free = 1000.0  # and has room again; the recorder retries on its own time
        elif frames > 4 * 32 and "frames" not in back and not recorder.storage.unavailable:
            back["frames"] = frames  # the frames heard when it took the card back

    source = TickingSource(samples=samples, before_read=card)
    recorder = make_recorder(settings_from_dict({"storage": {"min_free_mb": 10}}), LoudnessDetector(),
                             tmp_path / "rec", monotonic=source.clock)
    space = recorder.storage.guard = CardOfSetSpace(recorder.storage.guard, free_mb=1000.0)
    recorder.run(source, threading.Event())
    before, rest = read_manifest(tmp_path / "rec")
    assert before["start_s"] < 1.0 and 3.0 <= before["end_s"] <= 4.5  # closed by the card
    # The rest begins with the first frame after the card came back, and ends with the speech.
    assert rest["start_s"] == round(back["frames"] * 512 / 16000, 3)
    assert 1 + speaking_s <= rest["end_s"] <= 1 + speaking_s + 1.0
