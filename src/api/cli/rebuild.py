"""`ledger rebuild`: the users table rebuilt from history and swapped in."""

from __future__ import annotations

import argparse

from api.bootstrap import tools
from api.cli.common import EXIT_CANNOT, Subparsers, database_of
from api.cli.progress import ProgressBar
from projections.rebuild import Rebuild, RebuildError
from projections.rebuild_progress import Progress


def rebuild(args: argparse.Namespace) -> int:
    database = database_of(args)
    bar = ProgressBar("rebuild")

    def show(progress: Progress) -> None:
        bar.update(progress.events, max(progress.target, progress.events), note=progress.phase)

    try:
        with tools(database) as t:
            result = Rebuild(database, t.ledger, on_progress=show).run()
    except RebuildError as e:
        bar.close(f"rebuild failed: {e}", failed=True)
        return EXIT_CANNOT
    bar.close(
        f"Rebuilt users (version {result.version}): {result.users:,} users from "
        f"{result.events:,} events in {result.seconds:.1f}s "
        f"({result.events_per_second:,.0f} events/s); live at position {result.position:,}."
    )
    return 0


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "rebuild", parents=[common], help="rebuild the users table from history and swap it in"
    )
    p.set_defaults(run=rebuild)
