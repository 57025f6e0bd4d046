"""`ledger audit`: replay history, print the timeline, check the users table."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import orjson

from api.bootstrap import Tools, tools
from api.cli.common import Subparsers, database_of, parse_time
from api.cli.progress import ProgressBar
from ledger.domain import as_of
from ledger.domain.explain import explain
from projections.audit import LedgerAudit, UserAudit, audit_all, audit_user, ledger_at
from projections.history import state_at, timeline
from projections.views import timestamp, user_view


def _print_timeline(t: Tools, user_id: str, at: datetime | None) -> int:
    header = f"{'time':27} {'event':20} {'amount':>9} {'credits':>9} {'chat':>7}  actor / reason"
    print(header)
    print("-" * len(header))
    count = 0
    for step in timeline(t.log, user_id, until=at)[0]:
        event = step.recorded.event
        count += 1
        data = event.data
        cause = event.cause or {}
        actor = cause.get("actor_role") or "-"
        if cause.get("actor_key_id"):
            actor += f" {cause['actor_key_id']}"
        amount = data.get("amount")
        detail = data.get("reason") or ""
        if "level" in data:
            detail = f"{data['level']} {data.get('renewal_period') or ''}".strip()
        print(
            f"{timestamp(event.timestamp):27} {type(event).__name__:20} "
            f"{'' if amount is None else f'{amount:,}':>9} "
            f"{_number(step.state.free_credits):>9} {_number(step.state.free_chat_messages):>7}  "
            f"{actor}{(' / ' + detail) if detail else ''}"
        )
    return count


def _number(value: int | None) -> str:
    return "NULL" if value is None else f"{value:,}"


def _print_user_audit(result: UserAudit) -> None:
    if result.consistent:
        print(f"\nprojection at position {result.position:,}: consistent with the history")
        return
    print(f"\nprojection at position {result.position:,}: DIFFERS from the history")
    for d in result.differences:
        print(f"  {d['field']}: projected {d['projected']!r}, replayed {d['replayed']!r}")


def audit(args: argparse.Namespace) -> int:
    with tools(database_of(args, create=False)) as t:
        if args.user_id:
            return _audit_one(t, args.user_id, args.at, args.json)
        return _audit_everyone(t, args.at, args.json)


def _audit_one(t: Tools, user_id: str, at: datetime | None, as_json: bool) -> int:
    if at is not None:
        found = state_at(t.log, user_id, at=at)
        if as_json:
            state = None if found is None else user_view(found.state, found.position)
            print(orjson.dumps({"user_id": user_id, "at": at.isoformat(), "state": state}).decode())
        elif found is not None:
            _print_timeline(t, user_id, at)
        if found is None:
            print(f"no user {user_id!r} at {at.isoformat()}", file=sys.stderr)
            return 1
        return 0
    with t.database.connect() as conn:
        result = audit_user(conn, t.ledger, user_id)
    if result is None:
        print(f"no user {user_id!r}", file=sys.stderr)
        return 1
    if as_json:
        print(orjson.dumps({"user_id": user_id, **result.as_dict()}).decode())
    else:
        _print_explanation(t, user_id)
        _print_timeline(t, user_id, None)
        _print_user_audit(result)
    return 0 if result.consistent else 1


def _print_explanation(t: Tools, user_id: str) -> None:
    """Each balance as of now, in words: what the timeline below adds up to."""
    found = state_at(t.log, user_id)
    if found is None:
        return
    now = datetime.now(UTC)
    for name, balance in explain(as_of(found.state, now), now).items():
        print(f"{name}: {balance['summary']}")
        for hold in balance["holds"]:
            why = f" for {hold['reason']}" if hold["reason"] else ""
            print(f"  hold {hold['id']}: {hold['amount']:,}{why}, until {hold['expires_at']}")
        for grant in balance["grants"]:
            until = f", expires {grant['expires_at']}" if grant["expires_at"] else ""
            print(f"  grant {grant['id']} ({grant['source']}): {grant['remaining']:,} left{until}")
    print()


def _audit_everyone(t: Tools, at: datetime | None, as_json: bool) -> int:
    if at is not None:
        totals = ledger_at(t.database, t.ledger, at)
        if as_json:
            print(orjson.dumps(totals.as_dict()).decode())
        else:
            levels = ", ".join(f"{n:,} {level}" for level, n in sorted(totals.levels.items()))
            print(
                f"As of {timestamp(at)}: {totals.users:,} users ({levels or 'none'}); "
                f"{totals.free_credits:,} credits and {totals.free_chat_messages:,} chat "
                "messages outstanding."
            )
        return 0
    bar = ProgressBar("audit")

    def show(report: LedgerAudit, position: int) -> None:
        note = f"{report.users_checked:,} users, {len(report.mismatches)} mismatches"
        bar.update(position, report.position, note=note)

    report = audit_all(t.database, t.ledger, on_progress=None if as_json else show)
    if as_json:
        print(
            orjson.dumps(
                {
                    "consistent": report.consistent,
                    "position": report.position,
                    "users_checked": report.users_checked,
                    "events_replayed": report.events_replayed,
                    "mismatches": [
                        {"user_id": m.user_id, **m.as_dict()} for m in report.mismatches
                    ],
                }
            ).decode()
        )
    else:
        bar.close(
            f"Checked {report.users_checked:,} users against {report.events_replayed:,} "
            f"events, up to position {report.position:,}: "
            + ("consistent." if report.consistent else f"{len(report.mismatches)} mismatches.")
        )
        for m in report.mismatches:
            fields = ", ".join(
                f"{d['field']} projected {d['projected']!r} replayed {d['replayed']!r}"
                for d in m.differences
            )
            print(f"  {m.user_id}: {fields}")
    return 0 if report.consistent else 1


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "audit", parents=[common], help="replay history and check the users table against it"
    )
    p.add_argument(
        "user_id",
        nargs="?",
        metavar="USER_ID",
        help="one user: print the timeline, then check (default: every user)",
    )
    p.add_argument(
        "--at",
        type=parse_time,
        metavar="TIME",
        help="an RFC 3339 time: one user's timeline up to it, or every user's balances "
        "as of it (no check: the projection is of now)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=audit)
