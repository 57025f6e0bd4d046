"""SQL for a generation of the users table: the live one, or one being rebuilt."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ledger.domain import UserState
from projections.users import USER_COLUMNS, UsersProjection

LIVE_SCHEMA = "public"
TABLE_NAME = "users"

_DESCRIBE = """
SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type
FROM pg_attribute AS a
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


@dataclass(frozen=True)
class Table:
    """One users table, and the projection's columns it has, with their types."""

    schema: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    projection: UsersProjection

    @property
    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, TABLE_NAME)

    def _columns(self) -> sql.Composable:
        return sql.SQL(", ").join(map(sql.Identifier, self.columns))

    def row(self, state: UserState, position: int) -> tuple[Any, ...]:
        full = dict(zip(self.projection.columns, self.projection.row(state, position), strict=True))
        return tuple(full[column] for column in self.columns)

    # -- reading ------------------------------------------------------------

    def read(
        self, conn: psycopg.Connection[Any], user_ids: Sequence[str]
    ) -> dict[str, tuple[UserState, int]]:
        """The states and positions of those of `user_ids` the table has."""
        query = sql.SQL("SELECT {} FROM {} WHERE id = ANY(%s)").format(self._columns(), self.ident)
        with conn.cursor(row_factory=dict_row) as curs:
            curs.execute(query, (list(user_ids),))
            return {
                row["id"]: (self.projection.state(row), int(row["position"]))
                for row in curs.fetchall()
            }

    def scan(self, conn: psycopg.Connection[Any]) -> Iterable[tuple[UserState, int]]:
        """Every row, in id order, streamed from a server-side cursor."""
        query = sql.SQL("SELECT {} FROM {} ORDER BY id").format(self._columns(), self.ident)
        with conn.cursor(name="users_scan", row_factory=dict_row) as curs:
            curs.itersize = 5000
            curs.execute(query)
            for row in curs:
                yield self.projection.state(row), int(row["position"])

    # -- writing --------------------------------------------------------------

    def upsert(self, conn: psycopg.Connection[Any], rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert or replace rows, all in one statement."""
        if not rows:
            return
        arrays = sql.SQL(", ").join(
            sql.SQL("%s::{}[]").format(sql.SQL(column_type)) for column_type in self.types
        )
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in self.columns[1:]
        )
        query = sql.SQL(
            "INSERT INTO {} ({}) SELECT * FROM unnest({}) ON CONFLICT (id) DO UPDATE SET {}"
        ).format(self.ident, self._columns(), arrays, updates)
        conn.execute(query, [list(column) for column in zip(*rows, strict=True)])

    def copy(self, conn: psycopg.Connection[Any], rows: Iterable[tuple[Any, ...]]) -> None:
        """Bulk-load rows into an empty table."""
        query = sql.SQL("COPY {} ({}) FROM STDIN").format(self.ident, self._columns())
        with conn.cursor() as curs, curs.copy(query) as copy:
            for row in rows:
                copy.write_row(row)


def describe(conn: psycopg.Connection[Any], schema: str, projection: UsersProjection) -> Table:
    """The users table in `schema`, as the catalog says it is today."""
    qualified = sql.Identifier(schema, TABLE_NAME).as_string(conn)
    found = {
        name: column_type for name, column_type in conn.execute(_DESCRIBE, (qualified,)).fetchall()
    }
    columns = tuple(c for c in projection.columns if c in found)
    return Table(schema, columns, tuple(found[c] for c in columns), projection)


def exists(conn: psycopg.Connection[Any], schema: str) -> bool:
    qualified = sql.Identifier(schema, TABLE_NAME).as_string(conn)
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (qualified,)).fetchone()
    return bool(row and row[0])


def create(conn: psycopg.Connection[Any], schema: str, projection: UsersProjection) -> None:
    """Run the projection's DDL with `schema` first on the search path, so the
    unqualified table lands there. Call inside a transaction."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute("SELECT set_config('search_path', %s, true)", (f"{schema}, public",))
    conn.execute(projection.schema_sql.encode())
    conn.execute("SELECT set_config('search_path', 'public', true)")


# -- the API's reads ---------------------------------------------------------

SELECT_USER = f"SELECT {', '.join(USER_COLUMNS)} FROM {LIVE_SCHEMA}.{TABLE_NAME} WHERE id = %s"
