"""What every `ledger` subcommand shares: settings, the database, exit codes."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any, Protocol

from api.bootstrap import init_database, missing_tables, resolve_database
from api.settings import Settings
from ledger.db import Database
from projections.views import parse_timestamp

#: The command could not do its work (no database, a history it cannot read):
#: apart from 1, which audit and import keep for "differences" and "bad rows".
EXIT_CANNOT = 3
#: A usage error: arguments, or settings that cannot be used.
EXIT_USAGE = 2


def settings_of(args: argparse.Namespace) -> Settings:
    settings = Settings()
    if getattr(args, "database_url", None):
        settings.database_url = args.database_url
    return settings


def database_of(args: argparse.Namespace, *, create: bool = True) -> Database:
    """The database, its tables created if need be (`create`), or checked to
    exist (for commands that only read)."""
    database = resolve_database(settings_of(args))
    if create:
        init_database(database)
        return database
    with database.connect() as conn:
        missing = missing_tables(conn, database)
    if missing:
        raise SystemExit(cannot(f"the database has no {', '.join(missing)}: run `ledger db init`"))
    return database


def cannot(reason: str) -> int:
    print(f"ledger: {reason}", file=sys.stderr)
    return EXIT_CANNOT


def first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def parse_time(text: str) -> datetime:
    """An RFC 3339 time, for an argument."""
    try:
        return parse_timestamp(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class Subparsers(Protocol):
    """What `register(sub, common)` of each command module adds its subcommands to."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...
