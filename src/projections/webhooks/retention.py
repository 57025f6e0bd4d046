"""How long delivered and failed messages are kept, and what the metrics still
count of those that are gone.

A message that has succeeded or failed, about an event older than the
retention (LEDGER_WEBHOOKS_RETENTION_DAYS), is deleted with its attempts, a
bounded batch per statement, by the active outbox when it is idle. A pending
message is never deleted. `ledger_webhook_totals` keeps how many of each
status were deleted, in the same statement as the deletes, so that the
metrics (kept rows plus these) never go down because rows were pruned."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from ledger.db import Table
from projections.webhooks import messages_table

TABLE = "ledger_webhook_totals"
PRUNED_STATUSES = ("succeeded", "failed")

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    status  text   PRIMARY KEY CHECK (status IN {PRUNED_STATUSES}),
    pruned  bigint NOT NULL DEFAULT 0
)
"""

DEFINITION = Table.of(TABLE, CREATE_TABLE)

#: Deletes up to %(limit)s messages done (succeeded or failed) about events
#: before %(before)s, oldest first, with their attempts (ON DELETE CASCADE),
#: and adds them to the totals; how many. Rows locked by another transaction
#: (a retry by hand) are skipped, and a row that transaction made pending
#: again fails the DELETE's own status check once its lock is released
#: (READ COMMITTED re-checks it).
#: https://www.postgresql.org/docs/current/transaction-iso.html#XACT-READ-COMMITTED
PRUNE = f"""
WITH gone AS (
    DELETE FROM {messages_table.TABLE} AS m
    WHERE m.id = ANY(ARRAY(
        SELECT o.id FROM {messages_table.TABLE} AS o
        WHERE o.status <> 'pending' AND o.event_at < %(before)s
        ORDER BY o.event_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    )) AND m.status <> 'pending'
    RETURNING m.status
), counted AS (
    SELECT status, count(*) AS n FROM gone GROUP BY status
), added AS (
    INSERT INTO {TABLE} (status, pruned) SELECT status, n FROM counted
    ON CONFLICT (status) DO UPDATE SET pruned = {TABLE}.pruned + EXCLUDED.pruned
)
SELECT COALESCE(sum(n), 0) FROM counted
"""

#: For the metrics: messages by status, those pruned included.
COUNTS = f"""
SELECT status, sum(n) FROM (
    SELECT status, count(*) AS n FROM {messages_table.TABLE} GROUP BY status
    UNION ALL SELECT status, pruned FROM {TABLE}
) AS kept_and_pruned GROUP BY status
"""


def prune(conn: psycopg.Connection[Any], before: datetime, limit: int = 1000) -> int:
    """Delete one batch of the messages done before `before`, in a transaction
    of its own; how many (fewer than `limit`: none is left)."""
    with conn.transaction():
        row = conn.execute(PRUNE, {"before": before, "limit": limit}).fetchone()
    return int(row[0]) if row else 0
