"""What the recorder reports about itself: the day's count across midnight and restarts, the
audio the microphone lost (in the manifest and in `edge status`), and the error it stopped on."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import threading
import wave
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from conftest import PacedSource, StopAfter, make_recorder
from edge.cli import main
from edge.audio import WavFileSource
from edge.config import load_config, settings_from_dict
from edge.status import RecorderStatus, read_status
from edge.storage import MANIFEST, read_manifest
from edge.supervisor import StatusPublisher


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


class BrokenDetector:
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
    recorder = make_recorder(load_config(write_config(tmp_path)), detector, root, clock=FakeClock(today))
    assert recorder.status.segments_today == 3


class LoudnessDetector:
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
