"""The office catalogue (edge.catalogue): `edge list DIR...` answers as the plain reader
(`--no-catalogue`, every manifest read) does, after appends, rewrites, a lost or damaged
catalogue file, and where the catalogue cannot be written."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from edge import manifest as manifest_module
from bench.scaling import make_history
from edge import catalogue, catalogue_pages, catalogue_table
from edge.catalogue import catalogue_path, open_catalogue
from edge.cli import main
from edge.listing import device_folders
from edge.manifest import rewrite_manifest

DAYS, PER_DAY = 3, 8


def edge(capsys, *argv) -> tuple:
    manifest_module._warned.clear()  # each run warns as a fresh process does
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def both(capsys, *argv) -> tuple:
    """(catalogue's, plain reader's) (code, out, err) of `edge list ARGV`."""
    return edge(capsys, "list", *argv), edge(capsys, "list", "--no-catalogue", *argv)


def assert_same(capsys, office: Path, *options) -> str:
    """Table and CSV of the catalogue equal the plain reader's, warnings included; returns
    the table."""
    outputs = []
    for argv in ((*options, office), ("--csv", *options, office)):
        catalogue, plain = both(capsys, *argv)
        assert catalogue == plain
        assert catalogue[0] == 0, catalogue[2]
        outputs.append(catalogue[1])
    return outputs[0]


@pytest.fixture
def office(tmp_path) -> Path:
    """Two devices' folders, one with damaged lines, a segment whose file is gone and a line
    without a device."""
    office = tmp_path / "office"
    for room in ("room-a", "room-b"):
        make_history(office / room, DAYS, PER_DAY)
    manifest = office / "room-b" / "20250902" / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    lines[2] = "{not json"
    lines[4] = json.dumps([1, 2])
    entry = json.loads(lines[5])
    del entry["device"]
    lines[5] = json.dumps(entry)
    manifest.write_text("\n".join(lines) + "\n" + '{"file": "torn')
    (office / "room-a" / json.loads(lines[0])["file"]).unlink()  # gone without a tombstone
    # Copied an hour ago: the catalogue trusts what has not changed since (a fresh mtime, it
    # reads again every time), so what it kept is used.
    an_hour_ago = time.time() - 3600
    for path in [office, *office.rglob("*")]:
        os.utime(path, (an_hour_ago, an_hour_ago), follow_symlinks=False)
    return office


def day_manifest(office: Path, room: str, day: str) -> Path:
    return office / room / day / "manifest.jsonl"


def append_segment(office: Path, room: str, day: str, seq: int, start: str = "", device: str = "room1") -> str:
    """A new segment (its file and line) appended to a day's manifest; returns its file."""
    manifest = day_manifest(office, room, day)
    entry = json.loads(manifest.read_text().splitlines()[0])
    start = start or f"{day[:4]}-{day[4:6]}-{day[6:]}T12:00:00.000+01:00"
    entry.update(seq=seq, file=f"{day}/{seq:06d}_{start[11:13]}{start[14:16]}00_{device}.wav", start=start,
                 device=device)
    (office / room / entry["file"]).write_bytes(b"RIFF")
    with open(manifest, "a") as f:
        f.write(json.dumps(entry) + "\n")
    return entry["file"]


def test_output_equals_the_plain_readers_with_damaged_lines(office, capsys):
    first = assert_same(capsys, office)  # the first run builds the catalogue
    assert catalogue_path().is_file()
    assert assert_same(capsys, office) == first  # the next one reads it
    _, _, err = edge(capsys, "list", office)
    assert err.count("warning:") == 2 and ":3: skipped" in err and ":5: skipped" in err
    assert first.count("\nroom-b ") == 1  # the line without a device: its folder's name
    assert assert_same(capsys, office / "room-b") != first  # one device of those catalogued


