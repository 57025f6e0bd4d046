"""The two balances a user holds, as one typed kind rather than strings."""

from __future__ import annotations

from enum import StrEnum


class Balance(StrEnum):
    """A balance: its value is the state attribute (and users column) that holds
    it; `segment` is how the API's paths name it."""

    CREDITS = "free_credits"
    CHAT_MESSAGES = "free_chat_messages"

    @property
    def segment(self) -> str:
        return _SEGMENTS[self]

    @property
    def granted_total(self) -> str:
        """The state attribute counting every amount ever granted."""
        return _TOTALS[self][0]

    @property
    def spent_total(self) -> str:
        """The state attribute counting every amount ever spent."""
        return _TOTALS[self][1]

    @classmethod
    def of_segment(cls, segment: str) -> Balance:
        return _BY_SEGMENT[segment]


_SEGMENTS = {Balance.CREDITS: "credits", Balance.CHAT_MESSAGES: "chat-messages"}
_BY_SEGMENT = {segment: balance for balance, segment in _SEGMENTS.items()}
_TOTALS = {
    Balance.CREDITS: ("credits_granted_total", "credits_spent_total"),
    Balance.CHAT_MESSAGES: ("chat_messages_granted_total", "chat_messages_spent_total"),
}
