"""Every statement on the webhook messages and their attempts, in one place.

- `ledger_webhook_messages`: one row per (endpoint, event, message type), its
  id the `webhook-id` every attempt sends, its body the exact bytes signed.
  Written by the outbox in the same transaction as its tracking position;
  `status` is `pending` until an attempt succeeds (`succeeded`) or the retry
  schedule runs out (`failed`). A sender claims a message by leasing it
  (`lease_owner`, `lease_until`): while the lease runs no other sender takes
  it, and a sender that dies leaves it to be taken again when it ends.
- `ledger_webhook_attempts`: every attempt, with its HTTP status or error and
  how long it took.

Done messages (succeeded or failed) are deleted after a while with their
attempts (projections.webhooks.retention); pending ones are kept.
"""

from __future__ import annotations

from typing import Any

from ledger.db import Table, advisory_key
from ledger.times import timestamp
from projections.webhooks import endpoints_table

TABLE = "ledger_webhook_messages"
ATTEMPTS = "ledger_webhook_attempts"
STATUSES = ("pending", "succeeded", "failed")

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id               text        PRIMARY KEY,
    seq              bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    endpoint_id      text        NOT NULL
                                 REFERENCES {endpoints_table.TABLE} (id) ON DELETE CASCADE,
    user_id          text        NOT NULL,
    position         bigint      NOT NULL,
    type             text        NOT NULL,
    body             text        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending' CHECK (status IN {STATUSES}),
    ready            boolean     NOT NULL DEFAULT false,  -- the first pending of its user
    tries            integer     NOT NULL DEFAULT 0,  -- since it was last queued
    attempts         integer     NOT NULL DEFAULT 0,  -- ever
    next_attempt_at  timestamptz NOT NULL,
    lease_owner      text,
    lease_until      timestamptz,
    event_at         timestamptz NOT NULL,
    queued_at        timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
)
"""

CREATE_INDEXES = (
    f"CREATE INDEX IF NOT EXISTS {TABLE}_due ON {TABLE} (next_attempt_at) WHERE status = 'pending'",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_in_order ON {TABLE} (endpoint_id, user_id, seq) "
    "WHERE status = 'pending'",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_by_endpoint ON {TABLE} (endpoint_id, status, seq)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_by_time ON {TABLE} (endpoint_id, event_at)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_done ON {TABLE} (event_at) WHERE status <> 'pending'",
)

CREATE_ATTEMPTS = f"""
CREATE TABLE IF NOT EXISTS {ATTEMPTS} (
    message_id    text        NOT NULL REFERENCES {TABLE} (id) ON DELETE CASCADE,
    attempt       integer     NOT NULL,
    attempted_at  timestamptz NOT NULL,
    http_status   integer,
    error         text,
    duration_ms   double precision NOT NULL,
    PRIMARY KEY (message_id, attempt)
)
"""

DEFINITIONS = (
    Table.of(TABLE, CREATE_TABLE, *CREATE_INDEXES),
    Table.of(ATTEMPTS, CREATE_ATTEMPTS),
)

#: The outbox's insert: a batch of messages, as columns; one already queued
#: (the same id) is left as it is.
QUEUE = (
    f"INSERT INTO {TABLE} (id, endpoint_id, user_id, position, type, body, next_attempt_at, "
    "event_at) SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::bigint[], "
    "%b::text[], %b::text[], %b::timestamptz[], %b::timestamptz[]) "
    "ON CONFLICT (id) DO NOTHING"
)

#: Channel the outbox notifies after queueing messages, and senders listen to.
CHANNEL = "ledger_webhooks"

# -- the sender's statements ------------------------------------------------------

#: Taken (for the transaction) before MARK_HEADS or REFRESH_HEADS, and held
#: to commit: the outbox queueing a user's messages and a sender finishing the
#: first of them each see what the other committed, so one of them marks the
#: next ready (without it, each could leave the marking to the other).
HEADS_LOCK = f"SELECT pg_advisory_xact_lock({advisory_key('ledger:webhooks:heads')})"

#: Marks the first pending message of each (endpoint, user) given (%s:
#: endpoint ids, %s: user ids) ready, if none is: after messages are queued,
#: and after one is done (succeeded or failed).
MARK_HEADS = f"""
UPDATE {TABLE} AS m SET ready = true
FROM unnest(%b::text[], %b::text[]) AS k(endpoint_id, user_id)
CROSS JOIN LATERAL (
    SELECT p.id FROM {TABLE} AS p
    WHERE p.endpoint_id = k.endpoint_id AND p.user_id = k.user_id AND p.status = 'pending'
    ORDER BY p.seq LIMIT 1
) AS head
WHERE m.id = head.id AND NOT m.ready
"""

#: The same, where an earlier message was queued again (a retry, a recover):
#: the first pending of each (endpoint, user) is ready, the others are not.
REFRESH_HEADS = f"""
UPDATE {TABLE} AS m SET ready = (m.id = head.id)
FROM unnest(%b::text[], %b::text[]) AS k(endpoint_id, user_id)
CROSS JOIN LATERAL (
    SELECT p.id FROM {TABLE} AS p
    WHERE p.endpoint_id = k.endpoint_id AND p.user_id = k.user_id AND p.status = 'pending'
    ORDER BY p.seq LIMIT 1
) AS head
WHERE m.endpoint_id = k.endpoint_id AND m.user_id = k.user_id AND m.status = 'pending'
  AND m.ready IS DISTINCT FROM (m.id = head.id)
