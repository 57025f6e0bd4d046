"""API keys and roles. Keys are compared in constant time and never logged;
events record a key's id, never the key."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path


class Role(IntEnum):
    """Ordered: each role can do what the ones below it can."""

    READER = 1
    SERVICE = 2
    ADMIN = 3


@dataclass(frozen=True, slots=True)
class Principal:
    role: Role
    key_id: str

    @property
    def role_name(self) -> str:
        return self.role.name.lower()


def key_id(key: str) -> str:
    """A short, stable, non-secret name for a key."""
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:12]


class InvalidKeys(ValueError):
    pass


class Keyring:
    def __init__(self, keys: dict[str, Role]) -> None:
        if not keys:
            raise InvalidKeys("no API keys")
        self._keys = [(key.encode(), Principal(role, key_id(key))) for key, role in keys.items()]

    @classmethod
    def parse(cls, spec: str) -> Keyring:
        """`role:key,role:key`, roles admin, service, reader."""
        keys: dict[str, Role] = {}
        for item in spec.split(","):
            role_name, sep, key = item.strip().partition(":")
            if not sep or not key:
                raise InvalidKeys("LEDGER_API_KEYS is a comma-separated list of role:key")
            try:
                role = Role[role_name.strip().upper()]
            except KeyError:
                raise InvalidKeys(
                    f"unknown role {role_name!r} in LEDGER_API_KEYS (admin, service, reader)"
                ) from None
            keys[key.strip()] = role
        return cls(keys)

    def identify(self, presented: str) -> Principal | None:
        """The principal whose key this is. Compares against every key, so the
        time taken does not say which (or whether one) matched."""
        candidate = presented.encode()
        found: Principal | None = None
        for key, principal in self._keys:
            if hmac.compare_digest(key, candidate):
                found = principal
        return found


def generated_admin_key(home: Path) -> tuple[str, bool]:
    """The admin key kept in `home`, made on first use. Returns (key, created)."""
    path = home / "admin-api-key"
    if path.exists():
        return path.read_text().strip(), False
    home.mkdir(parents=True, exist_ok=True)
    key = "ledger_admin_" + secrets.token_urlsafe(24)
    draft = home / f".admin-api-key.{os.getpid()}"
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    try:
        os.link(draft, path)  # atomic, and fails if another process got there first
    except FileExistsError:
        return path.read_text().strip(), False
    finally:
        draft.unlink()
    return key, True
