"""The catalogue's pages: the text of `edge list DIR...`'s whole listing, kept an hour of start
times a page, so that listing a fleet's history again costs reading its text rather than
formatting its rows (13 million for a hundred classrooms' year, a gigabyte of text).

A listing is one choice of device folders in one form (table or CSV) and one line format
(the table's column widths). Its pages stay until what they show changes: edge.catalogue
marks the hours of every segment row it inserts, deletes or marks present or gone stale in
every listing, in the transaction that changes the rows, and the next `edge list` of that
listing renders only the stale hours. Another line format (a wider cell) renders them all.
The KEPT listings used last are kept; older ones are dropped with their pages. A page is
kept compressed (zlib's fastest level): a listing's lines repeat most of their characters,
so its text takes a tenth of its size or less on disk. It is decompressed and written in
pieces of PIECE bytes: an hour of a hundred devices is 600 KB of text, and a fresh block of
that size comes from the kernel page by page each time (page faults and zeroing: the whole
listing of a year took three to four times as long).
"""

from __future__ import annotations

import codecs
import sqlite3
import zlib
from typing import Callable, Iterable, Iterator, TextIO

HOUR_US = 3_600_000_000
"""Microseconds of start times a page holds."""
KEPT = 2
"""Listings kept (a fleet's table and its CSV, say)."""
PIECE = 1 << 16
"""Bytes of text decompressed and written at a time."""
FIRST_US, LAST_US = -(1 << 63), (1 << 63) - 1

SCHEMA = """
CREATE TABLE listing(id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, line TEXT NOT NULL, used INTEGER NOT NULL);
CREATE TABLE page(listing_id INTEGER NOT NULL, hour INTEGER NOT NULL, text BLOB, PRIMARY KEY(listing_id, hour));
CREATE INDEX page_stale ON page(listing_id, hour) WHERE text IS NULL;
"""

Rows = Callable[[int, int], Iterable[tuple]]
"""(start_us, line) of the listed rows that start from the first to the second microsecond,
in the listing's order."""


def hour(start_us: int) -> int:
    """The page of a row that starts at ``start_us``."""
    return start_us // HOUR_US


def mark_stale(db: sqlite3.Connection, hours: Iterable[int]) -> None:
    """The pages of ``hours`` rendered again when their listings are next used."""
    db.executemany("INSERT OR REPLACE INTO page(listing_id, hour, text) SELECT id, ?, NULL FROM listing",
                   ((h,) for h in sorted(hours)))


def prepare(db: sqlite3.Connection, key: str, line: str, rows: Rows, end: str) -> int:
    """In a write transaction: the id of the listing ``key`` whose lines are ``line`` (SQL),
    its stale pages (or all, if it is new or its line changed) rendered from ``rows``."""
    used = db.execute("SELECT coalesce(max(used), 0) + 1 FROM listing").fetchone()[0]
    found = db.execute("SELECT id, line FROM listing WHERE key = ?", (key,)).fetchone()
    if found is None:
        listing_id = db.execute("INSERT INTO listing(key, line, used) VALUES (?, ?, ?)", (key, line, used)).lastrowid
    else:
        listing_id = found[0]
        db.execute("UPDATE listing SET line = ?, used = ? WHERE id = ?", (line, used, listing_id))
    for (old,) in db.execute("SELECT id FROM listing ORDER BY used DESC LIMIT -1 OFFSET ?", (KEPT,)).fetchall():
        db.execute("DELETE FROM page WHERE listing_id = ?", (old,))
        db.execute("DELETE FROM listing WHERE id = ?", (old,))
    if found is None or found[1] != line:
        db.execute("DELETE FROM page WHERE listing_id = ?", (listing_id,))
        for page, text in texts_by_hour(rows(FIRST_US, LAST_US), end):
            db.execute("INSERT INTO page VALUES (?, ?, ?)", (listing_id, page, _compressed(text)))
        return listing_id
    for (page,) in db.execute("SELECT hour FROM page WHERE listing_id = ? AND text IS NULL",
                              (listing_id,)).fetchall():
        text = _page(rows, page, end)
        if text:
            db.execute("UPDATE page SET text = ? WHERE listing_id = ? AND hour = ?",
                       (_compressed(text), listing_id, page))
        else:
            db.execute("DELETE FROM page WHERE listing_id = ? AND hour = ?", (listing_id, page))
    return listing_id


def write(db: sqlite3.Connection, listing_id: int, line: str, rows: Rows, end: str, out: TextIO) -> bool:
    """Write the listing's pages to ``out``, a page made stale since `prepare` rendered from
    ``rows``; False (nothing written) if its line is not ``line`` any more."""
    found = db.execute("SELECT line FROM listing WHERE id = ?", (listing_id,)).fetchone()
    if found is None or found[0] != line:
        return False
    for page, text in db.execute("SELECT hour, text FROM page WHERE listing_id = ? ORDER BY hour", (listing_id,)):
        if text is None:
            out.write(_page(rows, page, end))
        else:
            for piece in decompressed(text):
                out.write(piece)
    return True


def decompressed(data: bytes) -> Iterator[str]:
    """A kept page's text, in pieces of PIECE bytes (and the last bytes of a character cut before)."""
    inflate, decoder = zlib.decompressobj(), codecs.getincrementaldecoder("utf-8")()
    while data:
        yield decoder.decode(inflate.decompress(data, PIECE))
        data = inflate.unconsumed_tail
    yield decoder.decode(inflate.flush(), final=True)


def _compressed(text: str) -> bytes:
    return zlib.compress(text.encode(), 1)


def _page(rows: Rows, page: int, end: str) -> str:
    return "".join(text for _, text in texts_by_hour(rows(page * HOUR_US, (page + 1) * HOUR_US - 1), end))


def texts_by_hour(rows: Iterable[tuple], end: str) -> Iterator[tuple]:
    """(hour, text) of each hour of ``rows`` that has any."""
    lines, current = [], None
    for start_us, line in rows:
        page = hour(start_us)
        if page != current and lines:
            yield current, end.join(lines) + end
            lines = []
        current = page
        lines.append(line)
    if lines:
        yield current, end.join(lines) + end
