"""The users projection: what its table holds, and how a user's state becomes a row."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from ledger.domain import UserState

_STATE_FIELDS = frozenset(UserState._fields)

#: The columns of the contract's users table: a User, as the API shows it.
USER_COLUMNS = (
    "id",
    "level",
    "renewal_period",
    "free_credits",
    "free_chat_messages",
    "version",
    "position",
    "updated_at",
)


def _read_schema() -> str:
    """db/schema.sql: shipped in the package as projections/schema.sql (a link
    to it in the source tree, a copy of it in a wheel)."""
    return resources.files("projections").joinpath("schema.sql").read_text(encoding="utf-8")


@dataclass(frozen=True)
class UsersProjection:
    """A version of the users table.

    Every column is a field of `UserState` (the one fold's output) or `position`.
    To add a column derived from history, add it to the DDL and to `columns`;
    fields of the state that the table does not keep (the lifetime totals, in
    the stock table) are not written. Bump `code_version` when the way rows are
    computed changes; an edit of the DDL changes `version` by itself, and
    either makes the projector rebuild the table from history on its next start.
    """

    name: str = "users"
    code_version: int = 1
    schema_sql: str = field(default_factory=_read_schema, repr=False)
    columns: tuple[str, ...] = USER_COLUMNS

    def __post_init__(self) -> None:
        unknown = set(self.columns) - _STATE_FIELDS - {"position"}
        if unknown or self.columns[0] != "id":
            raise ValueError(f"columns must start with id and name state fields: {unknown}")

    @property
    def version(self) -> str:
        digest = hashlib.sha256(self.schema_sql.encode()).hexdigest()[:12]
        return f"{self.code_version}.{digest}"

    def row(self, state: UserState, position: int) -> tuple[Any, ...]:
        return tuple(
            position if column == "position" else getattr(state, column) for column in self.columns
        )

    def state(self, row: Mapping[str, Any]) -> UserState:
        """The state a row records, to fold further events onto. Totals the table
        does not keep start from 0; they are never written back."""
        return UserState(**{k: v for k, v in row.items() if k in _STATE_FIELDS})
