"""The read side's tables: tracking positions, projection status, the users table."""

from __future__ import annotations

from typing import Any

import psycopg

from ledger.application import Ledger
from projections import status as st
from projections import users_table
from projections.users import UsersProjection

#: Every table of the read side.
TABLES = (st.TRACKING_TABLE, st.STATUS_TABLE, users_table.TABLE_NAME)


def create_tables(
    conn: psycopg.Connection[Any], ledger: Ledger, projection: UsersProjection | None = None
) -> None:
    """Create what is missing. A users table that exists is left alone, even if
    its version differs: the projector rebuilds it beside itself."""
    projection = projection or UsersProjection()
    st.tracking_recorder(ledger.datastore).create_table()
    conn.execute(st.CREATE_STATUS_TABLE)
    with conn.transaction():
        if users_table.exists(conn, users_table.LIVE_SCHEMA):
            st.ensure_status(conn, projection.name, projection.version)
            return
        users_table.create(conn, users_table.LIVE_SCHEMA, projection)
        st.new_table(conn, projection.name, projection.version)
