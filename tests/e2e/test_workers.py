"""`ledger serve --workers N`: several API processes behind one port. A request
reaches any of them, so nothing a client sees may depend on which one answers:
read-your-writes, and the counts in /metrics, are the server's."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ledger.db import Database
from tests.e2e.conftest import Api
from tests.helpers import API_KEYS, ServedLedger

WORKERS = 2
ROUND = 20
#: Sent in rounds until every process has taken commands (bounded).
MOST = 2000
SCRAPES = 12

HEADERS = {"Authorization": f"Bearer {API_KEYS['admin']}"}


def _alone(method: str, url: str, **kwargs: object) -> httpx.Response:
    """A request on a connection of its own, so that any process may take it."""
    with httpx.Client(timeout=30.0, headers=HEADERS) as client:
        return client.request(method, url, **kwargs)  # type: ignore[arg-type]


def _register_and_read_back(url: str) -> None:
    user_id = f"user-{uuid.uuid4().hex[:12]}"
    created = _alone("POST", f"{url}/v1/users", json={"id": user_id})
    assert created.status_code == 201, created.text
    position = created.json()["event"]["position"]
    read = _alone("GET", f"{url}/v1/users/{user_id}", params={"min_position": position})
    assert read.status_code == 200, read.text
    assert read.json()["position"] >= position


def _commands_counted(url: str) -> float:
    response = _alone("GET", f"{url}/metrics")
    assert response.status_code == 200
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "ledger_commands_total"
    )


def _every_process_counted(shared: Path | None, sent: int) -> bool:
    """Each process counts into a file of its own once it has taken a command.
    Where the directory is the server's own, it cannot be looked into: enough
    rounds make it all but certain that every process took some, and the
    scrapes below disagree if any counted alone."""
    if shared is None:
        return sent >= 5 * ROUND
    return len(list(shared.glob("counter_*"))) >= WORKERS


@pytest.mark.parametrize("shared", ["named by the operator", "made by ledger serve"])
def test_several_api_processes_answer_as_one_server(
    database: Database, tmp_path: Path, shared: str
) -> None:
    env = {}
    if shared == "named by the operator":
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    served = ServedLedger(database, env=env, args=["--workers", str(WORKERS)])
    with served:
        api = Api(served)
        try:
            api.wait_until_running()
        finally:
            api.close()
        sent = 0
        with ThreadPoolExecutor(ROUND) as pool:
            while sent < MOST:
                list(pool.map(lambda _: _register_and_read_back(served.url), range(ROUND)))
                sent += ROUND
                if _every_process_counted(tmp_path if env else None, sent):
                    break
        if env:
            assert len(list(tmp_path.glob("counter_*"))) == WORKERS, "one process took all"

        counted = [_commands_counted(served.url) for _ in range(SCRAPES)]

    assert counted == [sent] * SCRAPES
