"""Values written into SQL as literals (ledger.literals) read back as they were,
whatever standard_conforming_strings says."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ledger import literals as sql
from ledger.db import Database

TEXTS = [
    "plain words",
    "it's",
    "a \\backslash\\ and E'\\x41'",
    "'); DROP TABLE ledger_events; --",
    "100% $$ %s {braces}, commas",
    "ünïcödé ✓ 🧾 \u2028",
    "",
]


@pytest.mark.parametrize("conforming", ["on", "off"])
def test_every_literal_reads_back_as_it_was(database: Database, conforming: str) -> None:
    moment = datetime(2026, 12, 4, 21, 0, 0, 123456, tzinfo=UTC)
    digest = bytes(range(32))
    with database.connect() as conn:
        conn.execute(f"SET standard_conforming_strings = {conforming}")
        for value in TEXTS:
            row = conn.execute(f"SELECT {sql.text(value)}").fetchone()
            assert row == (value,)
        row = conn.execute(
            f"SELECT {sql.text(None)}, {sql.integer(-7)}, {sql.integer(None)}, "
            f"{sql.time(moment)}, {sql.time(None)}, {sql.bytea(digest)}"
        ).fetchone()
    assert row == (None, -7, None, moment, None, digest)


def test_a_time_without_its_zone_is_refused() -> None:
    with pytest.raises(ValueError):
        sql.time(datetime(2026, 12, 4))
