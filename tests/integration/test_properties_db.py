"""For any sequence of commands, through the writer and the projector on real
PostgreSQL: the projected row equals a replay of the history, matches the rules,
and no bound is ever broken."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.application import Ledger
from ledger.commands import Command
from ledger.db import Database
from ledger.domain import MAX_BALANCE
from ledger.errors import LedgerError
from projections.projector import Projector
from tests.helpers import BackgroundWriter, audit, rows, wait_caught_up
from tests.unit.test_properties import (
    CAUSE,
    USERS,
    Model,
    apply_to_model,
    commands,
    expected_refusal,
)


@pytest.fixture
def projector(ledger: Ledger, database: Database) -> Iterator[Projector]:
    projector = Projector(database, ledger, batch_size=7, poll_interval=0.05)
    projector.start()
    yield projector
    projector.stop()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=st.lists(commands, min_size=1, max_size=30))
def test_the_projection_equals_the_replay_for_any_commands(
    database: Database,
    ledger: Ledger,
    writer: BackgroundWriter,
    projector: Projector,
    sequence: list[Command],
) -> None:
    prefix = uuid.uuid4().hex[:8] + "_"  # each example has users of its own
    sequence = [dataclasses.replace(c, user_id=prefix + c.user_id) for c in sequence]
    # Submitted together, so they are decided in batches, in arrival order.
    futures = [writer.submit(command, CAUSE.cause) for command in sequence]
    models: dict[str, Model] = {}
    for command, future in zip(sequence, futures, strict=True):
        expected = expected_refusal(models.get(command.user_id), command)
        try:
            accepted = future.result(30)
        except LedgerError as refusal:
            assert type(refusal) is expected, (command, refusal)
            continue
        assert expected is None, (command, "was accepted")
        apply_to_model(models, command)
        for name in ("free_credits", "free_chat_messages"):
            value = accepted.user[name]
            assert value is None or 0 <= value <= MAX_BALANCE

    wait_caught_up(database)
    for uid in (prefix + u for u in USERS):
        result = audit(database, ledger, uid)
        if uid not in models:
            assert result is None
            continue
        assert result is not None and result.consistent, result
        assert result.projected is not None
        model = models[uid]
        projected = result.projected
        assert (projected["free_credits"], projected["free_chat_messages"]) == (
            model.credits,
            model.chat,
        )
        assert (projected["level"], projected["renewal_period"]) == (model.level, model.renewal)
        assert projected["version"] == model.events
    negative = rows(
        database, "SELECT count(*) FROM users WHERE free_credits < 0 OR free_chat_messages < 0"
    )
    assert negative == [(0,)]
