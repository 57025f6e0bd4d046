"""The edge of every request: its id, its API key, and the body size limit, all
checked before anything parses a body. One plain ASGI layer, because each layer
costs every request."""

from __future__ import annotations

import os

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.http.direct import DirectRoutes
from api.http.problems import MEDIA_TYPE, problem_bytes
from api.keys import Keyring

MAX_BODY_BYTES = 64 * 1024
REQUEST_ID_KEY = "ledger.request_id"
PRINCIPAL_KEY = "ledger.principal"
#: Everything under it needs an API key; health, metrics and the docs do not.
PROTECTED_PREFIX = "/v1/"
#: Under it, but with no key: Stripe signs its deliveries instead (api.integrations.stripe).
STRIPE_WEBHOOK_PATH = "/v1/stripe/webhook"
_MAX_REQUEST_ID = 128


def _request_id(scope: Scope) -> str:
    """The caller's X-Request-Id if it is printable ASCII of at most 128
    characters, else a new one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if 0 < len(value) <= _MAX_REQUEST_ID and all(0x21 <= b <= 0x7E for b in value):
                return str(value.decode())
            break
    return "req_" + os.urandom(12).hex()


def _bearer_key(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            return key.strip() or None if scheme.lower() == "bearer" else None
    return None


def _holds_nul(scope: Scope) -> bool:
    """Whether the path or the query holds a NUL character: no parameter may
    (PostgreSQL's text cannot hold one), so no route need look for it."""
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope["path"] or b"%00" in query or b"\x00" in query


class Edge:
    """Gives each request an id (returned in X-Request-Id); answers 401 to a
    request under /v1/ (but Stripe's webhook) without a known API key,
    whatever else is wrong with it;
    refuses a NUL character in its path or query with 422;
    and refuses a body over `max_bytes` with 413: at once if Content-Length
    says so, else as soon as the bytes received pass the limit. The body, read
    whole, is handed to the route: called here if it is one of `direct` and
    the request is in order (api.http.direct), else to the app as one message.
    Which role a route needs is the route's own business (api.deps)."""

    def __init__(
        self,
        app: ASGIApp,
        keyring: Keyring,
        direct: DirectRoutes | None = None,
        max_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.keyring = keyring
        self.direct = direct
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope[REQUEST_ID_KEY] = request_id
        id_header = (b"x-request-id", request_id.encode())

        async def send_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        path = scope["path"]
        if path.startswith(PROTECTED_PREFIX) and path != STRIPE_WEBHOOK_PATH:
            key = _bearer_key(scope)
            principal = self.keyring.identify(key) if key else None
            if principal is None:
                detail = (
                    "unknown API key" if key else "send an API key: Authorization: Bearer <key>"
                )
                await _respond(
                    send_id,
                    401,
                    "unauthorized",
                    "Unauthorized",
                    detail,
                    [(b"www-authenticate", b"Bearer")],
                )
                return
            scope[PRINCIPAL_KEY] = principal

        if _holds_nul(scope):
            detail = "a path or query parameter holds a NUL character (%00)"
            await _respond(send_id, 422, "validation-error", "Invalid request", detail, [])
            return

        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await self._refuse(send_id)
                    return
                break

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send_id)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break

        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        direct = self.direct
        if direct is not None and await direct.serve(scope, _replay(body, receive), send_id, body):
            return
        await self.app(scope, _replay(body, receive), send_id)

    async def _refuse(self, send: Send) -> None:
        detail = f"the body is larger than {self.max_bytes // 1024} KiB"
        await _respond(
            send, 413, "payload-too-large", "Payload too large", detail, [(b"connection", b"close")]
        )


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands over the body, read whole, as one message."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _respond(
    send: Send,
    status: int,
    type_: str,
    title: str,
    detail: str,
    headers: list[tuple[bytes, bytes]],
) -> None:
    content = problem_bytes(status, type_, title, detail)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", MEDIA_TYPE.encode()),
                (b"content-length", str(len(content)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})
