"""`edge list DIR...`'s answer from the catalogue (edge.catalogue): the table or CSV of the
chosen device folders' segments, each line formatted by sqlite's printf, the whole history
from the text kept of it (edge.catalogue_pages), a range of days streamed out of one query,
the widths and the last line from the manifests' summaries, so that memory does not grow with
the history; with --days, a row per device and day, mostly from those summaries."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Iterator, TextIO

from . import catalogue_pages
from .catalogue import BATCH, EPOCH, LINE_BITS
from .day_range import DayRange
from .errors import EdgeError
from .listing import OFFICE_COLUMNS, clock_text, speech_total
from .manifest import _warned

CELLS = ("coalesce(s.device, c.name)", "s.file", "s.start", "s.duration", "s.prob_mean", "s.prob_max",
         "s.recovered")
"""The SQL of each of OFFICE_COLUMNS' cells."""


def write_listing(db: sqlite3.Connection, folders: list, out: TextIO, as_csv: bool,
                  days: DayRange = DayRange()) -> None:
    """`edge list DIR...`'s table (or CSV) of the segments of ``folders`` that start on
    ``days``, by start time (then folder name, seq), as the plain reader prints it. The whole
    history comes from its pages (edge.catalogue_pages), brought up to date first."""
    listing_id = None
    if not days.bounded:
        db.execute("BEGIN IMMEDIATE")
        try:
            _choose(db, folders)
            form = _Form(db, days, as_csv)
            listing_id = catalogue_pages.prepare(db, _listing_key(db, as_csv), form.line, form.rows, form.end)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    db.execute("BEGIN")  # one snapshot for the checks, the widths and the rows
    try:
        if days.bounded:
            _choose(db, folders)
        form = _Form(db, days, as_csv)
        out.write(form.header + form.end)
        if listing_id is None or not catalogue_pages.write(db, listing_id, form.line, form.rows, form.end, out):
            for _, text in catalogue_pages.texts_by_hour(form.rows(catalogue_pages.FIRST_US, catalogue_pages.LAST_US),
                                                          form.end):
                out.write(text)
        if not as_csv:
            out.write(speech_total(form.segments, round(form.total_ms / 1000)) + "\n")
    finally:
        db.execute("ROLLBACK")


class _Form:
    """The header, the SQL of each line and the totals of a listing of the chosen folders."""

    def __init__(self, db: sqlite3.Connection, days: DayRange, as_csv: bool):
        self.db = db
        self.listed, self.parameters, (self.first_us, self.last_us) = _listed(days)
        if days.bounded:
            self.segments, self.total_ms, *widest = db.execute(
                "SELECT count(*), coalesce(sum(s.duration_ms), 0), "
                + ", ".join(f"coalesce(max(length({cell})), 0)" for cell in CELLS[:-1])
                + f" FROM segment s JOIN chosen c ON c.folder_id = s.folder_id WHERE {self.listed} "
                "AND s.start_us BETWEEN ? AND ?", (*self.parameters, self.first_us, self.last_us)).fetchone()
        else:  # the manifests' summaries: no pass over the rows
            self.segments, self.total_ms, *widest = db.execute(
                "SELECT coalesce(sum(m.segments), 0), coalesce(sum(m.total_ms), 0), "
                "coalesce(max(m.w_device), 0), coalesce(max(m.w_file), 0), coalesce(max(m.w_start), 0), "
                "coalesce(max(m.w_duration), 0), coalesce(max(m.w_prob_mean), 0), "
                "coalesce(max(m.w_prob_max), 0) FROM chosen c JOIN manifest m ON m.folder_id = c.folder_id"
            ).fetchone()
        if as_csv:
            self.header = ",".join(OFFICE_COLUMNS)
            self.line = " || ',' || ".join([_csv_quoted(CELLS[0]), _csv_quoted(CELLS[1])] + list(CELLS[2:]))
            self.end = "\r\n"
        else:
            widths = [max(len(column), width) for column, width in zip(OFFICE_COLUMNS, widest)]
            self.header = "  ".join([c.ljust(w) for c, w in zip(OFFICE_COLUMNS, widths)] + [OFFICE_COLUMNS[-1]])
            # The last column (yes/no) is never padded: what rstrip() leaves of it.
            self.line = ("rtrim(printf('" + "%!-*s  " * len(widths) + "%s', "
                         + ", ".join(f"{w}, {cell}" for w, cell in zip(widths, CELLS)) + f", {CELLS[-1]}))")
            self.end = "\n"

    def rows(self, first_us: int, last_us: int) -> Iterator[tuple]:
        """(start_us, line) of the listed segments that start from ``first_us`` to ``last_us``, in order."""
        rows = self.db.execute(
            f"SELECT s.start_us, {self.line} FROM segment s JOIN chosen c ON c.folder_id = s.folder_id "
            f"WHERE {self.listed} AND s.start_us BETWEEN ? AND ? ORDER BY s.start_us, c.name, s.seq, c.rank",
            (*self.parameters, max(first_us, self.first_us), min(last_us, self.last_us)))
        while True:
            batch = rows.fetchmany(BATCH)
            if not batch:
                return
            yield from batch


def _listing_key(db: sqlite3.Connection, as_csv: bool) -> str:
    """What a listing's lines depend on besides the rows and widths: the chosen folders, the form."""
    return json.dumps([as_csv, db.execute("SELECT folder_id, name FROM chosen ORDER BY rank").fetchall()])


