"""A real HTTP receiver of webhooks on 127.0.0.1, for the tests: it keeps what
arrives (headers and the raw body), answers as a test tells it (a status, a
delay), and can be stopped and started again on the same port."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from standardwebhooks import Webhook

from tests.helpers import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time()
    status: int = 0  # what it was answered

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
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, answer: Answer) -> None:
        self.answers[path] = answer

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
                got = Received(self.path, headers, body, time.time())
                answer = receiver.answers.get(self.path, lambda _: (200, 0.0))
                status, delay = answer(got)
                with receiver._lock:
                    receiver.received.append(dataclasses.replace(got, status=status))
                if delay:
                    time.sleep(delay)
                with contextlib.suppress(OSError):  # the sender gave up, or was killed
                    self.send_response(status)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")

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