"""

#: Ready messages due at %(now)s, not leased at %(wall)s (leases run on the
#: wall clock, which tests do not move), of enabled endpoints but those given
#: (%(full)s: all their slots are in use).
DUE = (
    f"SELECT m.id, m.endpoint_id FROM {TABLE} AS m "
    f"JOIN {endpoints_table.TABLE} AS e ON e.id = m.endpoint_id "
    "WHERE m.ready AND m.next_attempt_at <= %(now)s "
    "AND (m.lease_until IS NULL OR m.lease_until <= %(wall)s) AND NOT e.disabled "
    "AND NOT (m.endpoint_id = ANY(%(full)b::text[])) "
    "ORDER BY m.next_attempt_at, m.seq LIMIT %(limit)s"
)

#: Lease those of %(ids)s still free: a row another sender leased meanwhile
#: fails the WHERE once its lock is released (READ COMMITTED re-checks it),
#: so each message is leased by one sender at a time.
#: https://www.postgresql.org/docs/current/transaction-iso.html#XACT-READ-COMMITTED
LEASE = (
    f"UPDATE {TABLE} AS m SET lease_owner = %(owner)s, lease_until = %(until)s "
    "WHERE m.id = ANY(%(ids)b::text[]) AND m.ready "
    "AND (m.lease_until IS NULL OR m.lease_until <= %(wall)s) "
    "RETURNING m.id, m.endpoint_id, m.user_id, m.body, m.tries, m.attempts"
)

RECORD_ATTEMPTS = f"""
WITH r AS (
    SELECT * FROM unnest(%b::text[], %b::timestamptz[], %b::integer[], %b::text[],
                         %b::double precision[]) AS r(id, at, http_status, error, duration_ms)
), counted AS (
    UPDATE {TABLE} AS m SET attempts = m.attempts + 1 FROM r WHERE m.id = r.id
    RETURNING m.id, m.attempts
)
INSERT INTO {ATTEMPTS} (message_id, attempt, attempted_at, http_status, error, duration_ms)
SELECT r.id, c.attempts, r.at, r.http_status, r.error, r.duration_ms
FROM r JOIN counted AS c ON c.id = r.id
"""

#: Attempts that succeeded at %s (messages %s, if their lease is still this
#: sender's, %s).
SUCCEEDED = (
    f"UPDATE {TABLE} SET status = 'succeeded', ready = false, delivered_at = %s, "
    "lease_owner = NULL, lease_until = NULL, tries = tries + 1 "
    "WHERE id = ANY(%b::text[]) AND lease_owner = %s"
)

#: Attempts that failed (%s: message ids, and when each is tried next, null
#: for never: it has failed), if their lease is still this sender's (%s).
RETRY_LATER = f"""
UPDATE {TABLE} AS m SET
    status = CASE WHEN r.next IS NULL THEN 'failed' ELSE 'pending' END,
    ready = r.next IS NOT NULL,
    next_attempt_at = COALESCE(r.next, m.next_attempt_at),
    lease_owner = NULL, lease_until = NULL, tries = m.tries + 1
