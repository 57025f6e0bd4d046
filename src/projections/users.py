"""The users projection: what its tables hold, and how a user's state becomes rows."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson

from ledger import codec
from ledger.domain import Grant, UserState

#: The User the API shows, and the columns of the contract's users table.
USER_COLUMNS = (
    "id",
    "level",
    "renewal_period",
    "free_credits",
    "free_chat_messages",
    "free_credits_held",
    "free_chat_messages_held",
    "free_credits_next_expiry_at",
    "free_credits_next_expiry_amount",
    "free_chat_messages_next_expiry_at",
    "free_chat_messages_next_expiry_amount",
    "version",
    "position",
    "updated_at",
)

#: Columns of the users table that the User does not show.
TABLE_ONLY_COLUMNS = ("next_due_at", "fold_state")

#: The grants table's columns.
GRANT_COLUMNS = (
    "user_id",
    "id",
    "balance",
    "amount",
    "remaining",
    "held",
    "spent",
    "expired",
    "clawed_back",
    "priority",
    "expires_at",
    "granted_at",
    "source",
    "reason",
    "status",
    "position",
)

_SPECIAL = frozenset({"position", "fold_state"})


def _read_schema() -> str:
    """db/schema.sql: shipped in the package as projections/schema.sql (a link
    to it in the source tree, a copy of it in a wheel)."""
    return resources.files("projections").joinpath("schema.sql").read_text(encoding="utf-8")


@dataclass(frozen=True)
class UsersProjection:
    """A version of the projection's tables.

    Every users column is an attribute of `UserState` (the one fold's output),
    or `position` (of the last event applied), or `fold_state` (the whole
    state, which the projector folds the user's next events onto). To add a
    column derived from history, add it to the DDL and to `columns`; what the
    state holds that the table does not keep (the lifetime totals, in the stock
    table) is not written. Bump `code_version` when the way rows are computed
    changes; an edit of the DDL changes `version` by itself, and either makes
    the projector rebuild the tables from history on its next start.
    """

    name: str = "users"
    code_version: int = 2
    schema_sql: str = field(default_factory=_read_schema, repr=False)
    columns: tuple[str, ...] = USER_COLUMNS + TABLE_ONLY_COLUMNS

    def __post_init__(self) -> None:
        unknown = {c for c in self.columns if c not in _SPECIAL and not hasattr(UserState, c)}
        if unknown or self.columns[0] != "id":
            raise ValueError(f"columns must start with id and name state fields: {unknown}")

    @property
    def version(self) -> str:
        digest = hashlib.sha256(self.schema_sql.encode()).hexdigest()[:12]
        return f"{self.code_version}.{digest}"

    def row(self, state: UserState, position: int) -> tuple[Any, ...]:
        return tuple(self._value(state, column, position) for column in self.columns)

    @staticmethod
    def _value(state: UserState, column: str, position: int) -> Any:
        if column == "position":
            return position
        if column == "fold_state":
            return orjson.dumps(codec.to_dict(state)).decode()
        return getattr(state, column)

    def state(self, row: Mapping[str, Any]) -> UserState | None:
        """The state a row keeps, to fold further events onto; None for a row
        that keeps none (one of a table from before rows kept it, or written
        by hand): its state is then replayed from the history."""
        kept = row.get("fold_state")
        if kept is None:
            return None
        return codec.from_dict(kept if isinstance(kept, dict) else orjson.loads(kept))

    @staticmethod
    def grant_row(user_id: str, grant: Grant, position: int) -> tuple[Any, ...]:
        """A grants row, in GRANT_COLUMNS' order; `position` is of the event
        that touched it (kept only from the one that made it)."""
        return (
            user_id,
            grant.id,
            grant.balance.value,
            grant.amount,
            grant.remaining,
            grant.held,
            grant.spent,
            grant.expired,
            grant.clawed_back,
            grant.priority,
            grant.expires_at,
            grant.granted_at,
            grant.source,
            grant.reason,
            grant.status,
            position,
        )
