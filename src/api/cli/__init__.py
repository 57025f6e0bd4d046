"""The `ledger` command: one module per group of subcommands, each adding its
own to the parser (`register`)."""

from __future__ import annotations

import argparse

import psycopg

from api.cli import audit, data, database, rebuild, serve, verify
from api.cli.common import cannot, first_line
from api.settings import Settings
from api.supervisor import configure_logging
from ledger.errors import DatabaseUnavailable, HistoryUnreadable


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
    for module in (serve, rebuild, audit, verify, data, database):
        module.register(sub, common)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(Settings().log_level)
    try:
        result: int = args.run(args)
    except (psycopg.OperationalError, psycopg.InterfaceError) as e:
        return cannot(f"cannot reach the database: {first_line(e)}")
    except (DatabaseUnavailable, HistoryUnreadable) as e:
        return cannot(e.detail)
    return result
