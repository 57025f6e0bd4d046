"""A real HTTP receiver of webhooks on 127.0.0.1, for the tests: it keeps what
arrives (headers and the raw body, whatever the method), answers as a test
tells it (a status, a delay, headers), and can be stopped and started again on
the same port."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import orjson
from standardwebhooks import Webhook

from api.integrations.webhooks import signing
from ledger.db import Database
from projections.webhooks import endpoints_table
from tests.helpers import MovableClock, free_port, rows

if TYPE_CHECKING:
    from tests.e2e.conftest import Api


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time()
    status: int = 0  # what it was answered
    method: str = "POST"

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def payload(self) -> dict[str, Any]:
        return dict(orjson.loads(self.body))

    @property
    def type(self) -> str:
        return str(self.payload["type"])

    def verified_by(self, secret: str) -> bool:
        try:
            Webhook(secret).verify(self.body, self.headers)
        except Exception:
            return False
        return True


#: How a path answers: (status, seconds to wait first).
Answer = Callable[[Received], tuple[int, float]]


class Receiver:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[Received] = []
        self.answers: dict[str, Answer] = {}
        self.answer_headers: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, answer: Answer, headers: dict[str, str] | None = None) -> None:
        self.answers[path] = answer
        self.answer_headers[path] = headers or {}

    def at(self, path: str, status: int | None = None) -> list[Received]:
        """What arrived at `path` (answered `status`, if given), in order of arrival."""
        with self._lock:
            return [
                r
                for r in self.received
                if r.path == path and (status is None or r.status == status)
            ]

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # the sender went away mid-request: nothing was delivered
                headers = {k.lower(): v for k, v in self.headers.items()}
                got = Received(self.path, headers, body, time.time(), method=self.command)
                answer = receiver.answers.get(self.path, lambda _: (200, 0.0))
                status, delay = answer(got)
                with receiver._lock:
                    receiver.received.append(dataclasses.replace(got, status=status))
                if delay:
                    time.sleep(delay)
                with contextlib.suppress(OSError):  # the sender gave up, or was killed
                    self.send_response(status)
                    for name, value in receiver.answer_headers.get(self.path, {}).items():
                        self.send_header(name, value)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")

            do_GET = do_PUT = do_POST  # a redirect followed would be seen

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def sending_here(clock: MovableClock, timeout_seconds: int = 1) -> dict[str, str]:
    """A served ledger's settings for sending to a receiver on 127.0.0.1 over
    http, on a clock the tests move."""
    assert clock.path is not None
    return {
        "LEDGER_WEBHOOKS_ALLOW_HTTP": "1",
        "LEDGER_WEBHOOKS_ALLOW_PRIVATE": "1",
        "LEDGER_WEBHOOKS_TIMEOUT_SECONDS": str(timeout_seconds),
        "LEDGER_CLOCK_OFFSET_FILE": str(clock.path),
    }


def deliveries(api: Api, endpoint_id: str, **params: Any) -> list[dict[str, Any]]:
    page = api.json(api.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", params=params))
    return list(page["items"])


def attempts(api: Api, endpoint_id: str) -> int:
    """How many attempts the endpoint's deliveries have recorded, in all."""
    return sum(len(d["attempts"]) for d in deliveries(api, endpoint_id))


def add_endpoint(database: Database, url: str, **fields: Any) -> dict[str, Any]:
    """An endpoint, as the API stores one (no check of its URL: as if its name
    resolved elsewhere when it was created)."""
    values = {
        "id": f"ep_{len(rows(database, 'SELECT id FROM ledger_webhook_endpoints'))}",
        "url": url,
        "event_types": ["*"],
        "description": None,
        "low_balance_threshold": None,
        "secret": signing.new_secret(),
        "created_position": 0,
        **fields,
    }
    with database.connect() as conn:
        conn.execute(endpoints_table.INSERT, values)
    return values