FROM unnest(%b::text[], %b::timestamptz[]) AS r(id, next)
WHERE m.id = r.id AND m.lease_owner = %s
"""

# -- the API's statements ------------------------------------------------------------

COLUMNS = (
    "id, seq, endpoint_id, user_id, position, type, status, tries, next_attempt_at, event_at, "
    "queued_at, delivered_at"
)


def of_endpoint(status: str | None) -> str:
    """The messages of endpoint %(endpoint)s after %(after)s (a seq), with
    `status`, oldest first, at most %(limit)s."""
    where = "" if status is None else "AND status = %(status)s "
    return (
        f"SELECT {COLUMNS} FROM {TABLE} WHERE endpoint_id = %(endpoint)s AND seq > %(after)s "
        f"{where}ORDER BY seq LIMIT %(limit)s"
    )


ONE = f"SELECT {COLUMNS} FROM {TABLE} WHERE id = %s"

SEQ_OF = f"SELECT seq FROM {TABLE} WHERE id = %s AND endpoint_id = %s"

ATTEMPTS_OF = (
    f"SELECT message_id, attempt, attempted_at, http_status, error, duration_ms FROM {ATTEMPTS} "
    "WHERE message_id = ANY(%s) ORDER BY message_id, attempt"
)

#: Send a message again, at %(now)s, with the whole retry schedule before it
#: (then REFRESH_HEADS for its user).
REQUEUE = (
    f"UPDATE {TABLE} SET status = 'pending', tries = 0, next_attempt_at = %(now)s, "
    f"lease_owner = NULL, lease_until = NULL WHERE id = %(id)s RETURNING {COLUMNS}"
)

#: Send again every message of an endpoint about an event recorded at or after
#: %(since)s (then REFRESH_HEADS for their users).
RECOVER = (
    f"UPDATE {TABLE} SET status = 'pending', tries = 0, next_attempt_at = %(now)s, "
    "lease_owner = NULL, lease_until = NULL "
    "WHERE endpoint_id = %(endpoint)s AND event_at >= %(since)s AND status <> 'pending' "
    "RETURNING user_id"
)

#: An endpoint enabled again at %(now)s: what waits for it is due at once.
RESUME = (
    f"UPDATE {TABLE} SET next_attempt_at = %(now)s "
    "WHERE endpoint_id = %(endpoint)s AND status = 'pending' AND next_attempt_at > %(now)s"
)

#: For the metrics: each endpoint's pending messages and the oldest of them
#: (by status, with those pruned: projections.webhooks.retention.COUNTS).
LAG = (
    f"SELECT e.id, e.url, min(m.event_at), count(m.id) FROM {endpoints_table.TABLE} AS e "
    f"LEFT JOIN {TABLE} AS m ON m.endpoint_id = e.id AND m.status = 'pending' "
    "GROUP BY e.id, e.url"
)


def view(row: dict[str, Any], attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """A message (a delivery, as the API calls it) with its attempts."""
    return {
        "id": row["id"],
        "endpoint_id": row["endpoint_id"],
        "type": row["type"],
        "user_id": row["user_id"],
        "position": row["position"],
        "status": row["status"],
        "event_at": timestamp(row["event_at"]),
        "queued_at": timestamp(row["queued_at"]),
        "next_attempt_at": timestamp(row["next_attempt_at"])
        if row["status"] == "pending"
        else None,
        "delivered_at": None if row["delivered_at"] is None else timestamp(row["delivered_at"]),
        "attempts": [
            {
                "attempt": a["attempt"],
                "attempted_at": timestamp(a["attempted_at"]),
                "http_status": a["http_status"],
                "error": a["error"],
                "duration_ms": round(float(a["duration_ms"]), 3),
            }
            for a in attempts
        ],
    }
