"""Path and query parameters several routers share, bounded where they are
parsed (every integer that reaches SQL fits a bigint)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path, Query

from ledger.domain import USER_ID_PATTERN

UserIdPath = Annotated[
    str,
    Path(
        pattern=USER_ID_PATTERN,
        max_length=64,
        description="1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-'.",
        examples=["user_42"],
    ),
]
#: A balance as a path names it.
BalancePath = Annotated[
    Literal["credits", "chat-messages"], Path(description="`credits` or `chat-messages`.")
]
Limit = Annotated[int, Query(ge=1, le=1000, description="1 to 1000.")]
#: Positions and versions are PostgreSQL bigints.
MAX_POSITION = 2**63 - 1
MinPosition = Annotated[
    int | None,
    Query(ge=0, le=MAX_POSITION, description="Wait until the projection has applied this."),
]
#: A cursor naming a hold or a grant: what the previous page's `next` said.
After = Annotated[str | None, Query(max_length=64, description="The previous page's `next`.")]
