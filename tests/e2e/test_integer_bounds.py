"""Every integer a client can send, at the edges of the integer types: for each
integer parameter of each route the served OpenAPI document describes (path,
query, and the top-level fields of a JSON body), found from the document itself
so that a new route is covered without editing this test.

A value outside the range the document gives is a 4xx that records nothing; a
value inside it is answered, never with a 5xx (but for the documented 504 of a
`min_position` that the projection has not reached)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.e2e.conftest import Api

EDGES = [-1, 0, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 2, 2**63 - 1, 2**63, 10**30]


@dataclass(frozen=True)
class IntegerParameter:
    method: str
    path: str
    where: str  # "path", "query" or "body"
    name: str
    minimum: int | None
    maximum: int | None
    body: dict[str, Any] | None  # a valid body to put the value in

    @property
    def label(self) -> str:
        return f"{self.method} {self.path} {self.where}:{self.name}"

    def allows(self, value: int) -> bool:
        return (self.minimum is None or value >= self.minimum) and (
            self.maximum is None or value <= self.maximum
        )


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        *_, name = schema["$ref"].split("/")
        schema = document["components"]["schemas"][name]
    return schema


def _integer(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any] | None:
    """The integer schema in `schema` (itself, or one branch of an Optional's anyOf)."""
    schema = _resolve(document, schema)
    if schema.get("type") == "integer":
        return schema
    for branch in schema.get("anyOf", []):
        found = _integer(document, branch)
        if found is not None:
            return found
    return None


def integer_parameters(document: dict[str, Any]) -> list[IntegerParameter]:
    found: list[IntegerParameter] = []
    for path, operations in document["paths"].items():
        for lower_method, operation in operations.items():
            method = lower_method.upper()
            body_schema = (
                operation.get("requestBody", {})
                .get("content", {})
                .get("application/json", {})
                .get("schema")
            )
            body: dict[str, Any] | None = None
            properties: dict[str, Any] = {}
            if body_schema is not None:
                resolved = _resolve(document, body_schema)
                body = dict((resolved.get("examples") or [{}])[0])
                properties = resolved.get("properties", {})
            for parameter in operation.get("parameters", []):
                schema = _integer(document, parameter.get("schema", {}))
                if schema is not None and parameter["in"] in ("path", "query"):
                    found.append(
                        IntegerParameter(
                            method,
                            path,
                            parameter["in"],
                            parameter["name"],
                            schema.get("minimum"),
                            schema.get("maximum"),
                            body,
                        )
                    )
            for name, property_schema in properties.items():
                schema = _integer(document, property_schema)
                if schema is not None:
                    found.append(
                        IntegerParameter(
                            method,
                            path,
                            "body",
                            name,
                            schema.get("minimum"),
                            schema.get("maximum"),
                            body,
                        )
                    )
    return found


@pytest.fixture(scope="module")
def api(serve_ledger: Callable[..., AbstractContextManager[Api]]) -> Iterator[Api]:
    # A short read-your-writes wait: a min_position past the head is a 504 at once.
    with serve_ledger(LEDGER_WAIT_TIMEOUT_SECONDS="0.2") as served:
        yield served


@pytest.fixture(scope="module")
def document(api: Api) -> dict[str, Any]:
    return dict(api.get("/openapi.json", role=None).json())


@pytest.fixture(scope="module")
def known_user(api: Api) -> str:
    user_id = api.registered("bounds")
    for _ in range(3):  # a few events, so that versions have somewhere to land
        api.post(f"/v1/users/{user_id}/credits/grants", {"amount": 1})
    api.current(user_id)
    return user_id


def test_the_document_has_integer_parameters_to_try(document: dict[str, Any]) -> None:
    labels = {p.label for p in integer_parameters(document)}

    assert {
        "GET /v1/users/{user_id}/events query:after_version",
        "GET /v1/users/{user_id}/state query:version",
        "GET /v1/users/{user_id} query:min_position",
        "POST /v1/users/{user_id}/credits/spends body:amount",
    } <= labels


@pytest.mark.parametrize("value", EDGES, ids=str)
def test_every_integer_at_its_edges_gets_no_server_error(
    api: Api, document: dict[str, Any], known_user: str, value: int
) -> None:
    failures = []
    for parameter in integer_parameters(document):
        path = parameter.path.replace("{user_id}", known_user)
        params: dict[str, Any] = {}
        body = dict(parameter.body) if parameter.body is not None else None
        if parameter.where == "path":
            path = path.replace("{" + parameter.name + "}", str(value))
        elif parameter.where == "query":
            params[parameter.name] = value
        else:
            assert body is not None
            body[parameter.name] = value
        before = api.event_count()
        response = api.request(parameter.method, path, params=params, json=body)
        recorded = api.event_count() - before
        status = response.status_code
        timed_out = status == 504 and parameter.name == "min_position"
        if status >= 500 and not timed_out:
            failures.append(f"{parameter.label}={value}: {status} {response.text[:200]}")
        elif not parameter.allows(value) and (status < 400 or recorded):
            failures.append(
                f"{parameter.label}={value} is out of range, yet {status} "
                f"and {recorded} events recorded"
            )

    assert not failures, "\n".join(failures)


def test_past_the_end_of_a_stream_is_the_last_event_or_an_empty_page(
    api: Api, known_user: str
) -> None:
    latest = api.json(api.get(f"/v1/users/{known_user}/state"))
    for version in (2**63 - 2, 2**63 - 1):
        page = api.json(
            api.get(f"/v1/users/{known_user}/events", params={"after_version": version})
        )
        state = api.json(api.get(f"/v1/users/{known_user}/state", params={"version": version}))

        assert page == {"items": [], "next": None}
        assert state == latest