def test_appended_lines_are_picked_up(office, capsys):
    assert_same(capsys, office)
    added = append_segment(office, "room-a", "20250903", 900)
    out = assert_same(capsys, office)
    assert added in out and out.count(added) == 1
    # A torn last line is not read until it is whole.
    manifest = day_manifest(office, "room-a", "20250903")
    whole = manifest.read_text().splitlines()[-1]
    new = whole.replace("000900_120000", "000901_120000").replace('"seq": 900', '"seq": 901')
    (office / "room-a" / "20250903" / "000901_120000_room1.wav").write_bytes(b"RIFF")
    with open(manifest, "a") as f:
        f.write(new[:40])
    assert "000901_120000" not in assert_same(capsys, office)
    with open(manifest, "a") as f:
        f.write(new[40:] + "\n")
    assert "000901_120000" in assert_same(capsys, office)


def test_a_file_or_a_day_gone_after_a_listing_is_not_listed_again(office, capsys):
    before = assert_same(capsys, office)
    gone = json.loads(day_manifest(office, "room-a", "20250903").read_text().splitlines()[-1])["file"]
    (office / "room-a" / gone).unlink()  # without a tombstone
    for room in ("room-a", "room-b"):
        shutil.rmtree(office / room / "20250901")  # a day taken off the copies: its hours now empty
    after = assert_same(capsys, office)
    assert before.count(gone) == 2 and after.count(gone) == 1  # room-b's file of that name stays
    assert segments_listed(after) == segments_listed(before) - 1 - 2 * PER_DAY
    assert "2025-09-01" in before and "2025-09-01" not in after


def test_segments_either_side_of_an_hour_are_listed_once_each(office, capsys):
    assert_same(capsys, office)
    last_of_hour = append_segment(office, "room-a", "20250903", 900, start="2025-09-03T07:59:59.999999+00:00")
    first_of_next = append_segment(office, "room-a", "20250903", 901, start="2025-09-03T08:00:00.000+00:00")
    out = assert_same(capsys, office)
    assert out.count(last_of_hour) == 1 and out.count(first_of_next) == 1


def test_a_list_with_nothing_changed_writes_the_text_it_kept(office, capsys, monkeypatch):
    kept = {form: edge(capsys, "list", *form, office)[1] for form in ((), ("--csv",))}
    cells_read = []

    def note_reads(action, table, column, *_):
        if action == sqlite3.SQLITE_READ:
            cells_read.append((table, column))
        return sqlite3.SQLITE_OK

    def watched(path):
        db = real_connect(path)
        db.set_authorizer(note_reads)
        return db

    real_connect = catalogue._connect
    monkeypatch.setattr(catalogue, "_connect", watched)
    for form, text in kept.items():
        assert edge(capsys, "list", *form, office)[1] == text
    assert ("segment", "file") not in cells_read and ("page", "text") in cells_read
    edge(capsys, "list", "--since", "2025-09-02", office)  # a range is formatted from the rows
    assert ("segment", "file") in cells_read


def test_a_wider_cell_widens_the_lines_listed_before_it(office, capsys):
    narrow = assert_same(capsys, office)
    append_segment(office, "room-a", "20250903", 900, device="the-visiting-pi-of-the-music-room")
    wide = assert_same(capsys, office)
    assert len(wide.splitlines()[1]) > len(narrow.splitlines()[1])  # the first line, of another day


def segments_listed(table: str) -> int:
    return int(table.splitlines()[-1].split()[0])


def test_a_rewritten_manifest_is_read_again(office, capsys):
    before = assert_same(capsys, office)
    manifest = day_manifest(office, "room-a", "20250901")
    gone = json.loads(manifest.read_text().splitlines()[1])
    # As `edge export --move` rewrites it, here with the segment's file left in place: only
    # reading the new manifest can drop the segment from the list.
    rewrite_manifest(manifest, lambda entry: entry["seq"] != gone["seq"],
                     lambda entry: {"deleted": entry["file"], "seq": entry["seq"], "reason": "test"})
    assert (office / "room-a" / gone["file"]).exists()
    after = assert_same(capsys, office)
    assert before.count(gone["file"]) == 2 and after.count(gone["file"]) == 1  # room-b's stays


