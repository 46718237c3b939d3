"""What `edge sync` reads from rclone, checked against the real rclone: a copy's log names the
files rclone proved equal by hash, and those it found in place; times compare as instants."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from edge.rclone import CopyLog, Rclone, isotime, rclone_error, same_time

pytestmark = pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone is not installed")

FILES = {"20261123/000001_091000_room-12.wav": b"\x01" * 70_000, "20261124/000002_091100_room-12.wav": b"\x02" * 9}


@pytest.fixture
def card(tmp_path):
    for name, data in FILES.items():
        (tmp_path / "card" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "card" / name).write_bytes(data)
    (tmp_path / "rclone.conf").write_text("")
    return tmp_path / "card"


def test_a_copy_log_names_what_rclone_proved_by_hash(tmp_path, card):
    rclone = Rclone(tmp_path / "rclone.conf", 5)
    result = rclone.start("copy", str(card), str(tmp_path / "staging"), log="DEBUG").result()
    log = CopyLog.parse(result.stderr)
    assert log.copied == set(FILES)
    assert log.proven == {name: f"md5 = {hashlib.md5(data).hexdigest()}" for name, data in FILES.items()}
    assert log.corrupted == {} and log.in_place == set()


def test_a_copy_log_names_what_was_already_in_place(tmp_path, card):
    rclone = Rclone(tmp_path / "rclone.conf", 5)
    rclone.run("copy", str(card), str(tmp_path / "final"))
    result = rclone.start("copy", "--compare-dest", str(tmp_path / "final"), str(card), str(tmp_path / "staging"),
                          log="DEBUG").result()
    log = CopyLog.parse(result.stderr)
    assert log.in_place == set(FILES) and log.copied == set() and log.proven == {}
    assert not (tmp_path / "staging").exists()


def test_a_hash_the_remote_could_not_compute_is_no_difference():
    lines = ['{"level":"error","msg":"corrupted on transfer: md5 hash differ \\"ab\\" vs \\"\\"","object":"a.wav"}',
             '{"level":"error","msg":"corrupted on transfer: md5 hash differ \\"ab\\" vs \\"cd\\"","object":"b.wav"}',
             '{"level":"info","msg":"Copied (new)","object":"b.wav"}']
    log = CopyLog.parse("\n".join(lines))
    assert log.corrupted == {"b.wav": 'corrupted on transfer: md5 hash differ "ab" vs "cd"'}
    assert log.copied == set() and log.proven == {}


def test_the_error_line_of_a_json_log_names_the_file():
    stderr = ('{"level":"error","msg":"Failed to copy: no space left","object":"a.wav"}\n'
              '{"level":"info","msg":"\\nTransferred: 1 / 2"}\n')
    assert rclone_error(stderr) == "a.wav: Failed to copy: no space left"


def test_times_compare_as_instants():
    assert same_time("2026-12-04T17:13:20Z", "2026-12-04T18:13:20+01:00")
    assert same_time("2026-12-04T17:13:20.5Z", "2026-12-04T17:13:20.500000000Z")
    assert not same_time("2026-12-04T17:13:20Z", "2026-12-04T17:13:21Z")
    assert not same_time("2026-12-04T17:13:20.000000001Z", "2026-12-04T17:13:20Z")
    assert not same_time("not a time", "2026-12-04T17:13:20Z")
    assert isotime(1_796_404_400_500_000_000) == "2026-12-04T17:13:20.5Z"
