"""What `edge sync` remembers and reports, without a remote: the state on the card (damaged
ones too), the report of a run and of its passes, where a remote's copies go and which remotes
are refused, and the lines `edge status` shows from the card and from the last run."""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import pytest

from edge.cli import main
from edge.config import settings_from_dict
from edge.errors import EdgeError
from edge.sync_state import (SYNC_RUN, SYNC_STATE, SyncReport, SyncState, file_size, lasting, split_remote,
                             status_lines)

REMOTE = "nas:recordings/room-12"
"""The device's folder on the remote: sync.remote nas:recordings/{device} on room-12."""


# The state on the card.

@pytest.mark.parametrize("content", [
    b'{"remote": "nas:recordings/room-12", "synced": {"2026',  # cut short
    b"\xff\xfe{}",                                               # not UTF-8
    b"[]",                                                       # not an object
    b'{"remote": "nas:recordings/room-12", "synced": []}',
    b'{"remote": "nas:recordings/room-12", "synced": {"20261123/room-12_000001.wav": "verified"}}',
], ids=["cut-short", "not-utf8", "list", "synced-list", "record-not-object"])
def test_a_damaged_state_is_forgotten_and_said_once(tmp_path, caplog, content):
    (tmp_path / SYNC_STATE).write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="edge.sync_state"):
        state = SyncState.load(tmp_path)
    assert state == SyncState()
    assert caplog.messages == [f"{tmp_path / SYNC_STATE}: unreadable, every copy on the remote will be verified again"]


@pytest.mark.parametrize("extra", [{}, {"written_by": "a later version"}], ids=["as-written", "unknown-key"])
def test_a_state_without_verified_copies_keeps_its_runs(tmp_path, caplog, extra):
    """A state that never recorded a copy (none was verified yet) is no damage: the last runs'
    times and error stay; a key this version does not know is left out."""
    runs = {"remote": REMOTE, "last_success": "2026-11-24T09:00:00+01:00",
            "last_attempt": "2026-11-24T09:15:00+01:00", "last_error": "the remote is full", "waiting": 6,
            "waiting_bytes": 240_000}
    (tmp_path / SYNC_STATE).write_text(json.dumps({**runs, **extra}))
    with caplog.at_level(logging.WARNING, logger="edge.sync_state"):
        assert SyncState.load(tmp_path) == SyncState(**runs)
    assert caplog.messages == []


@pytest.mark.parametrize("change, rewritten", [
    ({"last_attempt": "2026-11-24T09:30:00+01:00"}, False),
    ({"last_attempt": "2026-11-24T09:30:00+01:00", "last_success": "2026-11-24T09:30:00+01:00"}, False),
    ({"last_error": "connection refused"}, True),
    ({"waiting": 7, "waiting_bytes": 280_000}, True),
    ({"synced": {}}, True),
], ids=["attempt", "success", "error", "backlog", "copies"])
def test_only_what_outlasts_a_run_is_worth_a_write_to_the_card(change, rewritten):
    before = SyncState(remote=REMOTE, synced={"20261123/room-12_000001.wav": {"sha256": "0" * 64, "listed": True}},
                       last_success="2026-11-24T09:15:00+01:00", last_attempt="2026-11-24T09:15:00+01:00",
                       waiting=6, waiting_bytes=240_000)
    after = SyncState(**{**asdict(before), **change})
    assert (lasting(asdict(after)) != lasting(asdict(before))) == rewritten


@pytest.mark.parametrize("content, expected", [(b"RIFF" + bytes(40), 44), (None, 0)], ids=["on-card", "deleted"])
def test_a_segment_deleted_while_counted_weighs_nothing(tmp_path, content, expected):
    segment = tmp_path / "room-12_000001.wav"
    if content is not None:
        segment.write_bytes(content)
    assert file_size(segment) == expected


# What a run reports.

def test_the_passes_of_one_sync_add_their_counts_and_end_with_the_last_ones_backlog_and_outcome():
    first = SyncReport(waiting=2, waiting_bytes=64_000, uploaded=4, uploaded_bytes=128_000, verified=6, deleted=4)
    last = SyncReport(waiting=1, waiting_bytes=32_000, uploaded=2, uploaded_bytes=64_000, verified=3, deleted=1,
                      problems=["20261123/room-12_000009.wav: corrupted on the card (its SHA-256 does not match "
                                "the manifest), not synced"],
                      error="connection refused")
    assert first.then(last) == SyncReport(waiting=1, waiting_bytes=32_000, uploaded=6, uploaded_bytes=192_000,
                                          verified=9, deleted=5, problems=last.problems, error="connection refused")


@pytest.mark.parametrize("deleted, ending", [(0, ""), (4, "; 4 deleted from the card")], ids=["kept", "deleted"])
def test_the_summary_says_what_was_deleted_only_when_something_was(deleted, ending):
    report = SyncReport(waiting=2, waiting_bytes=64_000, uploaded=4, uploaded_bytes=128_000, verified=6,
                        deleted=deleted)
    assert report.summary(REMOTE) == ("6 segments verified on nas:recordings/room-12 now (4 uploaded, 0.1 MB); "
                                      "2 waiting (0.1 MB)" + ending)


@pytest.mark.parametrize("error, outcome", [(None, "ok"), ("the remote is full", "failed: the remote is full")],
                         ids=["ok", "failed"])
def test_the_service_status_says_whether_the_run_failed_and_why(error, outcome):
    report = SyncReport(waiting=6, waiting_bytes=240_000, uploaded=2, error=error)
    assert report.status_line() == f"sync {outcome} · 2 uploaded · 6 waiting (0.2 MB)"


