"""How the sender reaches endpoints: HTTP/1.1 POSTs over keep-alive
connections, a few per endpoint, made only to addresses the safety policy
allows, and to the very address it checked (not a second resolution of the
name: DNS rebinding gains nothing). Redirects are never followed (a 3xx is an
answer like any other, and not a success); at most BODY_LIMIT bytes of an
answer's body are read, and a connection whose answer is longer is closed.

A webhook is one POST with a body known in advance, and all that matters of
the answer is its status, so this is a client of that and no more: a general
one (httpx, before) cost more CPU per message than the rest of the sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import certifi

from api.integrations.webhooks.safety import Policy, UnsafeUrl

#: Bytes of an answer's body read; a longer answer closes its connection.
BODY_LIMIT = 4096
#: Bytes of an answer's status line and headers read at most.
HEAD_LIMIT = 64 * 1024
#: Characters of a URL's path and query sent as they are (the rest is %-encoded).
_TARGET_SAFE = "!$&'()*+,;=:@/?%~-._[]"


class DeliveryError(Exception):
    """Why an attempt has no HTTP status: the text recorded with the attempt."""


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    used: bool = False

    @property
    def open(self) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof())

    def close(self) -> None:
        self.writer.close()


@dataclass(slots=True)
class Endpoint:
    """The connections to one URL: up to `connections` kept open between
    messages."""

    url: str
    policy: Policy
    ssl_context: ssl.SSLContext | None
    connections: int
    host: str = ""
    port: int = 0
    head: bytes = b""
    idle: list[_Connection] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.host, self.port = self.policy.check_url(self.url)
        parts = urlsplit(self.url)
        target = quote(parts.path or "/", safe=_TARGET_SAFE)
        if parts.query:
            target += "?" + quote(parts.query, safe=_TARGET_SAFE)
        netloc = parts.netloc.rpartition("@")[2]
        self.head = f"POST {target} HTTP/1.1\r\nhost: {netloc}\r\n".encode("ascii", "strict")
        if parts.scheme != "https":
            self.ssl_context = None
        elif self.ssl_context is None:
            self.ssl_context = default_ssl_context()

    async def post(self, body: bytes, headers: dict[str, str]) -> int:
        """The status of the endpoint's answer to `body`; DeliveryError if there
        is none."""
        request = b"".join(
            (
                self.head,
                f"content-length: {len(body)}\r\n".encode(),
                "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode(),
                b"\r\n",
                body,
            )
        )
        while self.idle:
            conn = self.idle.pop()
            if not conn.open:
                conn.close()
                continue
            try:
                return await self._exchange(conn, request)
            except _ClosedBeforeAnswering:
                continue  # it had closed while idle: another, or a new one
        return await self._exchange(await self._connect(), request)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            addresses = await loop.run_in_executor(None, self.policy.resolve, self.host, self.port)
        except UnsafeUrl as e:
            raise DeliveryError(f"refused: {e}") from e
        try:
            reader, writer = await asyncio.open_connection(
                addresses[0],
                self.port,
                ssl=self.ssl_context,
                server_hostname=self.host if self.ssl_context is not None else None,
                limit=HEAD_LIMIT,
            )
        except ssl.SSLError as e:
            raise DeliveryError(f"TLS: {e}") from e
        except OSError as e:
            raise DeliveryError(f"cannot connect to {self.host}:{self.port}: {e}") from e
        return _Connection(reader, writer)

    async def _exchange(self, conn: _Connection, request: bytes) -> int:
        reused, conn.used = conn.used, True
        try:
            conn.writer.write(request)
            await conn.writer.drain()
            status, reusable = await _answer(conn.reader)
        except asyncio.IncompleteReadError as e:
            conn.close()
            if reused and not e.partial:
                raise _ClosedBeforeAnswering from e
            raise DeliveryError("the endpoint closed the connection before answering") from e
        except (asyncio.LimitOverrunError, ValueError) as e:
            conn.close()
            raise DeliveryError(f"not an HTTP answer: {e}") from e
        except ssl.SSLError as e:
            conn.close()
            raise DeliveryError(f"TLS: {e}") from e
        except OSError as e:
            conn.close()
            if reused:
                raise _ClosedBeforeAnswering from e
            raise DeliveryError(f"the connection failed: {e}") from e
        except BaseException:
            conn.close()  # a timeout, say: the answer may still come, on no one's watch
            raise
        if reusable and len(self.idle) < self.connections:
            self.idle.append(conn)
        else:
            conn.close()
        return status

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class _ClosedBeforeAnswering(Exception):
    """A kept connection the endpoint had closed: the request goes on another."""


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """The status of the answer on `reader`, and whether the connection can
    carry another request (its body read to the end, within BODY_LIMIT)."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        if not version.startswith(b"HTTP/1.") or len(rest) < 3 or not rest[:3].isdigit():
            raise ValueError(lines[0][:100].decode("latin-1"))
        status = int(rest[:3])
        if 100 <= status < 200 and status != 101:
            continue  # informational: the answer follows
        break
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise ValueError(f"a header line without a colon: {line[:100]!r}")
        headers[name.strip().lower()] = value.strip().lower()
    reusable = version == b"HTTP/1.1" and headers.get(b"connection") != b"close"
    if status in (101, 204, 304):
        return status, reusable and status != 101
    if b"chunked" in headers.get(b"transfer-encoding", b""):
        return status, reusable and await _read_chunked(reader)
    length = headers.get(b"content-length")
    if length is None:
        return status, False  # the body runs to the connection's end
    size = int(length)
    if size < 0 or size > BODY_LIMIT:
        return status, False
    await reader.readexactly(size)
    return status, reusable


async def _read_chunked(reader: asyncio.StreamReader) -> bool:
    """Reads a chunked body to its end; False if it is longer than BODY_LIMIT
    (then it is left unread)."""
    read = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
            return True
        read += size
        if read > BODY_LIMIT:
            return False
        await reader.readexactly(size + 2)


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """Certificates checked against certifi's authorities, host names verified."""
    return ssl.create_default_context(cafile=certifi.where())


class Clients:
    """The connections to each endpoint, as many as its slots at most: an
    endpoint's connections are of no use to another's."""

    def __init__(
        self, policy: Policy, connections: int, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.policy = policy
        self.connections = connections
        self.ssl_context = ssl_context
        self.endpoints: dict[str, Endpoint] = {}

    def of(self, endpoint_id: str, url: str) -> Endpoint:
        """UnsafeUrl if `url` is not one the ledger sends to."""
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None or endpoint.url != url:
            if endpoint is not None:
                endpoint.close()  # its URL changed
            endpoint = Endpoint(url, self.policy, self.ssl_context, self.connections)
            self.endpoints[endpoint_id] = endpoint
        return endpoint

    async def close(self) -> None:
        for endpoint in self.endpoints.values():
            with contextlib.suppress(Exception):
                endpoint.close()
        self.endpoints.clear()
