"""`ledger import`: users of an existing CRUD table as opening events."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ledger.application import Ledger
from ledger.db import Database
from projections.log import EventLog
from tests.helpers import head, ledger_process, project_once, rows


def run_import(database: Database, *args: str) -> subprocess.CompletedProcess[str]:
    process = ledger_process(
        "import", *args, database=database, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out.decode(), err.decode())


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def ten_thousand_rows(path: Path, bad: dict[int, str]) -> Path:
    """A CRUD export in the seed's column names; `bad` replaces some data rows
    (by index from 0) with broken ones."""
    lines = ["id,level,renewalPeriod,freeCredits,freeChatMessages"]
    for i in range(10_000):
        level, period = [
            ("free", ""),
            ("basic", "monthly"),
            ("pro", "monthly"),
            ("paid", "lifetime"),
        ][i % 4]
        credits = "" if i % 10 == 0 else str(i % 50)
        lines.append(bad.get(i, f"legacy{i:05d},{level},{period},{credits},{i % 20}"))
    return write_csv(path, lines)


BAD_ROWS = {
    17: "legacy00017,gold,,5,5",  # unknown level
    256: "legacy00256,free,,-3,5",  # negative balance
    4000: "legacy04000,free,,abc,5",  # not a number
    9998: "bad id!,free,,1,1",  # an id the ledger cannot take
    9999: "legacy00001,free,,1,1",  # a duplicate of line 3
}


def test_a_file_with_bad_rows_imports_nothing_and_names_each(
    database: Database, tmp_path: Path
) -> None:
    path = ten_thousand_rows(tmp_path / "users.csv", BAD_ROWS)
    result = run_import(database, str(path))
    assert result.returncode == 1
    for index in BAD_ROWS:
        assert f"line {index + 2}:" in result.stderr  # the header is line 1
    assert "level must be one of" in result.stderr
    assert "duplicate id 'legacy00001' (first on line 3)" in result.stderr
    assert head(database) == 0


def test_skip_bad_imports_the_good_rows_and_reimporting_adds_nothing(
    log: EventLog, database: Database, ledger: Ledger, tmp_path: Path
) -> None:
    path = ten_thousand_rows(tmp_path / "users.csv", BAD_ROWS)
    first = run_import(database, "--skip-bad", str(path))
    assert first.returncode == 0, first.stderr
    assert "Imported 9,995 users" in first.stdout
    assert head(database) == 9_995

    again = run_import(database, "--skip-bad", str(path))
    assert again.returncode == 0
    assert "Imported 0 users; 9,995 were already there" in again.stdout
    assert head(database) == 9_995

    (event,) = [r.event for r in log.user_events("legacy00010")]
    assert (event.level, event.renewal_period) == ("pro", "monthly")
    assert event.free_credits is None  # an empty cell is NULL
    assert event.free_chat_messages == 10
    assert event.cause == {
        "actor_role": "import",
        "actor_key_id": None,
        "request_id": event.cause["request_id"],
        "idempotency_key": None,
    }


def test_json_lines_and_the_ledgers_own_column_names(
    log: EventLog, database: Database, ledger: Ledger, tmp_path: Path
) -> None:
    path = tmp_path / "users.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "id": "a",
                    "level": "paid",
                    "renewal_period": "lifetime",
                    "free_credits": 3,
                    "free_chat_messages": None,
                },
                {"id": "b", "level": "free", "freeCredits": 0, "freeChatMessages": 20},
            ]
        )
    )
    result = run_import(database, str(path))
    assert result.returncode == 0, result.stderr
    assert [r.event.free_credits for r in log.user_events("a")] == [3]
    assert [r.event.free_chat_messages for r in log.user_events("a")] == [None]
    assert [r.event.level for r in log.user_events("b")] == ["free"]


def test_bad_json_lines_are_named(database: Database, tmp_path: Path) -> None:
    path = tmp_path / "users.jsonl"
    path.write_text(
        '{"id": "a", "level": "free"}\n'
        "{not json\n"
        '{"id": "c", "level": "free", "free_credits": 1.5}\n'
        '{"id": "d", "level": "free", "free_credits": true}\n'
        '["a list"]\n'
    )
    result = run_import(database, str(path))
    assert result.returncode == 1
    assert "line 2: not valid JSON" in result.stderr
    assert "line 3: free_credits must be an integer" in result.stderr
    assert "line 4: free_credits must be an integer" in result.stderr
    assert "line 5: not a JSON object" in result.stderr
    assert head(database) == 0


def test_imported_users_reach_the_users_table_as_they_were(
    database: Database, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "u.csv",
        ["id,level,renewal_period,free_credits,free_chat_messages", "old,basic,monthly,,"],
    )
    assert run_import(database, str(path)).returncode == 0
    project_once(database)
    assert rows(
        database,
        "SELECT level, renewal_period, free_credits, free_chat_messages "
        "FROM users WHERE id = 'old'",
    ) == [("basic", "monthly", None, None)]


def test_a_header_without_the_required_columns_is_refused(
    database: Database, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "u.csv", ["user,credits", "a,1"])
    result = run_import(database, str(path))
    assert result.returncode == 1
    assert "line 1: the header has no column id, level" in result.stderr


def test_rows_that_are_not_utf8_are_named_and_the_rest_can_be_imported(
    database: Database, tmp_path: Path
) -> None:
    csv_path = tmp_path / "u.csv"
    csv_path.write_bytes(
        b"id,level,renewal_period,free_credits,free_chat_messages\n"
        b"c1,free,,1,2\n"
        b"\xff\xfe,free,,1,2\n"
        b"c3,pro,monthly,,\n"
    )
    lines_path = tmp_path / "u.jsonl"
    lines_path.write_bytes(b'{"id": "j1", "level": "free"}\n{"id": "j\xe9", "level": "free"}\n')

    refused = run_import(database, str(csv_path))
    skipped = run_import(database, "--skip-bad", str(csv_path))
    json_lines = run_import(database, str(lines_path))

    assert refused.returncode == 1
    assert "line 3: not UTF-8 text" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert skipped.returncode == 0, skipped.stderr
    assert "Imported 2 users" in skipped.stdout
    assert json_lines.returncode == 1
    assert "line 2: not UTF-8 text" in json_lines.stderr
    assert head(database) == 2


def test_a_header_that_is_not_utf8_is_named_alone(database: Database, tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_bytes(b"id,level,Bemerkung f\xfcr\nc1,free,x\nc2,free,y\n")

    result = run_import(database, "--skip-bad", str(path))

    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == "line 1: the header is not UTF-8 text"
    assert "line 2" not in result.stderr
    assert head(database) == 0


def test_an_empty_file_is_refused(database: Database, tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_bytes(b"")

    result = run_import(database, str(path))

    assert result.returncode == 1
    assert "line 1: the file is empty" in result.stderr