def test_a_manifest_rewritten_to_its_old_size_is_read_again(office, capsys):
    assert_same(capsys, office)
    manifest = day_manifest(office, "room-a", "20250902")
    text = manifest.read_text()
    status = manifest.stat()
    lines = text.splitlines(keepends=True)
    lines[3] = lines[3].replace('"prob_max": 0.9987', '"prob_max": 0.4444')  # not the last 64 bytes
    changed = "".join(lines)
    assert len(changed) == len(text)
    manifest.write_text(changed)  # in place, same inode and size
    os.utime(manifest, ns=(status.st_atime_ns, status.st_mtime_ns + 5_000_000_000))
    assert "  0.444  " in assert_same(capsys, office)


def test_a_deleted_catalogue_is_rebuilt_with_the_same_output(office, capsys):
    first = assert_same(capsys, office)
    catalogue_path().unlink()
    code, out, err = edge(capsys, "list", office)
    assert (code, out) == (0, first) and catalogue_path().is_file()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_catalogue_is_rebuilt(office, capsys, damage):
    first = assert_same(capsys, office)
    path = catalogue_path()
    for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        extra.unlink(missing_ok=True)
    if damage == "garbage":
        path.write_bytes(b"not a database, a stick's sector of noise " * 100)
    else:
        data = path.read_bytes()
        path.write_bytes(data[:100] + bytes(len(data) - 100))  # the header kept, the pages zeroed
    code, out, err = edge(capsys, "list", office)
    assert (code, out) == (0, first)
    assert [line for line in err.splitlines() if not line.startswith("warning:")] == [
        line for line in err.splitlines() if line.startswith(f"edge: the catalogue {path} is damaged")]
    assert "rebuilding it from the manifests" in err and "Traceback" not in err
    assert "edge:" not in edge(capsys, "list", office)[2]  # rebuilt once


