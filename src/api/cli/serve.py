"""`ledger serve` (the API and its projector process) and `ledger project`."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from api.bootstrap import build_services, keyring, stripe_webhook
from api.cli.common import EXIT_USAGE, Subparsers, database_of, settings_of
from api.http.metrics import MULTIPROCESS_DIR
from api.integrations.catalog import CatalogError
from api.supervisor import ProjectorProcess, run_projector, stop_on_signals


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.http.app import create_app

    settings = settings_of(args)
    for name in ("host", "port", "workers"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    if args.no_projector:
        settings.projector = False
    try:
        stripe_webhook(settings)  # checked before anything starts: again in each worker
    except CatalogError as e:
        print(f"ledger: {e}", file=sys.stderr)
        return EXIT_USAGE
    database = database_of(args)
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
                    "api.http.app:app_from_env", factory=True, workers=settings.workers, **common
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
    settings = settings_of(args)
    database = database_of(args)
    stop = stop_on_signals()
    print(f"Projecting into the users table of {database.name}; Ctrl-C stops.", flush=True)
    run_projector(database, settings, stop)
    return 0


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
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
