"""The OpenAPI document, beyond what FastAPI derives from the routes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from api.http.middleware import PROTECTED_PREFIX, STRIPE_WEBHOOK_PATH


def document(app: FastAPI) -> None:
    """The key is checked at the edge, not by a FastAPI dependency: say so in
    the OpenAPI, so that /docs offers to send one; and link each command's
    answer to the routes about its user."""
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key."}
            }
            for path, operations in schema.get("paths", {}).items():
                if path.startswith(PROTECTED_PREFIX) and path != STRIPE_WEBHOOK_PATH:
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
            _link_commands(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


#: Where a command's answer leads (OpenAPI links): every route about the same
#: user, the read-your-writes wait at the event's position, and the state at
#: the user's version.
_USER_PREFIX = "/v1/users/{user_id}"
_FROM_ANSWER = {
    "user_id": "$response.body#/user/id",
    "min_position": "$response.body#/event/position",
    "version": "$response.body#/user/version",
}


def _link_commands(schema: dict[str, Any]) -> None:
    """Document, as OpenAPI links, how the answer of a command on a user leads
    to the other routes about that user (what a client does next, and what a
    stateful test of the API follows)."""
    targets: list[tuple[str, dict[str, Any]]] = []
    for path, operations in schema.get("paths", {}).items():
        if path.startswith(_USER_PREFIX):
            for operation in operations.values():
                names = {p["name"] for p in operation.get("parameters", [])}
                targets.append(
                    (
                        operation["operationId"],
                        {n: _FROM_ANSWER[n] for n in names if n in _FROM_ANSWER},
                    )
                )
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                ref = response.get("content", {}).get("application/json", {}).get("schema", {})
                if status.startswith("2") and ref.get("$ref", "").endswith("/CommandOut"):
                    response["links"] = {
                        target: {"operationId": target, "parameters": parameters}
                        for target, parameters in targets
                    }
