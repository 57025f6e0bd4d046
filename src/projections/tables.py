"""The read side's tables: tracking positions, projection status, the users table."""

from __future__ import annotations

from typing import Any

import psycopg

from ledger.application import Ledger
from ledger.db import Table
from projections import status as st
from projections import users_table
from projections.users import UsersProjection
from projections.webhooks import endpoints_table, messages_table, retention


def tables(ledger: Ledger, projection: UsersProjection | None = None) -> list[Table]:
    """Every table of the read side, in the order they are created."""
    projection = projection or UsersProjection()
    tracking = st.tracking_recorder(ledger.datastore)

    def create_users(conn: psycopg.Connection[Any]) -> None:
        """A users table that exists is left alone, even if its version
        differs: the projector rebuilds it beside itself."""
        with conn.transaction():
            if users_table.exists(conn, users_table.LIVE_SCHEMA):
                st.ensure_status(conn, projection.name, projection.version)
                return
            users_table.create(conn, users_table.LIVE_SCHEMA, projection)
            st.new_table(conn, projection.name, projection.version)

    return [
        Table(st.TRACKING_TABLE, lambda _: tracking.create_table()),
        Table.of(st.STATUS_TABLE, st.CREATE_STATUS_TABLE),
        Table(users_table.TABLE_NAME, create_users),
        endpoints_table.DEFINITION,
        *messages_table.DEFINITIONS,
        retention.DEFINITION,
    ]
