"""The sealer: chains events that were recorded without their link (a history
from before the chain; the library's own insert) into the hash chain, in
position order, a batch at a time under the events table's lock, so that
commands go on meanwhile. One is active per database, beside the projector."""

from __future__ import annotations

from typing import Any

import psycopg

from ledger import chain
from ledger.application import Ledger
from ledger.db import Database, advisory_key
from projections.follower import Follower

#: Events chained per transaction (the lock held for that long, tens of milliseconds).
BATCH = 10_000


class ChainSealer(Follower):
    def __init__(self, database: Database, ledger: Ledger, *, poll_interval: float = 1.0) -> None:
        super().__init__(
            database,
            name="chain sealer",
            lock_key=advisory_key("ledger:chain:sealer"),
            poll_interval=poll_interval,
        )
        self.lock_statements = ledger.lock_statements
        self.sealed = 0

    def work(self, conn: psycopg.Connection[Any]) -> bool:
        chained = chain.seal(conn, self.lock_statements, BATCH)
        self.sealed += chained
        return chained == BATCH
