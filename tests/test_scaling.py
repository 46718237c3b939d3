"""A card's history does not cost the recorder memory: `edge process` into a folder holding a
year of segments runs in the memory it takes beside one day of them (issue 24). Measured as the
proportional set size of a child process; the ratio is bounded, not the megabytes."""

from __future__ import annotations

from bench.scaling import REPO, SPEECH, make_history, measure
from edge.manifest import read_manifest


def test_a_year_of_history_starts_and_records_within_the_memory_of_a_day(tmp_path):
    sizes = {}
    for days in (1, 365):
        card = tmp_path / f"{days}-days"
        stored = make_history(card, days)
        result = measure(REPO, "process", card, str(SPEECH))
        assert result["code"] == 0
        added = [entry for entry in read_manifest(card) if entry["seq"] > stored]
        assert added and min(entry["seq"] for entry in added) == stored + 1  # it recorded, numbering on
        sizes[days] = result["pss_mb"]
    assert sizes[365] <= 1.10 * sizes[1], sizes
