"""How the sender reaches endpoints: an HTTP client per endpoint, connecting
only to the addresses the safety policy allows, never following redirects."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable
from typing import Any

import certifi
import httpcore
import httpx

from api.integrations.webhooks.safety import Policy, UnsafeUrl


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses the policy allows, and to the very address it
    checked (not a second resolution of the name): DNS rebinding gains nothing."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            addresses = await loop.run_in_executor(None, self.policy.resolve, host, port)
        except UnsafeUrl as e:
            raise httpcore.ConnectError(f"refused: {e}") from e
        return await self.inner.connect_tcp(
            addresses[0],
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("refused: webhooks are not sent to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, connecting through _GuardedBackend; no proxies."""

    def __init__(self, policy: Policy, *, max_connections: int = 32) -> None:
        super().__init__(trust_env=False)
        # Few connections: the pool looks at each of them for every request.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(cafile=certifi.where()),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            network_backend=_GuardedBackend(policy),
        )


class Clients:
    """An HTTP client per endpoint, with as many connections as its slots:
    httpcore looks at each connection of its pool for every request, and an
    endpoint's connections are of no use to another's."""

    def __init__(self, policy: Policy, connections: int) -> None:
        self.policy = policy
        self.connections = connections
        self.clients: dict[str, httpx.AsyncClient] = {}

    def of(self, endpoint_id: str) -> httpx.AsyncClient:
        client = self.clients.get(endpoint_id)
        if client is None:
            transport = GuardedTransport(self.policy, max_connections=self.connections)
            client = self.clients[endpoint_id] = httpx.AsyncClient(
                transport=transport, follow_redirects=False, trust_env=False
            )
        return client

    async def close(self) -> None:
        for client in self.clients.values():
            with contextlib.suppress(Exception):
                await client.aclose()
        self.clients.clear()
