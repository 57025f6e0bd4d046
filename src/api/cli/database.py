"""`ledger db init` and `ledger db prune-keys`."""

from __future__ import annotations

import argparse
import re
from datetime import datetime, timedelta

from api.cli.common import Subparsers, database_of
from ledger import idempotency
from projections.views import timestamp


def db_init(args: argparse.Namespace) -> int:
    database = database_of(args)
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
    database = database_of(args)
    with database.connect() as conn:
        # By the server's clock, which stamped the keys.
        row = conn.execute("SELECT now() - %s", (args.older_than,)).fetchone()
        assert row is not None and isinstance(row[0], datetime)
        before = row[0]
        pruned = idempotency.prune(conn, before)
    print(f"Pruned {pruned:,} idempotency keys first used before {timestamp(before)}.")
    return 0


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
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
