"""Real PortAudio/ALSA capture into the whole pipeline, through the ALSA file plugin."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pytest

from conftest import (StopAfter, child_processes, covered, feed, frame_count, make_recorder, read_frames, segment_audio,
                      wait_until)
from edge.capture import BLOCK, BLOCK_WINDOWS, HEADER, PROBE_RATES, InputDevice
from edge.audio import CaptureError, FrameAssembler, MicrophoneSource, describe_devices
from edge.resample import StreamingResampler
from edge.config import AudioSettings, settings_from_dict
from edge.errors import missing_device_module

# Big enough that an unpaced capture (the file plugin delivers as fast as it is read)
# never overflows the queue: every frame of the file reaches the detector.
NO_DROP_BUFFER_S = 120


def upsample_by_fft(samples: np.ndarray, factor: int) -> np.ndarray:
    # An independent band-limited method, so the resampler is not tested against itself.
    spectrum = np.fft.rfft(samples.astype(np.float64))
    n = len(samples) * factor
    padded = np.zeros(n // 2 + 1, dtype=complex)
    padded[: len(spectrum)] = spectrum
    return np.clip(np.round(np.fft.irfft(padded, n) * factor), -32768, 32767).astype(np.int16)


def captured(device: str, count: int) -> tuple:
    """(the source, its first ``count`` frames in one array) of a microphone opened on
    ``device`` and closed."""
    source = MicrophoneSource(AudioSettings(device=device, buffer_s=NO_DROP_BUFFER_S))
    source.open()
    try:
        return source, read_frames(source, count)
    finally:
        source.close()


def test_alsa_file_plugin_capture_delivers_the_input_bytes(alsa, lesson):
    alsa.add("testmic", lesson)
    source = MicrophoneSource(AudioSettings(device="testmic", buffer_s=NO_DROP_BUFFER_S))
    before = set(threading.enumerate())
    source.open()
    try:
        started = set(threading.enumerate()) - before
        frames = read_frames(source, 100)
    finally:
        source.close()
    # One drain thread, named, that cannot keep the interpreter alive, and gone after close.
    assert [(t.name, t.daemon) for t in started] == [("capture-drain", True)]
    assert not any(t.is_alive() for t in started)
    assert source.rate == 16000
    assert np.array_equal(frames, lesson[: 100 * 512])
    assert source.dropped_frames == 0


@pytest.mark.parametrize("only_rate, said", [(None, "at 16000 Hz"), (48000, "at 48000 Hz, resampled to 16000 Hz")])
def test_the_capture_process_may_fall_behind_the_device_by_about_two_seconds(alsa, lesson, caplog, only_rate, said):
    # PortAudio's low default gives the driver two periods: one 32 ms block of slack before
    # the card overruns (the virtual Pi's loopback card lost audio at every segment), and a
    # whole machine stopped for longer than the buffer loses audio ALSA may not report.
    alsa.add("testmic", lesson, only_rate=only_rate)
    source = MicrophoneSource(AudioSettings(device="testmic", buffer_s=NO_DROP_BUFFER_S))
    caplog.set_level(logging.INFO, logger="edge.audio")
    source.open()
    try:
        assert source.read(timeout=2.0) is not None
    finally:
        source.close()
    assert_whole_blocks_of_about_two_seconds(source.driver_buffer_s, BLOCK, 16000)
    assert [r.getMessage() for r in caplog.records if r.name == "edge.audio"] == [
        f"capturing from 'testmic' {said} (driver buffer {source.driver_buffer_s:.2f} s)"]


def assert_whole_blocks_of_about_two_seconds(buffer_s: float, block: int, rate: int) -> None:
    # ALSA's period is the capture's block (each wake-up brings one), and its buffer whole
    # blocks, within one of the 2 s asked for.
    blocks = buffer_s * rate / block
    assert blocks == pytest.approx(round(blocks)) and abs(buffer_s - 2.0) <= block / rate, buffer_s


def is_the_lesson_at(audio: np.ndarray, lesson: np.ndarray, first: int) -> bool:
    """Whether a stored segment is the lesson from sample ``first`` on. A live run stops within
    the capture block that passes the lesson's end, and what the file plugin gives after its
    file's end is not the lesson."""
    return np.array_equal(audio[:len(lesson) - first], lesson[first:first + len(audio)])


def run_live(settings, detector, recordings, samples):
    stop = threading.Event()
    recorder = make_recorder(settings, detector, recordings)
    source = StopAfter(MicrophoneSource(settings.audio), frame_count(samples), stop)
    recorder.run(source, stop)
    return recorder


