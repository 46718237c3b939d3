"""Input WAVs and resampling: odd files are converted or refused in one line, and resampled
audio keeps its band and its timing."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from conftest import LESSON_WAV
from edge.cli import main
from edge.errors import EdgeError
from edge.resample import StreamingResampler, resample_to_16k
from edge.storage import MANIFEST, read_manifest
from edge.wavio import read_wav_16k


def write_wav(path, samples, rate=16000, channels=1, width=2):
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())
    return path


def tone(frequency, rate, seconds=1.0, amplitude=10000):
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def rms(x):
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = tone(440, 16000), np.zeros(16000, np.int16)
    path = write_wav(tmp_path / "stereo.wav", np.stack([left, right], axis=1), channels=2)
    np.testing.assert_allclose(read_wav_16k(path), left / 2, atol=1)


@pytest.mark.parametrize("rate", [44100, 48000, 8000, 22050])
def test_other_rates_are_resampled_keeping_the_tone_and_the_length(tmp_path, rate):
    path = write_wav(tmp_path / "tone.wav", tone(440, rate, seconds=2.0), rate=rate)
    samples = read_wav_16k(path)
    assert len(samples) == 32000
    expected = tone(440, 16000, seconds=2.0)
    # No delay, no gain change: the filter's delay is removed exactly.
    assert np.max(np.abs(samples[200:-200].astype(int) - expected[200:-200])) <= 3


@pytest.mark.parametrize("rate", [44100, 48000])
def test_content_above_8khz_does_not_fold_into_the_speech_band(rate):
    # Dropping samples would turn a 12 kHz whistle into a 4 kHz one at full strength.
    assert rms(resample_to_16k(tone(12000, rate), rate)[200:-200]) < 0.001 * rms(tone(12000, rate))


def test_block_boundaries_leave_no_trace():
    samples = tone(440, 48000) + tone(3000, 48000) // 2
    whole = StreamingResampler(48000).process(samples)
    resampler = StreamingResampler(48000)
    pieces = np.concatenate([resampler.process(block) for block in np.array_split(samples, 37)])
    np.testing.assert_array_equal(pieces, whole)


def test_8_bit_wav_is_refused_saying_how_to_convert(tmp_path):
    path = write_wav(tmp_path / "old.wav", np.full(1000, 128, np.uint8), width=1)
    with pytest.raises(EdgeError, match=r"old.wav: 8-bit samples are not supported, expected 16-bit PCM \(convert with: sox"):
        read_wav_16k(path)


@pytest.mark.parametrize("content, message", [
    (b"", "not a readable PCM WAV file"),
    (b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk", "not a readable PCM WAV file"),
    (b"this is a text file, not audio", "not a readable PCM WAV file"),
])
def test_unreadable_files_are_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(EdgeError, match=message) as caught:
        read_wav_16k(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def test_edge_process_stops_at_a_bad_file_keeping_what_it_stored(tmp_path, capsys):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio")
    config = tmp_path / "edge.yaml"
    config.write_text("led: {pin: null}\n")
    out = tmp_path / "out"
    assert main(["process", str(LESSON_WAV), str(broken), "--out", str(out), "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert "lesson_15s.wav: speech found, 3 segments" in captured.out
    assert f"edge: {broken}: not a readable PCM WAV file" in captured.err
    entries = read_manifest(out / MANIFEST)
    assert len(entries) == 3 and all((out / e["file"]).exists() for e in entries)


def test_edge_process_missing_input_names_it(tmp_path, capsys):
    assert main(["process", str(tmp_path / "nothere.wav"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == f"edge: {tmp_path / 'nothere.wav'}: no such file"


@pytest.mark.parametrize("rate", [0, 1, 10**6])
def test_a_header_with_an_impossible_rate_is_one_line(tmp_path, rate):
    path = tmp_path / "damaged.wav"
    data = bytearray(LESSON_WAV.read_bytes()[:44 + 3200])
    data[24:28] = rate.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(EdgeError, match=rf"damaged.wav: its header says {rate} Hz, expected 8000 to 384000 Hz"):
        read_wav_16k(path)
