"""Where the ledger may send: `https` URLs (or `http` when allowed) of hosts
that resolve to public addresses only (unless private ones are allowed), so
that an endpoint cannot make the ledger reach into its own network. Checked
when an endpoint is created or changed, and again at every connection
(api.integrations.webhooks.sender), against a name that resolves elsewhere
since (DNS rebinding): the sender connects to the very address checked."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048


class UnsafeUrl(ValueError):
    """A URL the ledger will not send to, and why."""


@dataclass(frozen=True, slots=True)
class Policy:
    allow_http: bool = False
    allow_private: bool = False

    def check_url(self, url: str) -> tuple[str, int]:
        """The URL's host and port, if its form is one the ledger sends to."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise UnsafeUrl(f"not a URL: {e}") from e
        schemes = ("https", "http") if self.allow_http else ("https",)
        if parts.scheme not in schemes:
            allowed = " or ".join(schemes)
            raise UnsafeUrl(f"the URL must be {allowed} (LEDGER_WEBHOOKS_ALLOW_HTTP=1 allows http)")
        if not parts.hostname:
            raise UnsafeUrl("the URL has no host")
        if parts.username is not None or parts.password is not None:
            raise UnsafeUrl("the URL may not carry a user name or password")
        if parts.fragment:
            raise UnsafeUrl("the URL may not have a fragment")
        return parts.hostname, port or (443 if parts.scheme == "https" else 80)

    def check_address(self, host: str, address: str) -> None:
        """Refuse an address that is not public (unless private ones are allowed)."""
        if self.allow_private:
            return
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if (
            ip.is_loopback
            or ip.is_private
            or ip.is_link_local
            or ip.is_multicast
            or ip.is_reserved
            or ip.is_unspecified
            or not ip.is_global
        ):
            raise UnsafeUrl(
                f"{host} resolves to {ip}, a loopback, private, link-local or multicast "
                "address (LEDGER_WEBHOOKS_ALLOW_PRIVATE=1 allows them)"
            )

    def resolve(self, host: str, port: int) -> list[str]:
        """Every address `host` resolves to, each checked; UnsafeUrl if any is refused
        or the name does not resolve."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as e:
            raise UnsafeUrl(f"{host} does not resolve: {e}") from e
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise UnsafeUrl(f"{host} does not resolve")
        for address in addresses:
            self.check_address(host, address)
        return addresses

    def check(self, url: str) -> None:
        """The whole check, as an endpoint is created or changed: a name that
        takes longer than RESOLVE_SECONDS to resolve is refused."""
        host, port = self.check_url(url)
        lookup = _RESOLVERS.submit(self.resolve, host, port)
        try:
            lookup.result(timeout=RESOLVE_SECONDS)
        except concurrent.futures.TimeoutError as e:
            raise UnsafeUrl(f"{host} did not resolve within {RESOLVE_SECONDS} s") from e


#: Seconds a name may take to resolve when an endpoint is created or changed.
RESOLVE_SECONDS = 5
#: Resolutions run here, so that a slow resolver keeps no request waiting long.
_RESOLVERS = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="ledger-resolve")