def test_recorder_stores_the_labelled_speech_and_not_the_silence(alsa, lesson, lesson_speech, detector, tmp_path):
    alsa.add("testmic", lesson)
    settings = settings_from_dict({"audio": {"device": "testmic", "buffer_s": NO_DROP_BUFFER_S}})
    recordings = tmp_path / "rec"
    recorder = run_live(settings, detector, recordings, lesson)

    entries = recorder.entries
    segments = [(e["start_s"], e["end_s"]) for e in entries]
    assert len(entries) == len(lesson_speech)
    for start, end in lesson_speech:
        assert covered(segments, start, end), f"speech {start}-{end} not stored in {segments}"
    # The middle of each pause between utterances is not stored.
    for (_, end), (start, _) in zip(lesson_speech, lesson_speech[1:]):
        middle = (end + start) / 2
        assert not any(s <= middle <= e for s, e in segments)
    for entry in entries:
        first = round(entry["start_s"] * 16000)
        audio = segment_audio(recordings, entry)
        assert is_the_lesson_at(audio, lesson, first), entry["file"]
        assert entry["source"] == "mic:testmic"
    assert sum(e["duration_s"] for e in entries) < 0.75 * len(lesson) / 16000


def test_48khz_device_is_resampled_and_still_segmented(alsa, lesson, lesson_speech, detector, tmp_path):
    alsa.add("mic48k", upsample_by_fft(lesson, 3))
    settings = settings_from_dict(
        {"audio": {"device": "mic48k", "capture_rate": 48000, "buffer_s": NO_DROP_BUFFER_S}})
    recorder = run_live(settings, detector, tmp_path / "rec", lesson)
    segments = [(e["start_s"], e["end_s"]) for e in recorder.entries]
    assert len(segments) == len(lesson_speech)
    for start, end in lesson_speech:
        assert covered(segments, start, end), f"speech {start}-{end} not stored in {segments}"


def test_device_without_16khz_is_captured_at_its_default_rate(alsa, lesson, lesson_speech, detector, tmp_path):
    alsa.add("mic48k", upsample_by_fft(lesson, 3), only_rate=48000)
    settings = settings_from_dict({"audio": {"device": "mic48k", "buffer_s": NO_DROP_BUFFER_S}})
    assert settings.audio.capture_rate is None  # the default
    source = MicrophoneSource(settings.audio)
    source.open()
    source.close()
    assert source.rate == 48000
    recorder = run_live(settings, detector, tmp_path / "rec", lesson)
    segments = [(e["start_s"], e["end_s"]) for e in recorder.entries]
    assert len(segments) == len(lesson_speech)
    for start, end in lesson_speech:
        assert covered(segments, start, end), f"speech {start}-{end} not stored in {segments}"


# The queue holds buffer_s: 0.5 s is 3 blocks of 128 ms; never fewer than 2 blocks.
@pytest.mark.parametrize("buffer_s, queued", [(0.5, 3), (0.05, 2)])
def test_frames_the_detector_had_no_room_for_are_counted(alsa, buffer_s, queued):
    lost = 10
    blocks = np.repeat(np.arange(queued + lost, dtype=np.int16), BLOCK)  # block i holds i
    fed = feed(alsa.add_fifo("testmic"), blocks)  # then the FIFO stalls: no block after them
    source = MicrophoneSource(AudioSettings(device="testmic", buffer_s=buffer_s))
    source.open()
    try:
        # Nothing reads: the queue fills and every block the device delivers next is lost.
        wait_until(lambda: source.dropped_frames >= lost * BLOCK_WINDOWS, "the blocks that found the queue full")
        kept = [source.read(timeout=10) for _ in range(queued)]  # a whole block a read
        # A block after all the others, read once there is room: everything before it has
        # been counted by then, and nothing that was lost is in the queue.
        os.write(fed, np.full(BLOCK, 1000, dtype="<i2").tobytes())
        after = int(source.read(timeout=10)[0])
        assert (source.dropped_frames, source.overflows) == (lost * BLOCK_WINDOWS, 0)
    finally:
        source.close()
        os.close(fed)
    assert np.array_equal(np.concatenate(kept), np.repeat(np.arange(queued, dtype=np.int16), BLOCK))
    assert after == 1000


def test_long_talk_is_split_at_max_segment_s_in_the_live_recorder(alsa, lesson, lesson_speech, detector, tmp_path):
    alsa.add("testmic", lesson)
    # Every pause of the lesson stays inside the segment: one stretch of talk of ~13 s.
    settings = settings_from_dict({"audio": {"device": "testmic", "buffer_s": NO_DROP_BUFFER_S},
                                   "segmenter": {"min_silence_ms": 10000, "max_segment_s": 5}})
    recordings = tmp_path / "rec"
    recorder = run_live(settings, detector, recordings, lesson)
    entries = list(recorder.entries)
    assert len(entries) >= 3
    for entry in entries:
        assert 2.5 <= entry["duration_s"] <= 5.0 or entry is entries[-1], entry
        first = round(entry["start_s"] * 16000)
        audio = segment_audio(recordings, entry)
        assert is_the_lesson_at(audio, lesson, first)
    for before, after in zip(entries, entries[1:]):
        assert before["end_s"] == after["start_s"]  # split, not cut: no audio between
    assert entries[0]["start_s"] <= lesson_speech[0][0] and entries[-1]["end_s"] >= lesson_speech[-1][1]


