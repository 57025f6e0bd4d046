"""The users a writer has met recently, so that a batch need not read them again."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from ledger.domain import User


class UserCache:
    """Recently used users, least recently used evicted first. Only a shortcut:
    every batch reads what other processes appended since."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._users: OrderedDict[str, User] = OrderedDict()

    def get(self, user_id: str) -> User | None:
        user = self._users.get(user_id)
        if user is not None:
            self._users.move_to_end(user_id)
        return user

    def peek(self, user_id: str) -> User | None:
        """The user if held, leaving the order of eviction as it is."""
        return self._users.get(user_id)

    def put(self, user: User) -> None:
        self._users[user.id] = user
        self._users.move_to_end(user.id)
        while len(self._users) > self._size:
            self._users.popitem(last=False)

    def evict(self, user_ids: Iterable[str]) -> None:
        for user_id in user_ids:
            self._users.pop(user_id, None)
