"""Every Stripe event received, with what became of it, and who paid with each
payment: written in the same transaction as the ledger events a delivery
causes (ledger.writer.alongside), under the events table's lock, so that a
delivery is recorded exactly when its effects are.

- `ledger_stripe_events`: one row per Stripe event id, its outcome `applied`,
  `ignored`, `rejected` or `waiting` (a refund or dispute of a payment whose
  purchase has not arrived: what it will apply is kept in `change`, and the
  purchase, when it arrives, applies it in the same transaction).
- `ledger_stripe_payments`: the user and purchase of each payment intent, how
  a refund or a dispute (which name a payment, not a user) finds its user.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from ledger.commands import Delivery
from ledger.db import Table
from ledger.domain.purchases import Change, DisputeReinstated, DisputeWithdrawn, Refunds
from ledger.times import timestamp

TABLE = "ledger_stripe_events"
PAYMENTS = "ledger_stripe_payments"
OUTCOMES = ("applied", "ignored", "rejected", "waiting")

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    event_id        text        PRIMARY KEY,
    seq             bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,  -- order received
    type            text        NOT NULL,
    object_id       text        NOT NULL,
    payment_intent  text,
    user_id         text,
    status          text        NOT NULL CHECK (status IN {OUTCOMES}),
    error           text,
    change          jsonb,  -- what a waiting delivery applies when its purchase arrives
    received_at     timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
)
"""

CREATE_INDEXES = (
    f"CREATE INDEX IF NOT EXISTS {TABLE}_waiting ON {TABLE} (payment_intent) "
    "WHERE status = 'waiting'",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_by_status ON {TABLE} (status, seq)",
)

CREATE_PAYMENTS = f"""
CREATE TABLE IF NOT EXISTS {PAYMENTS} (
    payment_intent  text        PRIMARY KEY,
    user_id         text        NOT NULL,
    purchase_id     text        NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
)
"""

DEFINITIONS = (
    Table.of(TABLE, CREATE_TABLE, *CREATE_INDEXES),
    Table.of(PAYMENTS, CREATE_PAYMENTS),
)

COLUMNS = (
    "event_id, type, object_id, payment_intent, user_id, status, error, received_at, updated_at"
)

ONE = f"SELECT {COLUMNS} FROM {TABLE} WHERE event_id = %s"

#: Who paid with a payment intent.
OWNER = f"SELECT user_id FROM {PAYMENTS} WHERE payment_intent = %s"

#: The deliveries waiting for a payment's purchase, in the order received.
WAITING = (
    f"SELECT event_id, type, object_id, payment_intent, change FROM {TABLE} "
    "WHERE payment_intent = %s AND status = 'waiting' ORDER BY seq"
)

STORE = (
    f"INSERT INTO {TABLE} (event_id, type, object_id, payment_intent, user_id, status, error, "
    "change) SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
    "%s::text[], %s::text[], %s::jsonb[]) ON CONFLICT (event_id) DO NOTHING"
)

STORE_PAYMENTS = (
    f"INSERT INTO {PAYMENTS} (payment_intent, user_id, purchase_id) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) ON CONFLICT DO NOTHING"
)

#: What was waiting for the purchases of some payments (%s: payment intents,
#: %s: their users), now that they have arrived: applied if it recorded an
#: event (%s: the Stripe event ids of the batch's events), else ignored.
SETTLE_WAITING = f"""
UPDATE {TABLE} AS t SET
    status = CASE WHEN t.event_id = ANY(%s::text[]) THEN 'applied' ELSE 'ignored' END,
    error = CASE WHEN t.event_id = ANY(%s::text[]) THEN NULL
        ELSE 'nothing left to apply when its purchase arrived' END,
    user_id = p.user_id,
    updated_at = now()
FROM unnest(%s::text[], %s::text[]) AS p(payment_intent, user_id)
WHERE t.payment_intent = p.payment_intent AND t.status = 'waiting'
"""

SEQ_OF = f"SELECT seq FROM {TABLE} WHERE event_id = %s"


def of_status(status: str | None) -> str:
    """The events received after %(after)s (a seq) with `status`, in the order
    received, at most %(limit)s."""
    where = "" if status is None else "AND status = %(status)s "
    return (
        f"SELECT {COLUMNS} FROM {TABLE} WHERE seq > %(after)s {where}ORDER BY seq LIMIT %(limit)s"
    )


def view(row: Sequence[Any]) -> dict[str, Any]:
    """A row of ONE or of_status, as the API shows it."""
    event_id, type_, object_id, payment_intent, user_id, status, error, received, updated = row
    return {
        "id": event_id,
        "type": type_,
        "object_id": object_id,
        "payment_intent": payment_intent,
        "user_id": user_id,
        "status": status,
        "error": error,
        "received_at": timestamp(received),
        "updated_at": timestamp(updated),
    }


# -- rows ----------------------------------------------------------------------------


def store_params(
    rows: Iterable[tuple[Delivery, str | None, str, str | None, Change | None]],
) -> list[list[Any]]:
    """STORE's parameters for (delivery, user, status, error, change to keep) rows."""
    columns: list[list[Any]] = [[] for _ in range(8)]
    for delivery, user_id, status, error, change in rows:
        kept = None if change is None else orjson.dumps(change_dict(change)).decode()
        values = (
            delivery.event_id,
            delivery.type,
            delivery.object_id,
            delivery.payment_intent,
            user_id,
            status,
            error,
            kept,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return columns


def waiting_of(rows: Iterable[Sequence[Any]]) -> tuple[tuple[Delivery, Change], ...]:
    """WAITING's rows: each delivery and what it applies."""
    found = []
    for event_id, type_, object_id, payment_intent, change in rows:
        kept = change if isinstance(change, dict) else orjson.loads(change)
        found.append((Delivery(event_id, type_, object_id, payment_intent), change_of(kept)))
    return tuple(found)


def change_dict(change: Change) -> dict[str, Any]:
    if isinstance(change, Refunds):
        return {
            "kind": "refunds",
            "named": [list(pair) for pair in change.named],
            "amount_refunded": change.amount_refunded,
            "currency": change.currency,
        }
    kind = "dispute_withdrawn" if isinstance(change, DisputeWithdrawn) else "dispute_reinstated"
    return {"kind": kind, "dispute_id": change.dispute_id, "amount": change.amount}


def change_of(kept: dict[str, Any]) -> Change:
    """The change `change_dict` kept."""
    kind = kept["kind"]
    if kind == "refunds":
        named = tuple((str(rid), int(amount)) for rid, amount in kept["named"])
        return Refunds(named, kept["amount_refunded"], kept["currency"])
    dispute = DisputeWithdrawn if kind == "dispute_withdrawn" else DisputeReinstated
    return dispute(str(kept["dispute_id"]), int(kept["amount"]))
