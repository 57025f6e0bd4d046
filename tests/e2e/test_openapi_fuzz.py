"""Schemathesis against the served /openapi.json: requests generated from the
document, valid and invalid, sent with an admin key. No answer may be a server
error, and each must be one the document describes (status, media type, shape).

A ledger of its own, with a short read-your-writes wait, so that a generated
min_position beyond the head is answered 504 in a moment rather than in 5 s."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers import API_KEYS, head

if TYPE_CHECKING:
    from tests.e2e.conftest import Api

EXAMPLES_PER_OPERATION = 25

OPERATIONS = [
    "POST /v1/users",
    "POST /v1/users/{user_id}/credits/grants",
    "POST /v1/users/{user_id}/credits/spends",
    "POST /v1/users/{user_id}/chat-messages/grants",
    "POST /v1/users/{user_id}/chat-messages/spends",
    "PUT /v1/users/{user_id}/plan",
    "GET /v1/users/{user_id}",
    "GET /v1/users/{user_id}/events",
    "GET /v1/users/{user_id}/state",
    "GET /v1/events",
    "GET /v1/audit/users/{user_id}",
    "GET /v1/projections",
    "POST /v1/projections/users/rebuild",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
]

CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture(scope="module")
def api(serve_ledger: Callable[..., AbstractContextManager[Api]]) -> Iterator[Api]:
    with serve_ledger(LEDGER_WAIT_TIMEOUT_SECONDS="0.2") as served:
        yield served


@pytest.fixture(scope="module")
def schema(api: Api) -> Any:
    return schemathesis.openapi.from_url(f"{api.url}/openapi.json")


@pytest.fixture(scope="module")
def known_user(api: Api) -> str:
    """A user that exists, so that generated requests reach more than a 404."""
    return api.registered("fuzzed")


def test_the_document_describes_every_route_of_the_contract(schema: Any) -> None:
    operations = [result.ok().label for result in schema.get_all_operations()]

    assert set(operations) >= set(OPERATIONS)


def a_documented_timeout(api: Api, case: Any, response: Any) -> bool:
    """The 504 of a read-your-writes wait for a position not yet recorded."""
    if response.status_code != 504 or case.operation.label != "GET /v1/users/{user_id}":
        return False
    wanted = (case.query or {}).get("min_position")
    return (
        isinstance(wanted, int)
        and wanted > head(api.database)
        and response.json().get("type") == "projection-timeout"
    )


@pytest.mark.parametrize("label", OPERATIONS)
def test_generated_requests_get_no_server_error_and_a_documented_answer(
    api: Api, schema: Any, known_user: str, label: str
) -> None:
    operation = schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the document"
    strategies = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        strategies.append(operation.as_strategy(generation_mode=mode))
        if "{user_id}" in operation.path:
            strategies.append(
                operation.as_strategy(generation_mode=mode, path_parameters={"user_id": known_user})
            )
    failures: dict[str, str] = {}
    statuses: set[int] = set()

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies))
    def send(case: Any) -> None:
        headers = api.headers("admin")
        if case.headers and "Idempotency-Key" in case.headers and case.method != "GET":
            # Generated keys repeat across unrelated requests; keep them apart.
            headers["Idempotency-Key"] = f"{case.headers['Idempotency-Key']}-{uuid.uuid4().hex}"[
                :255
            ]
        response = case.call(base_url=api.url, headers=headers, timeout=10)
        statuses.add(response.status_code)
        checks = list(CONFORMANCE)
        if not a_documented_timeout(api, case, response):
            checks.append(not_a_server_error)
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except Exception as failure:
            failures.setdefault(str(failure).splitlines()[0], str(failure))

    send()

    assert not failures, "\n\n".join(failures.values())
    assert statuses, "no request was sent"
    assert all(status < 500 or status == 504 for status in statuses), statuses


def test_schemathesis_run_in_every_phase_finds_no_server_error(api: Api) -> None:
    """`schemathesis run` as a user would run it against a served ledger, in
    every phase: the documented examples, coverage (each parameter at and past
    its bounds: 2**63 - 1 and beyond), fuzzing, and stateful chains of calls
    that follow the document's links from a command's answer to the routes
    about the same user."""
    here = Path(__file__).parent
    checks = ",".join(
        [
            "no_server_error_but_a_documented_timeout",
            "status_code_conformance",
            "content_type_conformance",
            "response_headers_conformance",
            "response_schema_conformance",
        ]
    )
    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{api.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {API_KEYS['admin']}",
            "--checks",
            checks,
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            str(EXAMPLES_PER_OPERATION),
            "--seed",
            "1",
            "--request-timeout",
            "10",
        ],
        env={**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks", "PYTHONPATH": str(here)},
        cwd=here,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Stateful" in run.stdout and "API Links" in run.stdout, run.stdout[-3000:]