# Where the copies go, and which remotes are refused.

REFUSAL = "sync.remote must be an rclone remote and a folder, like school-nas:recordings/{{device}}, got {!r}"


def edge(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("remote, folder, staging", [
    ("nas:recordings/room-12", "nas:recordings/room-12", "nas:recordings/.incoming/room-12"),
    ("nas:/srv/recordings/room-12//", "nas:/srv/recordings/room-12", "nas:/srv/recordings/.incoming/room-12"),
    ("nas:room-12", "nas:room-12", "nas:.incoming/room-12"),
    ("nas:recordings/LAB-X", "nas:recordings/LAB-X", "nas:recordings/.incoming/LAB-X"),
    ("nas:recordings/room:12", "nas:recordings/room:12", "nas:recordings/.incoming/room:12"),
], ids=["folder", "trailing-slashes", "top-level", "ends-in-X", "colon-in-folder"])
def test_copies_wait_in_a_staging_folder_beside_the_devices_folder(remote, folder, staging):
    assert split_remote(remote) == (folder, staging)


@pytest.mark.parametrize("remote", [
    "nas:", "nas:/", "recordings/room-12", ":recordings/room-12", "-nas:recordings/room-12",
    " nas:recordings/room-12",
], ids=["no-folder", "root", "no-remote", "empty-name", "option-like", "leading-space"])
def test_a_remote_that_is_not_a_remote_and_a_folder_is_refused_in_one_line(tmp_path, capsys, remote):
    config = tmp_path / "edge.yaml"
    config.write_text(json.dumps({"storage": {"recordings_dir": str(tmp_path / "recordings")}, "led": {"pin": None},
                                  "sync": {"remote": remote, "rclone_config": str(tmp_path / "rclone.conf")}}))
    assert edge(capsys, "sync", "--config", str(config)) == (2, "", f"edge: {REFUSAL.format(remote)}\n")


def test_sync_without_a_remote_says_what_to_set(tmp_path, capsys):
    config = tmp_path / "edge.yaml"
    config.write_text(json.dumps({"storage": {"recordings_dir": str(tmp_path / "recordings")}, "led": {"pin": None}}))
    assert edge(capsys, "sync", "--config", str(config)) == (
        2, "", "edge: no remote configured: set sync.remote (e.g. school-nas:recordings/{device})\n")


# What `edge status` shows.

DEVICE = "room-12"


def settings(tmp_path: Path, remote: str | None = "nas:recordings/{device}"):
    return settings_from_dict({"storage": {"recordings_dir": str(tmp_path / "recordings"), "device_name": DEVICE},
                               "service": {"status_file": str(tmp_path / "status.json")},
                               "led": {"pin": None}, "sync": {"remote": remote}})


CARD = SyncState(remote=REMOTE, last_success="2026-11-24T09:00:00+01:00",
                 last_attempt="2026-11-24T09:15:00+01:00", last_error="the remote is full")
"""The card's state: the last run that changed something (what is left after a reboot)."""
RUN = {"remote": REMOTE, "last_attempt": "2026-11-24T10:15:00+01:00", "last_success": "2026-11-24T10:15:00+01:00",
       "last_error": None}
"""sync-run.json in memory: the last run since boot, which had nothing to change on the card."""


@pytest.mark.parametrize("record, last_success, last_error", [
    (None, CARD.last_success, CARD.last_error),
    (json.dumps(RUN), RUN["last_success"], "none"),
    (json.dumps({**RUN, "last_success": CARD.last_success, "last_error": "connection refused"}),
     CARD.last_success, "connection refused"),
    (json.dumps({**RUN, "remote": "old-nas:recordings/room-12"}), CARD.last_success, CARD.last_error),
    ('{"remote": "nas:rec', CARD.last_success, CARD.last_error),
    (json.dumps([RUN]), CARD.last_success, CARD.last_error),
], ids=["after-reboot", "since-boot", "failed-since-boot", "to-another-remote", "cut-short", "not-an-object"])
def test_status_shows_the_last_run_since_boot_else_the_cards(tmp_path, record, last_success, last_error):
    (tmp_path / "recordings").mkdir()
    CARD.save(tmp_path / "recordings")
    if record is not None:
        (tmp_path / SYNC_RUN).write_text(record)
    assert status_lines(settings(tmp_path)) == [f"last sync:      {last_success} to {REMOTE}",
                                                "waiting:        0 segments (0.0 MB)",
                                                f"sync problem:   {last_error}"]


def test_status_of_a_device_that_never_synced(tmp_path):
    (tmp_path / "recordings").mkdir()
    assert status_lines(settings(tmp_path)) == [f"last sync:      never to {REMOTE}",
                                                "waiting:        0 segments (0.0 MB)",
                                                "sync problem:   none"]


def test_status_without_a_remote_says_sync_is_off(tmp_path):
    assert status_lines(settings(tmp_path, remote=None)) == ["sync:           off (no sync.remote)"]


@contextmanager
def unreadable(folder: Path):
    """``folder`` closed to this process (which becomes nobody meanwhile if it is root: root reads all)."""
    folder.chmod(0)
    if os.geteuid() == 0:
        os.seteuid(65534)
    try:
        yield
    finally:
        if os.getuid() == 0:
            os.seteuid(0)
        folder.chmod(0o700)


def test_status_of_recordings_this_user_may_not_read_says_to_use_sudo(tmp_path):
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    CARD.save(recordings)
    with unreadable(recordings), pytest.raises(EdgeError) as refused:
        status_lines(settings(tmp_path))
    assert str(refused.value) == f"{recordings}: permission denied (the recordings are private: sudo edge status)"
