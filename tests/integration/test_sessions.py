"""The settings every session of the ledger starts with."""

from __future__ import annotations

import asyncio

from psycopg.conninfo import make_conninfo

from ledger.db import Database


def test_sessions_do_not_compile_statements_unless_the_url_asks(database: Database) -> None:
    with database.connect() as conn:
        assert conn.execute("SHOW jit").fetchone() == ("off",)
    asked = Database(make_conninfo(database.url, options="-c jit=on"))
    with asked.connect() as conn:
        assert conn.execute("SHOW jit").fetchone() == ("on",)

    async def writer_session() -> object:
        conn = await database.connect_async("lock_timeout=5s")
        async with conn:
            cursor = await conn.execute("SHOW jit")
            return await cursor.fetchone()

    assert asyncio.run(writer_session()) == ("off",)
