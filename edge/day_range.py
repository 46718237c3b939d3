"""`--since` and `--until`: the days of segments a command is about (`edge list`, `edge export`).

A segment's day is the date of its start on the recorder's clock, as the manifest writes it
(and as `edge list` shows it): a lesson at 23:50 belongs to that day wherever it is read.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import date, datetime
from typing import Optional

from .errors import EdgeError


@dataclass(frozen=True)
class DayRange:
    """Both bounds inclusive; None is open."""

    since: Optional[date] = None
    until: Optional[date] = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "DayRange":
        if args.since and args.until and args.since > args.until:
            raise EdgeError(f"--since {args.since} is after --until {args.until}")
        return cls(args.since, args.until)

    @property
    def bounded(self) -> bool:
        return self.since is not None or self.until is not None

    def __contains__(self, day: date) -> bool:
        return (self.since is None or day >= self.since) and (self.until is None or day <= self.until)

    def holds(self, entry: dict) -> bool:
        """Whether a segment's line starts on a day of the range."""
        return datetime.fromisoformat(entry["start"]).date() in self


def add_day_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=_day, metavar="YYYY-MM-DD",
                        help="only segments that start on or after this day")
    parser.add_argument("--until", type=_day, metavar="YYYY-MM-DD",
                        help="only segments that start on or before this day")


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None