def test_an_unwritable_catalogue_place_is_one_line_and_a_temporary_catalogue(office, tmp_path, capsys,
                                                                              monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    catalogue, plain = both(capsys, office)
    assert catalogue[:2] == plain[:2]
    extra = [line for line in catalogue[2].splitlines() if not line.startswith("warning:")]
    assert len(extra) == 1 and extra[0].startswith(f"edge: cannot write the catalogue {blocker}/edge/")
    assert blocker.read_text() == "a file where the cache folder would be"


@pytest.mark.parametrize("layout", ["day manifests", "one manifest (an export)"])
def test_a_field_the_office_cannot_use_stops_it_as_the_plain_reader(office, capsys, layout):
    manifest = day_manifest(office, "room-a", "20250903")
    if layout != "day manifests":  # the card's lines in one manifest at the top, as `edge export` writes
        days = sorted((office / "room-a").glob("*/manifest.jsonl"))
        manifest = office / "room-a" / "manifest.jsonl"
        manifest.write_text("".join(day.read_text() for day in days))
        for day in days:
            day.unlink()
    lines = manifest.read_text().splitlines()
    entry = json.loads(lines[3])
    entry["sha256"] = "not a hash"
    lines[3] = json.dumps(entry)
    manifest.write_text("\n".join(lines) + "\n")
    catalogue, plain = both(capsys, office)
    assert catalogue == plain and catalogue[0] == 2 and "'sha256' must be 64 hex digits" in catalogue[2]


def test_two_lists_at_once_build_one_catalogue(office, capsys):
    expected = edge(capsys, "list", "--no-catalogue", "--csv", office)[1].replace("\r\n", "\n")
    runs = [subprocess.Popen([sys.executable, "-m", "edge", "list", "--csv", str(office)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], results
    assert [out for out, _ in results] == [expected] * 3
    assert all("edge:" not in err for _, err in results), [err for _, err in results]
    assert edge(capsys, "list", "--csv", office)[1].replace("\r\n", "\n") == expected


@pytest.mark.parametrize("change", ["a segment", "a wider cell"])
def test_a_change_made_while_a_list_kept_its_text_is_listed(office, capsys, monkeypatch, change):
    """Another `edge list` brings the catalogue up to date after this one has brought its kept
    text up to date and before it reads it: what it writes is still the folders' whole list."""
    assert_same(capsys, office)
    real_form = catalogue_table._Form
    looks = []

    def form_after_another_list(db, days, as_csv):
        looks.append(as_csv)
        if len(looks) == 2:  # the text kept, not read yet
            device = "room1" if change == "a segment" else "the-visiting-pi-of-the-music-room"
            append_segment(office, "room-b", "20250901", 900, device=device)
            with open_catalogue() as other:
                other.update(device_folders([office]))
        return real_form(db, days, as_csv)

    monkeypatch.setattr(catalogue_table, "_Form", form_after_another_list)
    code, out, _ = edge(capsys, "list", office)
    monkeypatch.undo()
    assert len(looks) == 2 and (code, out) == edge(capsys, "list", "--no-catalogue", office)[:2]
    assert "20250901/000900_" in out


@pytest.mark.parametrize("lines", ["different", "the same"])
def test_a_kept_page_larger_than_a_piece_comes_out_whole(lines):
    # An hour of many devices is several pieces; a character of two to four bytes may be cut
    # between two of them; lines all alike are read from the compressed page long before
    # their text is all out.
    text = "".join(f"room-é{n:05d}  2025-09-01 08:00:{n % 60:02d}  ü€𝄞\n" if lines == "different"
                   else "room-é00007  2025-09-01 08:00:07  ü€𝄞\n" for n in range(20_000))
    assert len(text.encode()) > 5 * catalogue_pages.PIECE
    pieces = list(catalogue_pages.decompressed(zlib.compress(text.encode(), 1)))
    assert "".join(pieces) == text
    assert len(pieces) > 5 and all(len(piece.encode()) <= catalogue_pages.PIECE + 3 for piece in pieces)


def listed_files(csv_text: str) -> list:
    return [row.split(",")[1] for row in csv_text.splitlines()[1:]]


def files_starting_on(office: Path, days: set) -> list:
    """The files of the segments whose line is whole, whose file is there and whose start, on
    the recorder's clock, falls on one of ``days`` (YYYY-MM-DD), by name (two devices may
    have the same names)."""
    found = []
    for manifest in office.glob("*/*/manifest.jsonl"):
        for line in manifest.read_text().splitlines():
            try:
                entry = json.loads(line)
                start = entry["start"]
            except (ValueError, TypeError, KeyError):
                continue
            folder = manifest.parent.parent
            if start[:10] in days and (folder / entry["file"]).exists():
                found.append(entry["file"])
    return sorted(found)


@pytest.mark.parametrize("since, until, days", [
    ("2025-09-02", "2025-09-02", {"2025-09-02"}),
    ("2025-09-02", None, {"2025-09-02", "2025-09-03"}),
    (None, "2025-09-01", {"2025-09-01"}),
    ("2025-09-04", None, set()),
])
def test_since_and_until_list_the_days_the_recorder_heard_them(office, capsys, since, until, days):
    # Two lessons near midnight whose UTC day is another: each belongs to the day its clock said.
    late = append_segment(office, "room-a", "20250902", 900, start="2025-09-02T23:30:00.000-05:00")
    early = append_segment(office, "room-a", "20250903", 901, start="2025-09-03T00:30:00.000+09:00")
    argv = [*(("--since", since) if since else ()), *(("--until", until) if until else ())]
    table = assert_same(capsys, office, *argv)
    catalogue, plain = both(capsys, "--csv", *argv, office)
    assert catalogue == plain and catalogue[0] == 0
    files = listed_files(catalogue[1])
    assert sorted(files) == files_starting_on(office, days)
    assert (late in files, early in files) == ("2025-09-02" in days, "2025-09-03" in days)
    assert table.splitlines()[-1].startswith(f"{len(files)} segments, ")


def days_of(segments_csv: str) -> dict:
    """{(device, day): (segments, speech H:MM:SS)} summed from a segment list's CSV."""
    sums: dict = {}
    for device, _, start, duration, *_ in csv.reader(segments_csv.splitlines()[1:]):
        segments, ms = sums.get((device, start[:10]), (0, 0))
        sums[device, start[:10]] = (segments + 1, ms + round(float(duration) * 1000))
    return {key: (segments, "{}:{:02d}:{:02d}".format(s // 3600, s // 60 % 60, s % 60))
            for key, (segments, ms) in sums.items() for s in [round(ms / 1000)]}


def test_days_sum_what_the_segment_list_shows_each_device_and_day(office, capsys):
    assert_same(capsys, office, "--days")
    # After the first run the manifests' summaries answer; then a day folder gets a segment its
    # clock dates the next day, and another a segment of another device.
    append_segment(office, "room-a", "20250903", 900, start="2025-09-04T00:10:00.000+01:00")
    # (The latter's day has a segment whose file is gone.)
    other = json.loads(day_manifest(office, "room-a", "20250902").read_text().splitlines()[1])
    # 5.5 s alone on its day: a total whose rounding to the second shows a wrong divisor.
    other.update(seq=901, device="visiting-pi", file="20250902/000901_090000_visiting-pi.wav", duration_s=5.5)
    (office / "room-a" / other["file"]).write_bytes(b"RIFF")
    with open(day_manifest(office, "room-a", "20250902"), "a") as f:
        f.write(json.dumps(other) + "\n")
    for days in ((), ("--since", "2025-09-02", "--until", "2025-09-04")):
        table = assert_same(capsys, office, "--days", *days)
        segments = edge(capsys, "list", "--csv", *days, office)[1]
        rows = list(csv.reader(edge(capsys, "list", "--days", "--csv", *days, office)[1].splitlines()))
        assert rows[0] == ["device", "day", "segments", "speech"]
        assert {(d, day): (int(n), speech) for d, day, n, speech in rows[1:]} == days_of(segments)
        assert [(row[1], row[0]) for row in rows[1:]] == sorted((row[1], row[0]) for row in rows[1:])
        assert table.splitlines()[-1] == edge(capsys, "list", *days, office)[1].splitlines()[-1]
    listed = days_of(edge(capsys, "list", "--csv", office)[1])
    assert listed["room1", "2025-09-04"][0] == 1 and listed["visiting-pi", "2025-09-02"] == (1, "0:00:06")
    assert listed["room-b", "2025-09-02"][0] == 1  # the line without a device: its folder's name


def test_a_range_that_ends_before_it_begins_is_one_line(office, capsys):
    for reader in ((), ("--no-catalogue",)):
        code, out, err = edge(capsys, "list", *reader, "--since", "2025-09-03", "--until", "2025-09-02", office)
        assert (code, out) == (2, "")
        assert err == "edge: --since 2025-09-03 is after --until 2025-09-02\n"


NUMERICAL_STACK_PROBE = """
import sys
from edge.cli import main
from edge.listing import device_folders
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("numpy" in sys.modules)
"""


@pytest.mark.parametrize("argv", [["list", "--days"], ["list"], ["sync", "--help"]])
def test_office_commands_start_without_the_recorders_numerical_stack(office, tmp_path, argv):
    # Asked of a fleet at the office, or every hour by the sync timer: numpy and the model
    # are the recorder's, and importing them would be most of a short run's time.
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    probe = subprocess.run([sys.executable, "-c", NUMERICAL_STACK_PROBE, *argv, str(office)],
                           capture_output=True, text=True, env=env, timeout=120)
    assert probe.stdout.splitlines()[-1] == "False", probe.stderr
