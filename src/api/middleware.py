"""The edge of every request: its id, and the body size limit, enforced before
anything parses a body. One plain ASGI layer, because each layer costs every
request."""

from __future__ import annotations

import os

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import MEDIA_TYPE, problem_bytes

MAX_BODY_BYTES = 64 * 1024
REQUEST_ID_KEY = "ledger.request_id"
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


class Edge:
    """Gives each request an id (returned in X-Request-Id), and refuses a body
    over `max_bytes` with 413: at once if Content-Length says so, else as soon
    as the bytes received pass the limit. The body, read whole, is handed to
    the app as one message."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope[REQUEST_ID_KEY] = request_id
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await self._refuse(send_with_id)
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
                await self._refuse(send_with_id)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break

        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_id)

    async def _refuse(self, send: Send) -> None:
        detail = f"the body is larger than {self.max_bytes // 1024} KiB"
        content = problem_bytes(413, "payload-too-large", "Payload too large", detail)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", MEDIA_TYPE.encode()),
                    (b"content-length", str(len(content)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})
