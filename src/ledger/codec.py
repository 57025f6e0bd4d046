"""A user's state as JSON, and back: how snapshots keep it, and how the users
table keeps the state its projector folds further events onto."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from ledger.domain import Allowance, Balance, Grant, Hold, UserState
from ledger.domain.grants import in_order, summed
from ledger.domain.purchases import Purchase


def _times(fields: dict[str, Any], *names: str) -> dict[str, Any]:
    for name in names:
        value = fields.get(name)
        if isinstance(value, str):
            fields[name] = datetime.fromisoformat(value)
    return fields


def to_dict(state: UserState) -> dict[str, Any]:
    """(Without the next expiries: the grants say them, and `from_dict` sums them again.)"""
    fields = state._asdict()
    del fields["expiring"]
    fields["grants"] = [g._asdict() for g in state.grants]
    fields["holds"] = [h._asdict() for h in state.holds]
    fields["allowances"] = [a._asdict() for a in state.allowances]
    fields["purchases"] = [p._asdict() for p in state.purchases]
    return fields


def encode(state: UserState) -> bytes:
    return orjson.dumps(to_dict(state))


def from_dict(fields: dict[str, Any]) -> UserState:
    """The state `to_dict` gave (raises KeyError, TypeError or ValueError on
    anything else)."""
    fields = _times(dict(fields), "updated_at")
    fields["grants"] = in_order(
        Grant(**_times({**g, "balance": Balance(g["balance"])}, "expires_at", "granted_at"))
        for g in fields.get("grants", ())
    )
    fields["holds"] = tuple(
        Hold(
            **_times(
                {
                    **h,
                    "balance": Balance(h["balance"]),
                    "grants": tuple((str(p[0]), int(p[1])) for p in h["grants"]),
                },
                "created_at",
                "expires_at",
                "closed_at",
            )
        )
        for h in fields.get("holds", ())
    )
    fields["allowances"] = tuple(
        Allowance(
            **_times(
                {**a, "balance": Balance(a["balance"])}, "anchor", "period_start", "period_end"
            )
        )
        for a in fields.get("allowances", ())
    )
    fields["purchases"] = tuple(
        Purchase(**{**p, "refund_ids": tuple(p["refund_ids"])}) for p in fields.get("purchases", ())
    )
    fields.pop("expiring", None)
    fields["expiring"] = summed(fields["grants"])[2]
    return UserState(**fields)


def decode(data: bytes | str) -> UserState:
    return from_dict(orjson.loads(data))
