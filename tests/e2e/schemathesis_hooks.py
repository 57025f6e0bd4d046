"""Checks for `schemathesis run` against the served ledger (SCHEMATHESIS_HOOKS)."""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.checks import not_a_server_error


@schemathesis.check
def no_server_error_but_a_documented_timeout(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx, but for the documented 504 of a read-your-writes wait for a
    position the projection has not reached (a generated min_position past the head)."""
    if (
        response.status_code == 504
        and "min_position" in (case.query or {})
        and response.json().get("type") == "projection-timeout"
    ):
        return True
    result: bool | None = not_a_server_error(ctx, response, case)
    return result