@pytest.mark.parametrize("synced", [False, True])
def test_manifest_says_whether_the_clock_was_synchronised(detector, tmp_path, timesync, synced):
    from conftest import LESSON_WAV
    from edge.audio import WavFileSource

    if synced:
        timesync.touch()
    recorder = make_recorder(settings_from_dict({}), detector, tmp_path / "rec")
    recorder.process_file(WavFileSource(LESSON_WAV))
    assert recorder.entries and {e["clock_synced"] for e in recorder.entries} == {synced}
    assert {e["source"] for e in recorder.entries} == {str(LESSON_WAV)}


@pytest.mark.parametrize("microphones, listed", [(["testmic", "classmic"], "testmic; classmic"), ([], "none")])
def test_missing_device_error_lists_the_capture_devices_there_are(alsa, lesson, microphones, listed):
    alsa.add_speaker("speaker")  # listed by PortAudio (as is `default`, the speaker here), but it cannot capture
    for name in microphones:
        alsa.add(name, lesson[:16000])
    source = MicrophoneSource(AudioSettings(device="usb-mic-that-is-not-there"))
    with pytest.raises(CaptureError) as error:
        source.open()
    assert str(error.value) == f"audio.device 'usb-mic-that-is-not-there' not found (capture devices: {listed})"
    # A read after the failed open gives the same reason, not silence.
    with pytest.raises(CaptureError) as again:
        source.read(timeout=0.05)
    assert str(again.value) == str(error.value)


def test_a_capture_rate_the_device_cannot_open_at_fails_in_one_line_with_portaudio_s_reason(alsa, lesson):
    alsa.add("mic48k", lesson[:16000], only_rate=48000)
    source = MicrophoneSource(AudioSettings(device="mic48k", capture_rate=16000))
    with pytest.raises(CaptureError) as error:
        source.open()
    assert str(error.value) == "cannot open 'mic48k' at 16000 Hz: Unanticipated host error"


def test_a_capture_process_that_cannot_start_fails_the_open_naming_the_program(monkeypatch, tmp_path):
    missing = tmp_path / "no-such-python"
    monkeypatch.setattr(sys, "executable", str(missing))
    source = MicrophoneSource(AudioSettings(device="testmic"))
    with pytest.raises(CaptureError) as failed:
        source.open()
    assert str(failed.value) == f"cannot start the capture process {missing}: No such file or directory"


def test_a_microphone_not_yet_opened_delivers_nothing_and_closes_harmlessly():
    source = MicrophoneSource(AudioSettings(device="testmic"))
    assert (source.name, source.device_name, source.rate, source.driver_buffer_s) == ("mic:testmic", "", 16000, 0.0)
    began = time.monotonic()
    assert source.read(timeout=0.2) is None
    assert time.monotonic() - began >= 0.2
    source.close()
    assert (source.overflows, source.dropped_frames) == (0, 0)


def test_a_stalled_microphone_reads_none_after_the_timeout(alsa):
    fed = feed(alsa.add_fifo("testmic"), np.arange(BLOCK, dtype=np.int16))  # one block, then a stall
    source = MicrophoneSource(AudioSettings(device="testmic"))
    source.open()
    # A block long after the timeout: a read that waited for it waited too long.
    late = threading.Timer(5.0, os.write, (fed, np.full(BLOCK, 7, dtype="<i2").tobytes()))
    try:
        first = source.read(timeout=10)
        late.start()
        began = time.monotonic()
        stalled = source.read(timeout=0.3)
        waited = time.monotonic() - began
    finally:
        late.cancel()
        source.close()
        os.close(fed)
    assert stalled is None and 0.3 <= waited < 1.3
    assert np.array_equal(first, np.arange(BLOCK))


def test_the_capture_process_does_not_hold_the_recorders_stdin(alsa, lesson):
    # Whatever stdin the recorder has (here a pipe), the capture process reads none of it.
    alsa.add("testmic", lesson)
    source = MicrophoneSource(AudioSettings(device="testmic"))
    reading, writing = os.pipe()
    saved = os.dup(0)
    os.dup2(reading, 0)
    before = child_processes()
    try:
        source.open()
        stdin = [os.readlink(f"/proc/{pid}/fd/0") for pid in child_processes() - before]
    finally:
        source.close()
        os.dup2(saved, 0)
        for fd in (saved, reading, writing):
            os.close(fd)
    assert stdin == ["/dev/null"]