def day_rows(db: sqlite3.Connection, folders: list, days: DayRange = DayRange()) -> tuple:
    """`edge list --days DIR...`: the rows (device, day, segments, speech) of ``folders``'
    segments that start on ``days``, by day, then device, and the table's last line. A
    manifest whose segments share a day and a device is its summary's line; only the others'
    rows are read."""
    db.execute("BEGIN")
    try:
        _choose(db, folders)
        since, until = (days.since or date.min).isoformat(), (days.until or date.max).isoformat()
        rows = db.execute(
            "WITH part(device, day, segments, total_ms) AS ("
            "SELECT m.day_device, m.day, m.segments, m.total_ms FROM chosen c "
            "JOIN manifest m ON m.folder_id = c.folder_id WHERE m.day_device IS NOT NULL "
            "UNION ALL SELECT coalesce(s.device, c.name), substr(s.start, 1, 10), 1, s.duration_ms FROM chosen c "
            "JOIN manifest m ON m.folder_id = c.folder_id AND m.day_device IS NULL AND m.segments > 0 "
            f"JOIN segment s ON s.id BETWEEN m.id << {LINE_BITS} AND (m.id << {LINE_BITS}) + {(1 << LINE_BITS) - 1} "
            "WHERE s.present AND s.problem IS NULL) "
            "SELECT device, day, sum(segments), sum(total_ms) FROM part WHERE day BETWEEN ? AND ? "
            "GROUP BY day, device ORDER BY day, device", (since, until)).fetchall()
    finally:
        db.execute("ROLLBACK")
    table = [[device, day, str(segments), clock_text(round(ms / 1000))] for device, day, segments, ms in rows]
    return table, speech_total(sum(row[2] for row in rows), round(sum(row[3] for row in rows) / 1000))


def _choose(db: sqlite3.Connection, folders: list) -> None:
    """The chosen folders, in a temporary table; stops, as the plain reader does, at the first
    segment line the office commands cannot use, and warns about the damaged lines before it."""
    db.execute("CREATE TEMP TABLE IF NOT EXISTS chosen(rank INTEGER PRIMARY KEY, folder_id INTEGER, name TEXT)")
    db.execute("CREATE INDEX IF NOT EXISTS temp.chosen_folder ON chosen(folder_id)")
    db.execute("DELETE FROM chosen")
    for rank, folder in enumerate(folders):
        row = db.execute("SELECT id FROM folder WHERE path = ?", (os.path.abspath(folder),)).fetchone()
        if row:
            db.execute("INSERT INTO chosen VALUES (?, ?, ?)", (rank, row[0], Path(folder).name))
    problem = db.execute(
        "SELECT c.rank, m.path, s.problem FROM segment s JOIN chosen c ON c.folder_id = s.folder_id "
        f"JOIN manifest m ON m.id = s.id >> {LINE_BITS} "
        "WHERE s.problem IS NOT NULL AND s.present ORDER BY c.rank, s.seq LIMIT 1").fetchone()
    # The plain reader stops at the problem: it warns about what it read before it.
    _warn_damaged(db, folders, problem[:2] if problem else (len(folders), ""))
    if problem:
        raise EdgeError(os.path.join(folders[problem[0]], problem[2]))


def _listed(days: DayRange) -> tuple:
    """The SQL condition (and its parameters) of the segment rows listed, present, whole and
    on ``days`` by the date the row shows, and the range of start_us (first, last) they are
    found in: a range of the index, wider by a day either way (a UTC offset is less than a
    day). The one range sqlite is given, so that it searches the index by it."""
    if not days.bounded:
        return "s.present AND s.problem IS NULL", (), (catalogue_pages.FIRST_US, catalogue_pages.LAST_US)
    since, until = days.since or date.min, days.until or date.max
    return ("s.present AND s.problem IS NULL AND substr(s.start, 1, 10) BETWEEN ? AND ?",
            (since.isoformat(), until.isoformat()), (_utc_us(since, -1), _utc_us(until, 2)))


def _utc_us(day: date, days_after: int) -> int:
    """Microseconds since the epoch (the start_us scale) at 00:00 UTC ``days_after`` ``day``,
    or the day nearest to that which a date can be."""
    try:
        moment = datetime.combine(day + timedelta(days=days_after), time(), timezone.utc)
    except OverflowError:
        moment = datetime.combine(day, time(), timezone.utc)
    return (moment - EPOCH) // timedelta(microseconds=1)


def _warn_damaged(db: sqlite3.Connection, folders: list, until: tuple) -> None:
    """Warn about the damaged lines of the manifests up to ``until`` (rank, path)."""
    for rank, path, line, expected in db.execute(
            "SELECT c.rank, m.path, d.line, d.expected FROM chosen c JOIN manifest m ON m.folder_id = c.folder_id "
            "JOIN damaged d ON d.manifest_id = m.id WHERE (c.rank, m.path) <= (?, ?) "
            "ORDER BY c.rank, m.path, d.line", until):
        path = os.path.join(folders[rank], path)
        if (path, line) not in _warned:
            _warned.add((path, line))  # as edge.manifest.line_entries does
            logging.getLogger("edge.manifest").warning("%s:%d: skipped, expected %s", path, line, expected)


def _csv_quoted(cell: str) -> str:
    """The SQL of ``cell`` as Python's csv module writes it (quoted when it holds a comma, a
    quote or a line break)."""
    return (f"CASE WHEN instr({cell}, ',') OR instr({cell}, '\"') OR instr({cell}, char(10)) "
            f"OR instr({cell}, char(13)) THEN '\"' || replace({cell}, '\"', '\"\"') || '\"' ELSE {cell} END")
