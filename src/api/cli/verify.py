"""`ledger verify`: walk the hash chain and say where it breaks, if it does."""

from __future__ import annotations

import argparse
import re

import orjson
import psycopg

from api.bootstrap import tools
from api.cli.common import Subparsers, database_of
from api.cli.progress import ProgressBar
from ledger import chain, events_table
from ledger.db import Database, translate_errors

_BIGINT = 2**63 - 1


def _witness(text: str) -> tuple[int, bytes]:
    match = re.fullmatch(r"([0-9a-fA-F]{64})@(\d{1,19})", text.strip())
    if match is None or int(match[2]) > _BIGINT:
        raise argparse.ArgumentTypeError("give HASH@POSITION: 64 hex digits, '@', a position")
    return int(match[2]), bytes.fromhex(match[1])


def _position(text: str) -> int:
    if not text.isdigit() or int(text) > _BIGINT:
        raise argparse.ArgumentTypeError("a position is a whole number from 0")
    return int(text)


def verify(args: argparse.Namespace) -> int:
    database = database_of(args, create=False)
    if args.seal:
        seal(database)
    with database.connect(autocommit=False) as conn, translate_errors():
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        end = events_table.head(conn)
        bar = ProgressBar("verify")

        def show(verdict: chain.Verdict) -> None:
            bar.update(verdict.position, end)

        verdict = chain.verify(
            conn,
            after=args.from_position,
            expect=args.expect,
            on_progress=None if args.json else show,
        )
        conn.rollback()
    if args.json:
        print(orjson.dumps(verdict.as_dict()).decode())
    elif verdict.intact:
        head = (verdict.hash or chain.GENESIS).hex()
        tail = (
            f"; {verdict.unchained:,} events after it not chained yet (`ledger verify --seal`)"
            if verdict.unchained
            else ""
        )
        bar.close(
            f"chain intact up to position {verdict.position}, head {head} "
            f"({verdict.checked:,} events checked{tail})"
        )
    else:
        bar.close(f"chain BROKEN at position {verdict.broken_at}: {verdict.reason}", failed=True)
    return 0 if verdict.intact else 1


def seal(database: Database) -> None:
    """Chain every event recorded without its link, a batch at a time."""
    bar = ProgressBar("seal")
    sealed = 0
    with tools(database) as t, database.connect() as conn, translate_errors():
        while chained := chain.seal(conn, t.ledger.lock_statements, 10_000):
            sealed += chained
            bar.update(sealed, max(sealed, events_table.head(conn)))
    bar.close(f"Sealed {sealed:,} events into the chain.")


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "verify", parents=[common], help="walk the hash chain; exit 1 where it breaks"
    )
    p.add_argument(
        "--from",
        dest="from_position",
        type=_position,
        default=0,
        metavar="POSITION",
        help="start after this position (trusting the hash kept there)",
    )
    p.add_argument(
        "--expect",
        type=_witness,
        metavar="HASH@POSITION",
        help="a head kept elsewhere (GET /v1/chain/head): the chain must still have it",
    )
    p.add_argument("--seal", action="store_true", help="first chain the events not chained yet")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=verify)
