"""The hash chain, as an auditor uses it: `ledger verify` finds every event
chained as it was recorded, and names the first position where anything was
changed, removed or inserted behind the ledger's back."""

from __future__ import annotations

import json
import subprocess

import pytest

from api.cli.generate import old_registration
from ledger import chain
from ledger.application import Ledger
from ledger.commands import GrantCredits, PlaceHold, RegisterUser, SpendCredits
from ledger.db import Database
from ledger.domain import Balance, Cause
from tests.helpers import BackgroundWriter, ledger_process, rows

CAUSE = Cause("admin", "key_chain", "req_chain", None)


def verify(database: Database, *args: str) -> subprocess.CompletedProcess[str]:
    process = ledger_process(
        "verify", *args, database=database, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out.decode(), err.decode())


def verdict(database: Database, *args: str) -> dict[str, object]:
    done = verify(database, "--json", *args)
    found: dict[str, object] = json.loads(done.stdout)
    assert done.returncode == (0 if found["intact"] else 1), done
    return found


@pytest.fixture
def history(database: Database, writer: BackgroundWriter) -> list[int]:
    """Three users' events, recorded through the writer: their positions. A
    position is left unused between the third and the fourth (as a batch
    rolled back leaves one)."""
    for user_id in ("ann", "bob", "cy"):
        writer.execute(RegisterUser(user_id), CAUSE)
    rows(database, "SELECT nextval(pg_get_serial_sequence('ledger_events', 'notification_id'))")
    writer.execute_together(
        [
            (GrantCredits("ann", 5, "promo"), CAUSE),
            (SpendCredits("bob", 2, "image"), CAUSE),
            (PlaceHold("cy", Balance.CREDITS, 3, "hold_c1", "reply", 60), CAUSE),
            (SpendCredits("ann", 1), CAUSE),
        ]
    )
    return [
        int(p) for (p,) in rows(database, "SELECT notification_id FROM ledger_events ORDER BY 1")
    ]


def test_every_event_the_writer_records_is_chained_in_its_transaction(
    database: Database, history: list[int]
) -> None:
    links = rows(database, "SELECT position FROM ledger_chain ORDER BY position")
    assert [p for (p,) in links] == history

    done = verify(database)

    assert done.returncode == 0, done.stderr
    assert f"chain intact up to position {history[-1]}" in done.stderr + done.stdout


def test_the_chain_is_the_documented_layout(database: Database, history: list[int]) -> None:
    previous = chain.GENESIS
    for position, user_id, version, topic, state, kept in rows(
        database,
        "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state, "
        "c.hash FROM ledger_events e JOIN ledger_chain c ON c.position = e.notification_id "
        "ORDER BY 1",
    ):
        previous = chain.link(previous, position, user_id, version, topic, bytes(state))
        assert previous == bytes(kept)


@pytest.mark.parametrize(
    ("tampering", "at"),
    [
        (
            "UPDATE ledger_events SET state = convert_to(replace(convert_from(state, 'UTF8'), "
            "'\"amount\":2', '\"amount\":1'), 'UTF8') WHERE notification_id = {p[5]}",
            5,
        ),
        (
            "UPDATE ledger_events SET state = convert_to(replace(convert_from(state, 'UTF8'), "
            "'key_chain', 'key_other'), 'UTF8') WHERE notification_id = {p[3]}",
            3,
        ),
        ("DELETE FROM ledger_events WHERE notification_id = {p[2]}", 2),
        (
            # Into the unused position between the third event and the fourth.
            "INSERT INTO ledger_events (notification_id, originator_id, originator_version, "
            "topic, state) SELECT {p[3]} + 1, originator_id, 99, topic, state "
            "FROM ledger_events WHERE notification_id = {p[5]}",
            "hole",
        ),
        (
            "UPDATE ledger_events SET notification_id = -1 WHERE notification_id = {p[5]}; "
            "UPDATE ledger_events SET notification_id = {p[5]} WHERE notification_id = {p[6]}; "
            "UPDATE ledger_events SET notification_id = {p[6]} WHERE notification_id = -1",
            5,
        ),
    ],
    ids=[
        "data changed",
        "metadata changed",
        "an event removed",
        "a forged event inserted",
        "two events swapped",
    ],
)
def test_tampering_by_sql_is_named_at_its_first_position(
    database: Database, history: list[int], tampering: str, at: int | str
) -> None:
    positions = dict(enumerate(history, start=1))
    for statement in tampering.format(p=positions).split("; "):
        rows(database, statement)

    found = verdict(database)

    expected = positions[3] + 1 if at == "hole" else positions[int(at)]
    assert (found["intact"], found["broken_at"]) == (False, expected), found
    assert found["reason"]


def test_a_stream_removed_is_seen_where_its_first_event_was(
    database: Database, history: list[int]
) -> None:
    bobs = [
        p
        for (p,) in rows(
            database,
            "SELECT notification_id FROM ledger_events WHERE originator_id = 'bob' ORDER BY 1",
        )
    ]
    rows(database, "DELETE FROM ledger_events WHERE originator_id = 'bob'")

    found = verdict(database)

    assert (found["intact"], found["broken_at"]) == (False, bobs[0])
    assert "removed" in str(found["reason"])


def test_a_witnessed_head_is_checked_and_a_rewritten_tail_is_seen(
    database: Database, history: list[int]
) -> None:
    head = verdict(database)
    witness = f"{head['hash']}@{head['position']}"
    assert verdict(database, "--expect", witness)["intact"] is True

    # Remove the last event and its link together: only the witness can tell.
    last = history[-1]
    rows(database, "DELETE FROM ledger_chain WHERE position = %s", (last,))
    rows(database, "DELETE FROM ledger_events WHERE notification_id = %s", (last,))
    assert verdict(database)["intact"] is True

    found = verdict(database, "--expect", witness)

    assert (found["intact"], found["broken_at"]) == (False, last)


def test_from_a_position_only_what_follows_is_walked(
    database: Database, history: list[int]
) -> None:
    found = verdict(database, "--from", str(history[2]))
    assert found["intact"] is True and found["checked"] == len(history) - 3


def test_a_history_recorded_without_links_is_sealed_once_in_order(
    database: Database, ledger: Ledger, writer: BackgroundWriter, history: list[int]
) -> None:
    # The library's own insert (as `ledger generate` records old-shape
    # registrations) writes no link.
    ledger.recorder.insert_events([old_registration(f"old{i}", "pro", "monthly") for i in range(5)])
    rows(database, "SELECT 1")
    unsealed = verdict(database)
    assert unsealed["intact"] is True and unsealed["unchained"] == 5

    # The next batch of the writer chains a short stretch before its own events.
    writer.execute(SpendCredits("ann", 1), CAUSE)
    assert verdict(database)["unchained"] == 0

    ledger.recorder.insert_events(
        [old_registration(f"older{i}", "pro", "monthly") for i in range(3)]
    )
    sealed = verify(database, "--seal")
    assert sealed.returncode == 0 and "Sealed 3 events" in sealed.stderr + sealed.stdout
    assert verdict(database)["unchained"] == 0
