"""Every statement on the webhook endpoints table, in one place.

An endpoint is where the app wants to hear of the ledger's events: its URL,
the event types it subscribes to, its signing secret (and, for a day after a
rotation, the previous one), and whether it is disabled (by an operator, by a
410 Gone, or after five days of failures: nothing is sent to it meanwhile,
and what is queued for it waits). `created_position` is the log's head when
it was created: it hears of the events after it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ledger.db import Table
from ledger.times import timestamp

TABLE = "ledger_webhook_endpoints"

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id                     text        PRIMARY KEY,
    seq                    bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    url                    text        NOT NULL,
    event_types            text[]      NOT NULL,
    description            text,
    low_balance_threshold  integer     CHECK (low_balance_threshold IS NULL
                                              OR low_balance_threshold >= 0),
    secret                 text        NOT NULL,
    previous_secret        text,
    previous_secret_until  timestamptz,
    disabled               boolean     NOT NULL DEFAULT false,
    disabled_reason        text,
    failing_since          timestamptz,
    created_position       bigint      NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
)
"""

DEFINITION = Table.of(TABLE, CREATE_TABLE)

#: What the API shows of an endpoint (never its secrets).
COLUMNS = (
    "id, url, event_types, description, low_balance_threshold, disabled, disabled_reason, "
    "failing_since, previous_secret_until, created_at, updated_at"
)

INSERT = (
    f"INSERT INTO {TABLE} (id, url, event_types, description, low_balance_threshold, secret, "
    "created_position) VALUES (%(id)s, %(url)s, %(event_types)s, %(description)s, "
    "%(low_balance_threshold)s, %(secret)s, %(created_position)s) "
    f"RETURNING {COLUMNS}"
)

ONE = f"SELECT {COLUMNS} FROM {TABLE} WHERE id = %s"

PAGE = f"SELECT {COLUMNS} FROM {TABLE} WHERE seq > %s ORDER BY seq LIMIT %s"

SEQ_OF = f"SELECT seq FROM {TABLE} WHERE id = %s"

DELETE = f"DELETE FROM {TABLE} WHERE id = %s RETURNING id"

#: The fields PATCH may set (each given is set; the others are left alone).
PATCHABLE = ("url", "event_types", "disabled", "low_balance_threshold", "description")


def patch(fields: Sequence[str]) -> str:
    """An UPDATE of `fields` (from PATCHABLE) of the endpoint %(id)s. Enabling
    it again forgets why it was disabled, and since when it was failing."""
    assert set(fields) <= set(PATCHABLE)
    sets = [f"{name} = %({name})s" for name in fields]
    if "disabled" in fields:
        sets.append("disabled_reason = CASE WHEN %(disabled)s THEN 'disabled by an operator' END")
        sets.append("failing_since = CASE WHEN %(disabled)s THEN failing_since END")
    return (
        f"UPDATE {TABLE} SET {', '.join(sets)}, updated_at = now() WHERE id = %(id)s "
        f"RETURNING {COLUMNS}"
    )


#: A new secret; the one it replaces signs too until %(until)s.
ROTATE = (
    f"UPDATE {TABLE} SET previous_secret = secret, previous_secret_until = %(until)s, "
    "secret = %(secret)s, updated_at = now() WHERE id = %(id)s "
    f"RETURNING {COLUMNS}"
)

#: The secrets that sign for an endpoint (the previous one until its time).
SECRETS = f"SELECT secret, previous_secret, previous_secret_until FROM {TABLE} WHERE id = %s"

#: The endpoints that hear of new events (the outbox's view): every one, a
#: disabled one too. Its messages wait (the sender skips a disabled endpoint)
#: until it is enabled again, and are sent then, in order.
SUBSCRIBED = (
    f"SELECT id, event_types, low_balance_threshold, created_position FROM {TABLE} ORDER BY seq"
)

#: How the sender signs for an endpoint, and where it sends.
SENDING = (
    "SELECT id, url, secret, previous_secret, previous_secret_until, disabled "
    f"FROM {TABLE} WHERE id = ANY(%s)"
)

#: A success: the endpoint is delivering.
DELIVERING = (
    f"UPDATE {TABLE} SET failing_since = NULL WHERE id = ANY(%s) AND failing_since IS NOT NULL"
)

#: A failure at %(now)s: failing since then, if not already; disabled once it
#: has been failing for %(limit)s.
FAILING = (
    f"UPDATE {TABLE} SET failing_since = COALESCE(failing_since, %(now)s), "
    "disabled = disabled OR COALESCE(failing_since, %(now)s) <= %(now)s - %(limit)s, "
    "disabled_reason = CASE WHEN disabled THEN disabled_reason "
    "WHEN COALESCE(failing_since, %(now)s) <= %(now)s - %(limit)s "
    "THEN 'failing for five days' END, updated_at = now() WHERE id = %(id)s"
)

#: The endpoint said 410 Gone: disabled at once.
GONE = (
    f"UPDATE {TABLE} SET disabled = true, disabled_reason = 'the endpoint answered 410 Gone', "
    "failing_since = COALESCE(failing_since, %(now)s), updated_at = now() WHERE id = %(id)s"
)


def view(row: dict[str, Any]) -> dict[str, Any]:
    """A row of COLUMNS as the API shows it."""
    return {
        "id": row["id"],
        "url": row["url"],
        "event_types": list(row["event_types"]),
        "description": row["description"],
        "low_balance_threshold": row["low_balance_threshold"],
        "disabled": row["disabled"],
        "disabled_reason": row["disabled_reason"],
        "failing_since": _time(row["failing_since"]),
        "previous_secret_until": _time(row["previous_secret_until"]),
        "created_at": timestamp(row["created_at"]),
        "updated_at": timestamp(row["updated_at"]),
    }


def _time(value: datetime | None) -> str | None:
    return None if value is None else timestamp(value)
