"""The CLI's one table helper: what every list printed for a person looks like."""

from __future__ import annotations

from actors.cli.common import table


def test_a_table_aligns_its_columns_and_ends_no_line_in_spaces() -> None:
    rows = [("agent", "refund", "12"), ("supervisor", "-", "3")]
    assert table(rows, header=("KIND", "SERVES", "HANDLED"), right={2}) == [
        "KIND        SERVES  HANDLED",
        "agent       refund       12",
        "supervisor  -             3",
    ]
    assert table([("a", ""), ("bb", "x")]) == ["a", "bb  x"]
    assert table([]) == []
