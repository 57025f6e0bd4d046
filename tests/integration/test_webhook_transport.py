"""The sender's HTTP client against real servers on 127.0.0.1 that answer as
each test scripts them: keep-alive reuse, every way an answer's body can end,
redirects not followed, answers that are not HTTP, a kept connection closed by
the endpoint, and TLS."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from api.integrations.webhooks.safety import Policy
from api.integrations.webhooks.transport import BODY_LIMIT, Clients, DeliveryError

OPEN = Policy(allow_http=True, allow_private=True)

#: What a scripted server does with one request: the bytes it answers
#: (None: it closes the connection without answering).
Script = Callable[[bytes, int], bytes | None]


@dataclass
class Server:
    script: Script
    ssl_context: ssl.SSLContext | None = None
    close_after: bool = False  # each answer
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    port: int = 0

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = self.script(request, len(self.requests))
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Server]:
        server = await asyncio.start_server(self._client, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self

    def url(self, path: str = "/hooks", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


def ok(body: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


async def post(clients: Clients, url: str, body: bytes = b'{"a":1}') -> int:
    return await clients.of("ep", url).post(body, {"webhook-id": "msg_1"})


def test_one_connection_carries_message_after_message() -> None:
    async def test() -> None:
        async with Server(lambda request, n: ok(b"thanks")).serving() as server:
            clients = Clients(OPEN, 4)
            for _ in range(5):
                assert await post(clients, server.url("/hooks?x=1")) == 200
            assert server.connections == 1
            head, _, body = server.requests[0].partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            assert lines[0] == b"POST /hooks?x=1 HTTP/1.1"
            assert f"host: 127.0.0.1:{server.port}".encode() in lines
            assert b"content-length: 7" in lines and b"webhook-id: msg_1" in lines
            assert body == b'{"a":1}'
            await clients.close()

    run(test)


@pytest.mark.parametrize(
    ("answer", "kept"),
    [
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nokay\r\n0\r\n\r\n", True),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\n0\r\nx-trailer: 1\r\n\r\n",
            True,
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (BODY_LIMIT + 1), False),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
            % (BODY_LIMIT + 1, b"x" * (BODY_LIMIT + 1)),
            False,
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", True),
    ],
    ids=[
        "chunked",
        "chunked-with-extension-and-trailer",
        "no-content",
        "connection-close",
        "http-1.0",
        "too-long",
        "chunked-too-long",
        "continue-then-ok",
    ],
)
def test_a_connection_is_kept_only_when_its_answer_was_read_to_the_end(
    answer: bytes, kept: bool
) -> None:
    async def test() -> None:
        async with Server(lambda request, n: answer).serving() as server:
            clients = Clients(OPEN, 4)
            assert await post(clients, server.url()) in (200, 204)
            assert await post(clients, server.url()) in (200, 204)
            assert server.connections == (1 if kept else 2)
            await clients.close()

    run(test)


def test_an_answer_without_a_length_is_its_status_and_the_connection_is_closed() -> None:
    async def test() -> None:
        async with Server(lambda request, n: b"HTTP/1.1 202 Accepted\r\n\r\nsome").serving() as s:
            clients = Clients(OPEN, 4)
            assert await post(clients, s.url()) == 202
            assert await post(clients, s.url()) == 202
            assert s.connections == 2
            await clients.close()

    run(test)


def test_a_redirect_is_an_answer_and_is_not_followed() -> None:
    async def test() -> None:
        async with Server(lambda request, n: ok()).serving() as elsewhere:

            def redirect(request: bytes, n: int) -> bytes:
                return (
                    b"HTTP/1.1 307 Temporary Redirect\r\nlocation: %s\r\ncontent-length: 0\r\n\r\n"
                    % (elsewhere.url().encode())
                )

            async with Server(redirect).serving() as server:
                clients = Clients(OPEN, 4)
                assert await post(clients, server.url()) == 307
                assert elsewhere.requests == []
                await clients.close()

    run(test)


@pytest.mark.parametrize("idle", [0.0, 0.05], ids=["at-once", "after-a-while"])
def test_a_kept_connection_the_endpoint_closed_is_replaced_without_an_error(idle: float) -> None:
    async def test() -> None:
        # Each connection answers once, as if it would carry more, and is closed.
        async with Server(lambda request, n: ok(), close_after=True).serving() as server:
            clients = Clients(OPEN, 4)
            assert await post(clients, server.url()) == 200
            await asyncio.sleep(idle)
            assert await post(clients, server.url()) == 200
            assert await post(clients, server.url()) == 200
            assert server.connections == 3
            await clients.close()

    run(test)


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"SMTP ready\r\n\r\n", "not an HTTP answer"),
        (b"HTTP/1.1 abc\r\n\r\n", "not an HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "not an HTTP answer"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: many\r\n\r\n", "not an HTTP answer"),
        (None, "closed the connection before answering"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", "closed the connection"),
    ],
    ids=["not-http", "no-status", "bad-header", "bad-length", "no-answer", "cut-short"],
)
def test_an_answer_that_is_not_one_is_an_error_saying_so(answer: bytes | None, why: str) -> None:
    async def test() -> None:
        def script(request: bytes, n: int) -> bytes | None:
            return answer

        async with Server(script, close_after=True).serving() as server:
            clients = Clients(OPEN, 4)
            with pytest.raises(DeliveryError, match=why):
                await post(clients, server.url())
            await clients.close()

    run(test)


def test_an_address_the_policy_refuses_is_not_connected_to() -> None:
    async def test() -> None:
        async with Server(lambda request, n: ok()).serving() as server:
            clients = Clients(Policy(allow_http=True, allow_private=False), 4)
            with pytest.raises(DeliveryError, match=r"refused: 127\.0\.0\.1 resolves to"):
                await post(clients, server.url())
            assert server.connections == 0
            await clients.close()

    run(test)


def test_nothing_listening_is_an_error_naming_the_address() -> None:
    async def test() -> None:
        async with Server(lambda request, n: ok()).serving() as server:
            port = server.port
        clients = Clients(OPEN, 4)
        with pytest.raises(DeliveryError, match=rf"cannot connect to 127\.0\.0\.1:{port}"):
            await post(clients, f"http://127.0.0.1:{port}/hooks")

    run(test)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_is_sent_over_tls_with_the_certificate_checked(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    async def test() -> None:
        async with Server(lambda request, n: ok(), ssl_context=served).serving() as server:
            url = server.url(scheme="https")
            clients = Clients(OPEN, 4, ssl_context=trusting)
            assert await post(clients, url) == 200
            assert await post(clients, url) == 200
            assert server.connections == 1
            await clients.close()
            # Certifi's authorities do not know this certificate: no message is sent.
            with pytest.raises(DeliveryError, match=r"TLS: .*CERTIFICATE_VERIFY_FAILED"):
                await post(Clients(OPEN, 4), url)
            assert len(server.requests) == 2

    run(test)
