"""The benchmark's baselines answer a spend as `make bench` sends it: a
baseline that fails every request would be measured as a rate of nothing."""

from __future__ import annotations

import pytest
from bench.baselines import APPS, SPEND_PATH
from bench.processes import API_KEY
from bench.throughput import Workload, prepare_crud, prepare_events
from bench.wrk import Load
from fastapi.testclient import TestClient

from ledger.db import Database

WORKLOAD = Workload("test", "two users", Load(2, "u"), credits=100)


@pytest.mark.parametrize("name", sorted(APPS))
def test_a_baseline_answers_a_spend(name: str, empty_database: Database) -> None:
    database = empty_database
    if name == "eventsourcing":
        prepare_events(database, WORKLOAD)
    else:
        prepare_crud(database, WORKLOAD, with_users=name == "crud")
    app = APPS[name](database, API_KEY)
    with TestClient(app) as client:
        for _ in range(2):
            answer = client.post(
                SPEND_PATH.format(user_id="u00001"),
                json={"amount": 1, "reason": "bench"},
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
            assert answer.status_code == 201, answer.text
    if name in ("eventsourcing", "crud"):
        assert answer.json()["free_credits"] == 10 + WORKLOAD.credits - 2
