"""`ledger import` and `ledger generate`: histories brought in, or made up."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from api.bootstrap import tools
from api.cli import importing
from api.cli.common import Subparsers, database_of
from api.cli.progress import ProgressBar
from ledger import chain


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
    database = database_of(args)
    with tools(database) as t:
        report = importing.run(t.ledger, database, parsed, skip_bad=args.skip_bad)
    skipped = f", skipped {len(report.bad)} bad rows" if report.bad else ""
    print(
        f"Imported {report.imported:,} users; {report.already_there:,} were already there{skipped}."
    )
    return 0


def generate(args: argparse.Namespace) -> int:
    from api.cli.generate import generate as run_generate

    database = database_of(args)
    bar = ProgressBar("generate")

    def show(done: int) -> None:
        bar.update(done, args.events)

    with tools(database) as t:
        recorded = run_generate(
            t.ledger,
            database,
            users=args.users,
            events=args.events,
            legacy_fraction=args.legacy_fraction,
            seed=args.seed,
            on_progress=show,
        )
        # The old-shape registrations went in by the library's own insert,
        # without their links: chain them, and what followed them.
        with database.connect() as conn:
            while chain.seal(conn, t.ledger.lock_statements, 10_000):
                pass
    seconds = time.monotonic() - bar.started
    bar.close(f"Recorded {recorded:,} events for {args.users:,} users in {seconds:.1f}s.")
    return 0


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
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
