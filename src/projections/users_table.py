"""SQL for a generation of the projection's tables (users, and their grants):
the live one, or one being rebuilt."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads

from ledger.domain import Grant, UserState
from projections.users import GRANT_COLUMNS, USER_COLUMNS, UsersProjection

#: A user's state and position, replayed from history up to a position.
Replay = Callable[[str, int], tuple[UserState, int] | None]

LIVE_SCHEMA = "public"
TABLE_NAME = "users"
GRANTS_TABLE = "grants"
#: Every table of the projection, rebuilt and swapped in together.
TABLE_NAMES = (TABLE_NAME, GRANTS_TABLE)

_DESCRIBE = """
SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type
FROM pg_attribute AS a
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


@dataclass(frozen=True)
class Columns:
    """One table, and those of the projection's columns it has, with their
    types. `kept` columns are written when a row is made, never changed."""

    schema: str
    name: str
    key: tuple[str, ...]
    columns: tuple[str, ...]
    types: tuple[str, ...]
    kept: tuple[str, ...] = ()

    @property
    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)

    def listed(self) -> sql.Composable:
        return sql.SQL(", ").join(map(sql.Identifier, self.columns))

    def upsert(self, conn: psycopg.Connection[Any], rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert or replace rows, all in one statement."""
        if not rows:
            return
        arrays = sql.SQL(", ").join(
            sql.SQL("%b::{}[]").format(sql.SQL(column_type)) for column_type in self.types
        )
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
            for c in self.columns
            if c not in self.key and c not in self.kept
        )
        query = sql.SQL(
            "INSERT INTO {} ({}) SELECT * FROM unnest({}) ON CONFLICT ({}) DO UPDATE SET {}"
        ).format(
            self.ident,
            self.listed(),
            arrays,
            sql.SQL(", ").join(map(sql.Identifier, self.key)),
            updates,
        )
        conn.execute(query, [list(column) for column in zip(*rows, strict=True)])

    def copy_query(self) -> sql.Composed:
        return sql.SQL("COPY {} ({}) FROM STDIN").format(self.ident, self.listed())

    def copy(self, conn: psycopg.Connection[Any], rows: Iterable[tuple[Any, ...]]) -> None:
        """Bulk-load rows into the table."""
        with conn.cursor() as curs, curs.copy(self.copy_query()) as copy:
            for row in rows:
                copy.write_row(row)

    def scan(self, conn: psycopg.Connection[Any]) -> Iterable[dict[str, Any]]:
        """Every row, in key order, streamed from a server-side cursor."""
        query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
            self.listed(), self.ident, sql.SQL(", ").join(map(sql.Identifier, self.key))
        )
        with conn.cursor(name=f"{self.name}_scan", row_factory=dict_row) as curs:
            curs.itersize = 5000
            curs.execute(query)
            yield from curs

    def pick(self, full: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(full[column] for column in self.columns)


@dataclass(frozen=True)
class Table:
    """A generation of the projection: its users table, and its grants table
    (None in a generation from before grants were projected)."""

    users: Columns
    grants: Columns | None
    projection: UsersProjection

    @property
    def schema(self) -> str:
        return self.users.schema

    @property
    def ident(self) -> sql.Composable:
        return self.users.ident

    @property
    def columns(self) -> tuple[str, ...]:
        return self.users.columns

    def row(self, state: UserState, position: int) -> tuple[Any, ...]:
        return self.users.pick(
            dict(zip(self.projection.columns, self.projection.row(state, position), strict=True))
        )

    def grant_row(self, user_id: str, grant: Grant, position: int) -> tuple[Any, ...]:
        assert self.grants is not None
        values = self.projection.grant_row(user_id, grant, position)
        return self.grants.pick(dict(zip(GRANT_COLUMNS, values, strict=True)))

    # -- reading ------------------------------------------------------------

    def read(
        self, conn: psycopg.Connection[Any], user_ids: Sequence[str], replay: Replay
    ) -> dict[str, tuple[UserState, int]]:
        """The states and positions of those of `user_ids` the table has; of a
        row that keeps no state, as `replay` gives it at the row's position."""
        found: dict[str, tuple[UserState, int]] = {}
        for user_id, row in self.read_rows(conn, user_ids).items():
            position = int(row["position"])
            state = self.projection.state(row)
            if state is not None:
                found[user_id] = (state, position)
            elif (replayed := replay(user_id, position)) is not None:
                found[user_id] = replayed
        return found

    def read_rows(
        self, conn: psycopg.Connection[Any], user_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """The rows of those of `user_ids` the table has, as read."""
        query = sql.SQL("SELECT {} FROM {} WHERE id = ANY(%s)").format(
            self.users.listed(), self.ident
        )
        with conn.cursor(row_factory=dict_row) as curs:
            # The states kept were written by orjson: read them with it too
            # (the projector reads one per user it applies events to).
            set_json_loads(orjson.loads, curs)
            curs.execute(query, (list(user_ids),))
            return {row["id"]: dict(row) for row in curs.fetchall()}

    def scan(self, conn: psycopg.Connection[Any]) -> Iterable[tuple[UserState, int]]:
        """Every user of a table this release wrote (each row keeps its
        state), in id order, streamed."""
        for row in self.users.scan(conn):
            state = self.projection.state(row)
            if state is None:
                raise ValueError(f"the row of {row['id']!r} keeps no state")
            yield state, int(row["position"])

    # -- writing --------------------------------------------------------------

    def upsert(self, conn: psycopg.Connection[Any], rows: Sequence[tuple[Any, ...]]) -> None:
        self.users.upsert(conn, rows)

    def upsert_grants(self, conn: psycopg.Connection[Any], rows: Sequence[tuple[Any, ...]]) -> None:
        if self.grants is not None:
            self.grants.upsert(conn, rows)

    def copy(self, conn: psycopg.Connection[Any], rows: Iterable[tuple[Any, ...]]) -> None:
        self.users.copy(conn, rows)


def _columns_of(
    conn: psycopg.Connection[Any], schema: str, name: str, wanted: Sequence[str], **options: Any
) -> Columns | None:
    qualified = sql.Identifier(schema, name).as_string(conn)
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (qualified,)).fetchone()
    if not (row and row[0]):
        return None
    found = dict(conn.execute(_DESCRIBE, (qualified,)).fetchall())
    columns = tuple(c for c in wanted if c in found)
    return Columns(schema, name, columns=columns, types=tuple(found[c] for c in columns), **options)


def describe(conn: psycopg.Connection[Any], schema: str, projection: UsersProjection) -> Table:
    """The projection's tables in `schema`, as the catalog says they are today."""
    users = _columns_of(conn, schema, TABLE_NAME, projection.columns, key=("id",))
    if users is None:
        raise psycopg.errors.UndefinedTable(f"{schema}.{TABLE_NAME} does not exist")
    grants = _columns_of(
        conn, schema, GRANTS_TABLE, GRANT_COLUMNS, key=("user_id", "id"), kept=("position",)
    )
    return Table(users, grants, projection)


def exists(conn: psycopg.Connection[Any], schema: str) -> bool:
    qualified = sql.Identifier(schema, TABLE_NAME).as_string(conn)
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (qualified,)).fetchone()
    return bool(row and row[0])