def kill_capture_process(before: set) -> None:
    wait_until(lambda: child_processes() - before, "the capture process to start")
    for pid in child_processes() - before:
        os.kill(pid, signal.SIGKILL)


def test_a_capture_process_that_ends_while_opening_fails_the_open_at_once(alsa):
    alsa.add_fifo("hangingmic")  # the open hangs until the process is killed
    source = MicrophoneSource(AudioSettings(device="hangingmic", open_timeout_s=60))
    killer = threading.Thread(target=kill_capture_process, args=(child_processes(),))
    killer.start()
    began = time.monotonic()
    try:
        with pytest.raises(CaptureError) as failed:
            source.open()
    finally:
        killer.join()
    assert str(failed.value) == "the capture process ended"
    assert time.monotonic() - began < 30


def test_a_capture_process_that_ends_while_capturing_is_reported_lost(alsa, lesson):
    alsa.add("testmic", lesson)
    source = MicrophoneSource(AudioSettings(device="testmic"))
    before = child_processes()
    source.open()
    try:
        assert source.read(timeout=2.0) is not None
        kill_capture_process(before)
        # What was queued before the end is still read; then the loss, with its reason.
        with pytest.raises(CaptureError) as lost:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                source.read(timeout=0.5)
    finally:
        source.close()
    assert str(lost.value) == "the capture process ended"


def test_a_capture_process_that_ends_in_the_middle_of_a_block_delivers_the_whole_ones_and_is_reported_lost(
        monkeypatch, tmp_path):
    # A stand-in for the capture program that writes what a dying one leaves in the pipe:
    # the format, a whole block, and a block cut short in the middle of a sample.
    whole = np.arange(BLOCK, dtype="<i2").tobytes()
    ready = json.dumps({"name": "testmic", "rate": 16000, "channels": 1, "block": BLOCK,
                        "driver_buffer_s": 0.5}).encode()
    messages = tmp_path / "messages"
    messages.write_bytes(HEADER.pack(b"R", len(ready)) + ready + HEADER.pack(b"A", len(whole)) + whole
                         + HEADER.pack(b"A", len(whole)) + whole[:101])
    program = tmp_path / "capture"
    program.write_text(f"#!/bin/sh\nexec cat {messages}\n")
    program.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(program))
    source = MicrophoneSource(AudioSettings(device="testmic"))
    source.open()
    try:
        first = source.read(timeout=10)
        with pytest.raises(CaptureError) as lost:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                assert source.read(timeout=0.5) is None  # the cut block is no audio
    finally:
        source.close()
    assert np.array_equal(first, np.arange(BLOCK))
    assert str(lost.value) == "the capture process ended"


def test_a_stereo_only_microphone_is_mixed_down_to_mono(alsa):
    rate = 22050  # no mono at 16, 44.1 or 48 kHz: the device's default rate, in stereo
    left, right = np.random.default_rng(19).integers(-8000, 8000, (2, 2 * rate))
    alsa.add("stereomic", np.stack([left, right], axis=1).reshape(-1), only_rate=rate)
    source, frames = captured("stereomic", 40)
    assert source.rate == rate
    mono = ((left + right) / 2).astype(np.int16)  # the mean of the channels, toward zero
    expected = StreamingResampler(rate).process(mono)
    assert np.array_equal(frames, expected[:40 * 512])


@pytest.mark.parametrize("sizes", [[2048, 2048], [300, 700, 100, 1000, 1], [511, 1, 1023, 513, 5]])
def test_frame_assembler_cuts_blocks_of_any_length_into_whole_frames(sizes):
    samples = np.arange(sum(sizes), dtype=np.int16)
    assembler = FrameAssembler()
    assembled = [assembler.add(block) for block in np.split(samples, np.cumsum(sizes)[:-1])]
    # Each block gives the frames it completed, whole, in one array, and nothing more.
    ends = np.cumsum(sizes) // 512 * 512
    assert [(len(a), a.dtype) for a in assembled] == [(e - b, np.int16) for b, e in zip([0, *ends[:-1]], ends)]
    assert np.array_equal(np.concatenate(assembled), samples[:ends[-1]])


def test_edge_run_without_the_microphone_fails_in_one_line_naming_make_demo(alsa, lesson, tmp_path):
    alsa.add("testmic", lesson[:16000])
    config = tmp_path / "edge.yaml"
    config.write_text(f"audio:\n  device: nothere\nstorage:\n  recordings_dir: {tmp_path / 'rec'}\n"
                      f"led:\n  pin: null\nservice:\n  status_file: {tmp_path / 'status.json'}\n")
    result = subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("edge:")]
    assert len(errors) == 1
    assert "audio.device 'nothere' not found" in errors[0] and "make demo" in errors[0]


