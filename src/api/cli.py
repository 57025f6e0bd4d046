"""The `ledger` command."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg

from api import importing
from api.bootstrap import (
    ProjectorProcess,
    build_services,
    configure_logging,
    init_database,
    keyring,
    missing_tables,
    resolve_database,
    run_projector,
    stop_on_signals,
)
from api.metrics import MULTIPROCESS_DIR
from api.progress import ProgressBar
from api.settings import Settings
from ledger import idempotency
from ledger.application import Ledger
from ledger.db import Database
from ledger.errors import DatabaseUnavailable, HistoryUnreadable
from ledger.views import parse_timestamp, timestamp, user_view
from projections.audit import LedgerAudit, UserAudit, audit_all, audit_user, ledger_at
from projections.history import state_at, timeline
from projections.rebuild import Progress, Rebuild, RebuildError

log = logging.getLogger("ledger")


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings()
    if getattr(args, "database_url", None):
        settings.database_url = args.database_url
    return settings


def _database(settings: Settings, *, create: bool = True) -> Database:
    """The database, its tables created if need be (`create`), or checked to
    exist (for commands that only read)."""
    database = resolve_database(settings)
    if create:
        init_database(database)
        return database
    with database.connect() as conn:
        missing = missing_tables(conn)
    if missing:
        raise SystemExit(_cannot(f"the database has no {', '.join(missing)}: run `ledger db init`"))
    return database


# -- serve, project, db init --------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    settings = _settings(args)
    for name in ("host", "port", "workers"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    if args.no_projector:
        settings.projector = False
    database = _database(settings)
    _, new_key = keyring(settings)
    where = "LEDGER_API_KEYS" if settings.api_keys else str(settings.home / "admin-api-key")
    if not settings.api_keys:
        key = new_key or (settings.home / "admin-api-key").read_text().strip()
        made = "generated" if new_key else "kept"
        print(f"Admin API key ({made} in {where}): {key}", flush=True)
    print(
        f"Serving the ledger on http://{settings.host}:{settings.port} "
        f"(docs at /docs; database {database.name})",
        flush=True,
    )
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": False,
        "server_header": False,
        "date_header": False,
        "timeout_graceful_shutdown": 10,
    }
    projector = ProjectorProcess(database.url) if settings.projector else None
    if projector is not None:
        projector.start()
    try:
        if settings.workers > 1:
            os.environ["LEDGER_DATABASE_URL"] = database.url
            with shared_metrics():
                uvicorn.run(
                    "api.app:app_from_env", factory=True, workers=settings.workers, **common
                )
        else:
            uvicorn.run(create_app(build_services(settings, database)), **common)
    finally:
        if projector is not None:
            projector.stop()
    return 0


@contextmanager
def shared_metrics() -> Iterator[None]:
    """Let the API processes started here count into files of one directory,
    so that /metrics gives the server's totals whichever process answers; a
    directory already named in PROMETHEUS_MULTIPROC_DIR is used as it is."""
    if os.environ.get(MULTIPROCESS_DIR):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="ledger-metrics-") as directory:
        os.environ[MULTIPROCESS_DIR] = directory
        try:
            yield
        finally:
            del os.environ[MULTIPROCESS_DIR]


def project(args: argparse.Namespace) -> int:
    settings = _settings(args)
    database = _database(settings)
    stop = stop_on_signals()
    print(f"Projecting into the users table of {database.name}; Ctrl-C stops.", flush=True)
    run_projector(database, settings, stop)
    return 0


def db_init(args: argparse.Namespace) -> int:
    database = _database(_settings(args))
    print(f"Tables ready in {database.name}.")
    return 0


#: Clients retry within minutes; a shorter retention is more likely a typo.
SHORTEST_KEY_RETENTION = timedelta(hours=1)
LONGEST_KEY_RETENTION = timedelta(days=36500)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _parse_age(text: str) -> timedelta:
    match = re.fullmatch(r"(\d{1,6})([smhd])", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError("give a number and a unit (s, m, h or d), e.g. 30d")
    age = timedelta(**{_UNITS[match[2]]: int(match[1])})
    if age < SHORTEST_KEY_RETENTION:
        raise argparse.ArgumentTypeError(
            "keys younger than an hour may still be retried; give 1h or more"
        )
    if age > LONGEST_KEY_RETENTION:
        raise argparse.ArgumentTypeError("give at most 36500d (a hundred years)")
    return age


def prune_keys(args: argparse.Namespace) -> int:
    database = _database(_settings(args))
    with database.connect() as conn:
        # By the server's clock, which stamped the keys.
        row = conn.execute("SELECT now() - %s", (args.older_than,)).fetchone()
        assert row is not None and isinstance(row[0], datetime)
        before = row[0]
        pruned = idempotency.prune(conn, before)
    print(f"Pruned {pruned:,} idempotency keys first used before {timestamp(before)}.")
    return 0


# -- rebuild --------------------------------------------------------------------


def rebuild(args: argparse.Namespace) -> int:
    database = _database(_settings(args))
    ledger = Ledger.open(database)
    bar = ProgressBar("rebuild")

    def show(progress: Progress) -> None:
        bar.update(progress.events, max(progress.target, progress.events), note=progress.phase)

    try:
        result = Rebuild(database, ledger, on_progress=show).run()
    except RebuildError as e:
        bar.close(f"rebuild failed: {e}", failed=True)
        return EXIT_CANNOT
    finally:
        ledger.close()
    bar.close(
        f"Rebuilt users (version {result.version}): {result.users:,} users from "
        f"{result.events:,} events in {result.seconds:.1f}s "
        f"({result.events_per_second:,.0f} events/s); live at position {result.position:,}."
    )
    return 0


# -- audit ----------------------------------------------------------------------


def _parse_time(text: str) -> datetime:
    try:
        return parse_timestamp(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _print_timeline(ledger: Ledger, user_id: str, at: datetime | None) -> int:
    header = f"{'time':27} {'event':20} {'amount':>9} {'credits':>9} {'chat':>7}  actor / reason"
    print(header)
    print("-" * len(header))
    count = 0
    for step in timeline(ledger, user_id, until=at)[0]:
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
    database = _database(_settings(args), create=False)
    ledger = Ledger.open(database)
    try:
        if args.user_id:
            return _audit_one(database, ledger, args.user_id, args.at, args.json)
        return _audit_everyone(database, ledger, args.at, args.json)
    finally:
        ledger.close()


def _audit_one(
    database: Database, ledger: Ledger, user_id: str, at: datetime | None, as_json: bool
) -> int:
    if at is not None:
        found = state_at(ledger, user_id, at=at)
        if as_json:
            state = None if found is None else user_view(found.state, found.position)
            print(orjson.dumps({"user_id": user_id, "at": at.isoformat(), "state": state}).decode())
        elif found is not None:
            _print_timeline(ledger, user_id, at)
        if found is None:
            print(f"no user {user_id!r} at {at.isoformat()}", file=sys.stderr)
            return 1
        return 0
    with database.connect() as conn:
        result = audit_user(conn, ledger, user_id)
    if result is None:
        print(f"no user {user_id!r}", file=sys.stderr)
        return 1
    if as_json:
        print(orjson.dumps({"user_id": user_id, **result.as_dict()}).decode())
    else:
        _print_timeline(ledger, user_id, None)
        _print_user_audit(result)
    return 0 if result.consistent else 1


def _audit_everyone(database: Database, ledger: Ledger, at: datetime | None, as_json: bool) -> int:
    if at is not None:
        totals = ledger_at(database, ledger, at)
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

    report = audit_all(database, ledger, on_progress=None if as_json else show)
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


# -- import, generate -----------------------------------------------------------


def import_(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        print(f"no such file: {path}", file=sys.stderr)
        return 2
    parsed = importing.parse(path)
    for bad in parsed.bad:
        print(f"line {bad.line}: {bad.reason}", file=sys.stderr)
    if parsed.unreadable:
        print("the file cannot be imported: imported nothing", file=sys.stderr)
        return 1
    if parsed.bad and not args.skip_bad:
        print(
            f"{len(parsed.bad)} bad rows: imported nothing (fix them, or use --skip-bad)",
            file=sys.stderr,
        )
        return 1
    database = _database(_settings(args))
    ledger = Ledger.open(database)
    try:
        report = importing.run(ledger, database, parsed, skip_bad=args.skip_bad)
    finally:
        ledger.close()
    skipped = f", skipped {len(report.bad)} bad rows" if report.bad else ""
    print(
        f"Imported {report.imported:,} users; {report.already_there:,} were already there{skipped}."
    )
    return 0


def generate(args: argparse.Namespace) -> int:
    from api.generate import generate as run_generate

    database = _database(_settings(args))
    ledger = Ledger.open(database)
    bar = ProgressBar("generate")

    def show(done: int) -> None:
        bar.update(done, args.events)

    try:
        recorded = run_generate(
            ledger,
            database,
            users=args.users,
            events=args.events,
            legacy_fraction=args.legacy_fraction,
            seed=args.seed,
            on_progress=show,
        )
    finally:
        ledger.close()
    seconds = time.monotonic() - bar.started
    bar.close(f"Recorded {recorded:,} events for {args.users:,} users in {seconds:.1f}s.")
    return 0


# -- the parser -------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="ledger", description="An event-sourced credit ledger on PostgreSQL."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url",
        help="PostgreSQL URL (default: LEDGER_DATABASE_URL, else the embedded server "
        "in ./.ledger/)",
    )
    sub = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", parents=[common], help="serve the HTTP API and its projector")
    p.add_argument("--host", help="address to bind (default 127.0.0.1, LEDGER_HOST)")
    p.add_argument("--port", type=int, help="port (default 8000, LEDGER_PORT)")
    p.add_argument("--workers", type=int, help="API processes (default 1, LEDGER_WORKERS)")
    p.add_argument(
        "--no-projector", action="store_true", help="serve only; run `ledger project` elsewhere"
    )
    p.set_defaults(run=serve)

    p = sub.add_parser(
        "project", parents=[common], help="run the projector alone (one is active per database)"
    )
    p.set_defaults(run=project)

    p = sub.add_parser(
        "rebuild", parents=[common], help="rebuild the users table from history and swap it in"
    )
    p.set_defaults(run=rebuild)

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
        type=_parse_time,
        metavar="TIME",
        help="an RFC 3339 time: one user's timeline up to it, or every user's balances "
        "as of it (no check: the projection is of now)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=audit)

    p = sub.add_parser(
        "import", parents=[common], help="import users from a CRUD table export (CSV or JSON lines)"
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="import the good rows and report the bad (default: import nothing)",
    )
    p.set_defaults(run=import_)

    p = sub.add_parser("db", help="database set-up")
    db_sub = p.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    init = db_sub.add_parser("init", parents=[common], help="create the tables (idempotent)")
    init.set_defaults(run=db_init)
    prune = db_sub.add_parser(
        "prune-keys",
        parents=[common],
        help="forget idempotency keys first used longer ago than --older-than",
    )
    prune.add_argument(
        "--older-than",
        type=_parse_age,
        required=True,
        metavar="AGE",
        help="e.g. 24h or 30d (at least 1h); a request repeated with a pruned key is new",
    )
    prune.set_defaults(run=prune_keys)

    p = sub.add_parser(
        "generate", parents=[common], help="record a realistic history, for benchmarks and demos"
    )
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--events", type=int, default=100_000, help="events in all, registrations too")
    p.add_argument(
        "--legacy-fraction",
        type=float,
        default=0.1,
        help="users registered in the old, pre-credit event shape",
    )
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(run=generate)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(Settings().log_level)
    try:
        result: int = args.run(args)
    except (psycopg.OperationalError, psycopg.InterfaceError) as e:
        return _cannot(f"cannot reach the database: {_first_line(e)}")
    except (DatabaseUnavailable, HistoryUnreadable) as e:
        return _cannot(e.detail)
    return result


#: The command could not do its work (no database, a history it cannot read):
#: apart from 1, which audit and import keep for "differences" and "bad rows".
EXIT_CANNOT = 3


def _cannot(reason: str) -> int:
    print(f"ledger: {reason}", file=sys.stderr)
    return EXIT_CANNOT


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