def create(conn: psycopg.Connection[Any], schema: str, projection: UsersProjection) -> None:
    """Run the projection's DDL with `schema` first on the search path, so the
    unqualified tables land there. Call inside a transaction."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute("SELECT set_config('search_path', %s, true)", (f"{schema}, public",))
    conn.execute(projection.schema_sql.encode())
    conn.execute("SELECT set_config('search_path', 'public', true)")


# -- the API's reads ---------------------------------------------------------

SELECT_USER = f"SELECT {', '.join(USER_COLUMNS)} FROM {LIVE_SCHEMA}.{TABLE_NAME} WHERE id = %s"

#: The columns the users table had before the held and next-expiry ones: what
#: a live table of the previous release has, until the rebuild that follows an
#: upgrade swaps the new one in.
PREVIOUS_COLUMNS = (
    "id",
    "level",
    "renewal_period",
    "free_credits",
    "free_chat_messages",
    "version",
    "position",
    "updated_at",
)
SELECT_USER_BEFORE = (
    f"SELECT {', '.join(PREVIOUS_COLUMNS)} FROM {LIVE_SCHEMA}.{TABLE_NAME} WHERE id = %s"
)

#: Which grants have a status, as a read at %(now)s sees them (active past
#: its expiry is expired, whether or not its expiry is recorded yet).
_HAVING_STATUS = {
    None: "TRUE",
    "active": "status = 'active' AND (expires_at IS NULL OR expires_at > %(now)s)",
    "expired": "(status = 'expired' OR (status = 'active' AND expires_at <= %(now)s))",
    "used": "status = 'used'",
}


def select_grants(status: str | None) -> str:
    """A user's grants (%(user_id)s) with `status`, made after the grant
    (%(after_position)s, %(after_id)s), oldest first, at most %(limit)s."""
    return (
        f"SELECT {', '.join(GRANT_COLUMNS)} FROM {LIVE_SCHEMA}.{GRANTS_TABLE} "
        "WHERE user_id = %(user_id)s AND (position, id) > (%(after_position)s, %(after_id)s) "
        f"AND {_HAVING_STATUS[status]} ORDER BY position, id LIMIT %(limit)s"
    )


SELECT_GRANT_POSITION = (
    f"SELECT position FROM {LIVE_SCHEMA}.{GRANTS_TABLE} WHERE user_id = %s AND id = %s"
)


#: A user's whole state, as the projection last folded it.
SELECT_STATE = f"SELECT fold_state, position FROM {LIVE_SCHEMA}.{TABLE_NAME} WHERE id = %s"