def test_edge_devices_lists_rates_and_marks_the_configured_device(alsa, lesson, tmp_path, capsys):
    from edge.cli import main

    alsa.add("testmic", lesson[:16000])
    alsa.add("classmic", lesson[:16000])
    config = tmp_path / "edge.yaml"
    config.write_text("audio: {device: classmic}\n")
    assert main(["devices", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    marked = [line for line in lines if line.startswith("*")]
    assert marked == ["* classmic  [128 ch; 16000, 44100, 48000 Hz]"]
    assert any(line.startswith("  testmic  [") for line in lines)


def test_every_capture_device_is_listed_with_its_portaudio_index_channels_and_mono_rates(alsa, lesson):
    import pyaudio

    from edge.capture import list_input_devices

    alsa.add_speaker("speaker")  # no capture side, and listed first: the list goes on after it
    alsa.add_fixed("monomic", channels=1)
    alsa.add_fixed("oddmic", channels=2, only_rate=22050)
    alsa.add("testmic", lesson[:16000])
    pa = pyaudio.PyAudio()
    try:
        devices = list_input_devices(pa)
    finally:
        pa.terminate()
    # PortAudio numbers ALSA's PCMs in the order of their configuration, and `default` (the
    # speaker) last. A device opens in mono at none of the probed rates: its own is listed.
    assert devices == [InputDevice(1, "monomic", 1, 44100, PROBE_RATES),
                       InputDevice(2, "oddmic", 2, 22050, ()),
                       InputDevice(3, "testmic", 128, 44100, PROBE_RATES)]


@pytest.mark.parametrize("wanted, marks, note", [
    ("classmic", [" ", "*", " "], []),
    ("nothere", [" ", " ", " "], ["audio.device 'nothere' matches none of these"]),
])
def test_devices_are_described_one_a_line_marking_the_configured_one(alsa, lesson, wanted, marks, note):
    alsa.add("testmic", lesson[:16000])
    alsa.add("classmic", lesson[:16000])
    lines = describe_devices(AudioSettings(device=wanted))
    # ALSA's default PCM is a capture device too (conftest points it at the first one).
    assert lines == [f"{mark} {name}  [128 ch; 16000, 44100, 48000 Hz]"
                     for mark, name in zip(marks, ["testmic", "classmic", "default"])] + note


def test_device_names_from_the_config_find_portaudio_devices(monkeypatch):
    from edge.capture import InputDevice, pick_device

    devices = [InputDevice(0, "default", 128, 44100, (16000, 44100, 48000)),
               InputDevice(3, "USB PnP Sound Device: Audio (hw:1,0)", 1, 48000, (48000,)),
               InputDevice(4, "bcm2835 Headphones: - (hw:0,0)", 2, 44100, (44100,))]
    real_readlink = __import__("os").readlink
    # /proc/asound/<card id> links to the card's number: what ALSA does on the Pi.
    monkeypatch.setattr("os.readlink", lambda p: "card1" if p == "/proc/asound/Device" else real_readlink(p))
    assert pick_device(devices, "default").index == 0
    assert pick_device(devices, "plughw:CARD=Device,DEV=0").index == 3
    assert pick_device(devices, "hw:1,0").index == 3
    assert pick_device(devices, "plughw:0").index == 4
    assert pick_device(devices, "usb pnp").index == 3
    assert pick_device(devices, "plughw:CARD=Other,DEV=0") is None
    assert pick_device(devices, "webcam") is None


@contextmanager
def capturing(device: str, **popen) -> Iterator[subprocess.Popen]:
    """The capture process as MicrophoneSource starts it, with this process as its recorder;
    killed and reaped after, whatever the test found."""
    params = {"device": device, "capture_rate": None, "parent": os.getpid()}
    child = subprocess.Popen([sys.executable, "-m", "edge.capture", json.dumps(params)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, **popen)
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def next_message(pipe) -> Optional[tuple[bytes, bytes]]:
    """The next message of a capture process, (kind, payload); None once its stdout is closed."""
    header = pipe.read(HEADER.size)
    if not header:
        return None
    kind, length = HEADER.unpack(header)
    return kind, pipe.read(length)


def process_state(pid: int) -> str:
    """The state letter of a process in /proc (R, S, T: stopped, Z: ended, not yet reaped), or
    "" once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return stat.rpartition(")")[2].split()[0]


def test_the_capture_process_outlives_signals_meant_for_the_recorder(alsa, lesson):
    """systemd's stop sends SIGTERM to every process of the unit, Ctrl-C sends SIGINT to the
    whole process group: the recorder stops, and its capture must not end first."""
    alsa.add("testmic", lesson)
    with capturing("testmic") as child:
        assert next_message(child.stdout)[0] == b"R"
        first = next_message(child.stdout)
        child.send_signal(signal.SIGTERM)
        child.send_signal(signal.SIGINT)
        # The file plugin delivers as fast as it is read: 200 blocks take well under a second.
        blocks = [next_message(child.stdout) for _ in range(200)]
        assert first[0] == b"A" and all(kind == b"A" for kind, _ in blocks)
        assert child.poll() is None


@pytest.mark.parametrize("fixed, channels", [(None, 2), (2, 2), (1, 1)],
                         ids=["any number of channels", "two channels", "one channel"])
def test_a_device_that_opens_at_none_of_the_probed_rates_is_captured_at_its_own_in_up_to_two_channels(
        alsa, fixed, channels):
    # Such a device may not open in mono at all (a USB microphone's stereo-only hardware),
    # so it is opened in as many channels as it has, at most two; the reader averages them.
    if fixed is None:
        alsa.add("oddmic", np.zeros(22050, dtype=np.int16), only_rate=22050)
    else:
        alsa.add_fixed("oddmic", channels=fixed, only_rate=22050)
    with capturing("oddmic") as child:
        ready, first = next_message(child.stdout), next_message(child.stdout)
    block = round(BLOCK * 22050 / 16000)
    info = json.loads(ready[1])
    assert ready[0] == b"R" and info == {"name": "oddmic", "rate": 22050, "channels": channels, "block": block,
                                         "driver_buffer_s": info["driver_buffer_s"]}
    assert_whole_blocks_of_about_two_seconds(info["driver_buffer_s"], block, 22050)
    assert first == (b"A", bytes(2 * channels * block))  # silence, in the channels opened


def test_a_device_that_fails_ends_the_capture_process_with_portaudio_s_reason(alsa, lesson):
    alsa.add("testmic", lesson, failing=True)
    with capturing("testmic") as child:
        # It fails after its first buffer (about 2 s): four seconds of blocks are more than it delivers.
        messages = [next_message(child.stdout) for _ in range(4 * 16000 // BLOCK)]
        assert None in messages, "the capture process went on after its device failed"
        assert child.wait(timeout=10) == 1
    ended = messages.index(None)
    audio = b"".join(payload for _, payload in messages[1:ended - 1])
    assert [kind for kind, _ in messages[:ended]] == [b"R"] + [b"A"] * (ended - 2) + [b"E"] and audio
    assert audio == lesson[: len(audio) // 2].astype("<i2").tobytes()
    assert messages[ended - 1][1] == b"the capture stream failed: Unanticipated host error"


def test_the_block_after_the_capture_process_fell_behind_the_device_is_marked_as_an_overrun(
        alsa, lesson, fed_mic_plugin):
    fed = feed(alsa.add_fed("fedmic", fed_mic_plugin), lesson[:BLOCK])
    fcntl.fcntl(fed, fcntl.F_SETPIPE_SZ, 2 * 4 * 16000 * 2)  # room for the stall below
    try:
        with capturing("fedmic") as child:
            assert next_message(child.stdout)[0] == b"R"
            before = next_message(child.stdout)
            # The capture process stalls (a busy CPU) while the device captures more than its
            # buffer (about 2 s) holds: four seconds.
            child.send_signal(signal.SIGSTOP)
            wait_until(lambda: process_state(child.pid) == "T", "the capture process to stop")
            stalled = lesson[BLOCK:BLOCK + 4 * 16000].astype("<i2").tobytes()
            assert os.write(fed, stalled) == len(stalled)
            child.send_signal(signal.SIGCONT)
            after = [next_message(child.stdout) for _ in range(3)]
    finally:
        os.close(fed)
    assert before == (b"A", lesson[:BLOCK].astype("<i2").tobytes())
    # PortAudio reports an overrun with the read after the one that met it.
    assert [kind for kind, _ in after] == [b"A", b"O", b"A"]


def ends_with(samples: np.ndarray, tail: np.ndarray) -> Optional[int]:
    """How many samples of ``samples`` come before the end of ``tail`` in it, or None."""
    at = samples.astype("<i2").tobytes().find(tail.astype("<i2").tobytes())
    return None if at < 0 or at % 2 else at // 2 + len(tail)


def test_a_microphone_counts_each_overrun_of_its_device_once_and_keeps_recording(alsa, lesson, fed_mic_plugin):
    stalled = 4 * 16000  # captured while nobody reads: more than the device's buffer (about 2 s) holds
    fed = feed(alsa.add_fed("fedmic", fed_mic_plugin), lesson[:BLOCK])
    fcntl.fcntl(fed, fcntl.F_SETPIPE_SZ, 4 * stalled * 2)  # room for a stall and what is left of the last
    before = child_processes()
    source = MicrophoneSource(AudioSettings(device="fedmic", buffer_s=NO_DROP_BUFFER_S))
    source.open()
    try:
        (capture,) = child_processes() - before
        first = source.read(timeout=10)
        received, kept = [], np.zeros(0, dtype=np.int16)
        for at in (BLOCK, BLOCK + stalled + 2 * BLOCK):
            # The capture process kept from the CPU (a busy Pi) while its device captures.
            os.kill(capture, signal.SIGSTOP)
            wait_until(lambda: process_state(capture) == "T", "the capture process to stop")
            os.write(fed, lesson[at:at + stalled].astype("<i2").tobytes())
            os.kill(capture, signal.SIGCONT)
            # Then the room goes on: two blocks, the first of which must reach the reader.
            os.write(fed, lesson[at + stalled:at + stalled + 2 * BLOCK].astype("<i2").tobytes())
            after = lesson[at + stalled:at + stalled + BLOCK]
            while ends_with(kept, after) is None:
                frame = source.read(timeout=10)
                assert frame is not None, f"the audio after the stall at {at} never came"
                kept = np.concatenate([kept, frame])
            received.append(ends_with(kept, after))
            kept = kept[received[-1]:]
        assert (source.overflows, source.dropped_frames) == (2, 0)
    finally:
        source.close()
        os.close(fed)
    assert np.array_equal(first, lesson[:BLOCK])
    # Each stall lost what the device could not hold, and only that: some of the stalled
    # audio came, the block after it whole, and nothing more than was captured.
    assert all(BLOCK < count < stalled + BLOCK for count in received), received


def test_a_float_device_s_samples_beyond_full_scale_are_clipped_not_wrapped_round(alsa, fed_mic_plugin):
    too_loud = np.zeros(BLOCK, dtype=np.float32)
    too_loud[:2] = [2.0, -2.0]
    fed = feed(alsa.add_fed("floatmic", fed_mic_plugin, sample_format="FLOAT_LE"), too_loud, dtype="<f4")
    try:
        with capturing("floatmic") as child:
            ready, first = next_message(child.stdout), next_message(child.stdout)
    finally:
        os.close(fed)
    assert ready[0] == b"R" and first[0] == b"A"
    assert np.frombuffer(first[1], dtype="<i2")[:2].tolist() == [32767, -32768]


def test_a_capture_process_whose_recorder_closed_its_pipe_ends_quietly(alsa, lesson):
    alsa.add("testmic", lesson)
    with capturing("testmic", stderr=subprocess.PIPE) as child:
        assert next_message(child.stdout)[0] == b"R"
        child.stdout.close()  # the recorder closed the microphone
        assert child.wait(timeout=10) == 0
    assert child.stderr.read() == b""


def test_the_capture_process_of_an_office_install_says_the_device_extra_is_missing(alsa, lesson, tmp_path):
    alsa.add("testmic", lesson)
    # An office install (pip install . without the device extra): this Python's packages
    # without PyAudio, and no others (-S: no site-packages).
    packages = tmp_path / "packages"
    packages.mkdir()
    for folder in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for entry in Path(folder).iterdir():
            if not entry.name.lower().startswith("pyaudio"):
                (packages / entry.name).symlink_to(entry)
    repo = Path(__file__).resolve().parent.parent
    params = {"device": "testmic", "capture_rate": None, "parent": os.getpid()}
    child = subprocess.run([sys.executable, "-S", "-m", "edge.capture", json.dumps(params)], cwd=repo,
                           env={**os.environ, "PYTHONPATH": f"{packages}{os.pathsep}{repo}"},
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    message = missing_device_module("pyaudio").encode()
    assert child.stdout == HEADER.pack(b"E", len(message)) + message and child.returncode == 1


RECORDER = """
import json, os, subprocess, sys
params = {"device": sys.argv[1], "capture_rate": None, "parent": os.getpid()}
capture = subprocess.Popen([sys.executable, "-m", "edge.capture", json.dumps(params)], stdin=subprocess.DEVNULL)
print(capture.pid, file=sys.stderr, flush=True)
capture.wait()
"""


def test_the_capture_process_dies_with_a_recorder_that_is_killed(alsa, lesson):
    """A SIGKILLed recorder cannot close its microphone: its capture process must not go on
    holding the device (the service's restart could never open it again)."""
    alsa.add("testmic", lesson)
    recorder = subprocess.Popen([sys.executable, "-c", RECORDER, "testmic"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    capture = int(recorder.stderr.readline())
    try:
        # The capture process writes to the recorder's stdout: it is capturing.
        assert next_message(recorder.stdout)[0] == b"R"
        recorder.kill()
        recorder.wait()
        wait_until(lambda: process_state(capture) in ("", "Z"), "the capture process to die with its recorder")
    finally:
        recorder.kill()
        recorder.wait()
        if process_state(capture) not in ("", "Z"):
            os.kill(capture, signal.SIGKILL)


ORPHANED = """
import ctypes, json, os, signal, sys
ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphans below are adopted here, as by systemd
gone, recorder_alive = os.pipe()
output, capture_output = os.pipe()
recorder = os.fork()
if recorder == 0:
    params = {"device": sys.argv[1], "capture_rate": None, "parent": os.getpid()}
    capture = os.fork()
    if capture == 0:
        os.close(recorder_alive)
        os.read(gone, 1)  # end of file: the recorder is gone
        os.dup2(capture_output, 1)
        os.execv(sys.executable, [sys.executable, "-m", "edge.capture", json.dumps(params)])
    os.kill(os.getpid(), signal.SIGKILL)
os.close(recorder_alive)
os.close(capture_output)
ended = dict(os.waitpid(-1, 0) for _ in range(2))  # the recorder, and the capture process it left
del ended[recorder]
print(os.waitstatus_to_exitcode(*ended.values()), os.read(output, 65536))
"""


def test_a_capture_process_whose_recorder_was_killed_before_it_began_exits_at_once(alsa, lesson):
    """The recorder SIGKILLed before its capture process could ask to die with it: the
    capture process, adopted, exits at once and without a word (the adopter prints its exit
    status and what it wrote)."""
    alsa.add("testmic", lesson)
    adopter = subprocess.run([sys.executable, "-c", ORPHANED, "testmic"], stdin=subprocess.DEVNULL,
                             capture_output=True, timeout=60)
    assert adopter.stdout == b"0 b''\n"


def system_portaudio() -> Path:
    """The PortAudio file PyAudio's extension links."""
    import pyaudio

    (extension,) = Path(pyaudio.__file__).parent.glob("_portaudio*.so")
    linked = subprocess.run(["ldd", str(extension)], capture_output=True, text=True, check=True).stdout
    (line,) = [line for line in linked.splitlines() if "libportaudio.so.2 =>" in line]
    return Path(line.split()[2]).resolve()


def patch_string(path: Path, old: bytes, new: bytes) -> None:
    """``old`` to ``new`` (same length) in a file that holds it once: an ELF name, in place."""
    data = path.read_bytes()
    assert len(old) == len(new) and data.count(old) == 1
    path.write_bytes(data.replace(old, new))


def vendored_portaudio(folder: Path) -> dict:
    """A PyAudio with a PortAudio of its own, as a wheel vendors it: a soname of its own."""
    import pyaudio

    site, lib = folder / "site", folder / "lib"
    shutil.copytree(Path(pyaudio.__file__).parent, site / "pyaudio", ignore=shutil.ignore_patterns("__pycache__"))
    (extension,) = (site / "pyaudio").glob("_portaudio*.so")
    patch_string(extension, b"libportaudio.so.2\0", b"libportaudio.so.9\0")
    lib.mkdir()
    shutil.copy(system_portaudio(), lib / "libportaudio.so.9")
    patch_string(lib / "libportaudio.so.9", b"libportaudio.so.2\0", b"libportaudio.so.9\0")
    return {"PYTHONPATH": str(site), "LD_LIBRARY_PATH": str(lib)}


def renamed_portaudio(folder: Path) -> dict:
    """PortAudio in a file whose name does not say so, found by its soname (a link to it)."""
    lib = folder / "lib"
    lib.mkdir(parents=True)
    shutil.copy(system_portaudio(), lib / "pa19.so")
    (lib / "libportaudio.so.2").symlink_to("pa19.so")
    return {"LD_LIBRARY_PATH": str(lib)}


@pytest.mark.parametrize("install", [vendored_portaudio, renamed_portaudio], ids=["vendored", "renamed"])
def test_the_stream_is_opened_in_the_portaudio_that_pyaudio_loaded(alsa, lesson, tmp_path, monkeypatch, install):
    # PyAudio opens its streams at PortAudio's low latency, so the capture process opens its
    # own through PortAudio's API: in the same PortAudio, which another copy is not (its
    # device list is not PyAudio's, and it was never initialised).
    for name, value in install(tmp_path / "portaudio").items():
        monkeypatch.setenv(name, value)  # for the capture process
    alsa.add("testmic", lesson)
    _, frames = captured("testmic", 10)
    assert np.array_equal(frames, lesson[: 10 * 512])
