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
    def held(self) -> str:
        """The state attribute (and users column) of what open holds reserve."""
        return f"{self.value}_held"

    @property
    def next_expiry(self) -> tuple[str, str]:
        """The users columns of what expires next: when, and how much."""
        return f"{self.value}_next_expiry_at", f"{self.value}_next_expiry_amount"

    @property
    def granted_total(self) -> str:
        """The state attribute counting every amount ever granted."""
        return _TOTALS[self][0]

    @property
    def spent_total(self) -> str:
        """The state attribute counting every amount ever spent."""
        return _TOTALS[self][1]

    @property
    def expired_total(self) -> str:
        """The state attribute counting every amount that ever expired."""
        return _TOTALS[self][2]

    @property
    def noun(self) -> str:
        """How a sentence names it: credits, chat messages."""
        return _SEGMENTS[self].replace("-", " ")

    @classmethod
    def of_segment(cls, segment: str) -> Balance:
        return _BY_SEGMENT[segment]


#: The balances, in order: a tuple, since iterating over the enum itself costs
#: more, and the fold and the outbox do it for every event.
BALANCES = tuple(Balance)

_SEGMENTS = {Balance.CREDITS: "credits", Balance.CHAT_MESSAGES: "chat-messages"}
_BY_SEGMENT = {segment: balance for balance, segment in _SEGMENTS.items()}
_TOTALS = {
    kind: tuple(f"{prefix}_{what}_total" for what in ("granted", "spent", "expired"))
    for kind, prefix in ((Balance.CREDITS, "credits"), (Balance.CHAT_MESSAGES, "chat_messages"))
}
