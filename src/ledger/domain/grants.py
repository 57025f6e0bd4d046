"""Grants (lots): every addition to a balance, and the one rule that consumes them.

A grant's amount is always accounted for: what `remaining` is available, what
is `held` by open holds, what was `spent`, what `expired`. Spends, holds and
settles all take from grants in one order (`order`): lowest priority first,
then the soonest expiry (grants that never expire last), then the oldest. A
user's state keeps its grants in that order (`added`, `in_order`), so that a
draw takes them as they come.
Credits given back (a release, an expired hold, a settle below the hold) go
back to the grants they came from; a part that comes back to a grant past its
expiry expires at once.

A purchase's grant can be clawed back (a refund, a lost dispute): from its
remainder at once, and from what its holds hold as they give it back (`owed`:
taken instead of returned); `clawed_back` counts what was taken so.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from ledger.domain.balance import BALANCES, Balance

DEFAULT_PRIORITY = 50
MIN_PRIORITY = 0
MAX_PRIORITY = 100


class Source(StrEnum):
    REGISTRATION = "registration"
    IMPORT = "import"
    GRANT = "grant"
    ALLOWANCE = "allowance"
    PURCHASE = "purchase"


class Grant(NamedTuple):
    id: str
    balance: Balance
    amount: int
    remaining: int
    priority: int
    expires_at: datetime | None
    granted_at: datetime
    source: str
    reason: str | None
    held: int = 0
    spent: int = 0
    expired: int = 0
    #: Taken back by refunds and disputes of the purchase that made it.
    clawed_back: int = 0
    #: Of `held`, what is to be taken back when its holds give it back.
    owed: int = 0

    @property
    def status(self) -> str:
        """active (something left, or held), used (all spent), expired (the
        rest expired)."""
        if self.remaining or self.held:
            return "active"
        return "expired" if self.expired else "used"

    def usable(self, now: datetime) -> bool:
        """Whether its remainder can be spent or held at `now`."""
        return self.remaining > 0 and (self.expires_at is None or self.expires_at > now)

    def expired_by(self, moment: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= moment


#: (grant id, amount): what an event took from, or gave back to, each grant.
Part = tuple[str, int]


def grant_id(user_id: str, version: int, balance: Balance | None = None) -> str:
    """The id of the grant made by the event at `version` of a user's stream
    (an opening event makes one of each balance): stable, so that every replay
    names a grant the same, old histories included."""
    return derived_id(user_id, str(version), *([balance.value] if balance is not None else []))


def derived_id(*names: str) -> str:
    """A grant id made from names that say which grant it is."""
    return "grant_" + hashlib.sha256("/".join(names).encode()).hexdigest()[:20]


def order(grant: Grant) -> tuple[int, bool, datetime | None, datetime, str]:
    """The consumption order: priority, then soonest expiry (none last), then oldest."""
    return (grant.priority, grant.expires_at is None, grant.expires_at, grant.granted_at, grant.id)


def available(grants: Iterable[Grant], balance: Balance, now: datetime) -> int:
    return sum(g.remaining for g in grants if g.balance is balance and g.usable(now))


def kept(grants: Iterable[Grant]) -> tuple[Grant, ...]:
    """The grants a user's state keeps: those active, and those of which what
    was clawed back could be given back (a dispute reinstated). (A list
    first, quicker to build than from a generator: every event starts here.)"""
    return tuple([g for g in grants if g.remaining or g.held or g.clawed_back > 0])


def in_order(grants: Iterable[Grant]) -> tuple[Grant, ...]:
    """`grants` in the consumption order, as a state keeps them."""
    return tuple(sorted(grants, key=order))


def added(grants: tuple[Grant, ...], grant: Grant) -> tuple[Grant, ...]:
    """`grants` (in the consumption order) with `grant` in its place among them."""
    place = bisect.bisect_right(grants, order(grant), key=order)
    return (*grants[:place], grant, *grants[place:])


def draw(grants: Iterable[Grant], balance: Balance, amount: int, now: datetime) -> list[Part]:
    """Which grants `amount` comes from, in the consumption order; ValueError
    if they hold less. `grants` are in that order, as a state keeps them:
    every spend and hold draws, and most from the first grant they meet."""
    parts: list[Part] = []
    left = amount
    for g in grants:
        if g.balance is not balance or not g.remaining:
            continue
        if g.expires_at is not None and g.expires_at <= now:
            continue
        take = g.remaining if g.remaining < left else left
        parts.append((g.id, take))
        left -= take
        if not left:
            return parts
    raise ValueError(f"{amount} is more than the grants hold")


def draw_held(
    grants: Iterable[Grant], held: Sequence[Part], amount: int
) -> tuple[list[Part], list[Part]]:
    """A settle of `amount` out of a hold's parts: which of them are spent (in
    the consumption order) and which go back, in the hold's own order."""
    by_id = {g.id: g for g in grants}
    spent: dict[str, int] = {}
    left = amount
    for grant_id_, part in sorted(held, key=lambda p: order(by_id[p[0]])):
        take = min(part, left)
        if take:
            spent[grant_id_] = take
            left -= take
    back = [(g, part - spent.get(g, 0)) for g, part in held if part - spent.get(g, 0)]
    return [(g, spent[g]) for g, _ in held if g in spent], back


def _changed(grants: tuple[Grant, ...], changes: dict[str, Grant]) -> tuple[Grant, ...]:
    return tuple([changes.get(g.id, g) for g in grants])


def take(grants: tuple[Grant, ...], parts: Sequence[Part], *, hold: bool) -> tuple[Grant, ...]:
    """Take `parts` from the grants' remainders: into `held` (a hold) or `spent`.
    (Each part's grant found by its place and replaced there: most spends and
    holds take from one grant, one of the first.)"""
    changed = list(grants)
    for grant_id_, amount in parts:
        place = next((i for i, g in enumerate(changed) if g.id == grant_id_), None)
        if place is None:
            raise ValueError(f"no grant {grant_id_}")
        g = changed[place]
        if not 0 < amount <= g.remaining:
            raise ValueError(f"cannot take {amount} from {grant_id_}, which has {g.remaining}")
        if hold:
            changed[place] = g._replace(remaining=g.remaining - amount, held=g.held + amount)
        else:
            changed[place] = g._replace(remaining=g.remaining - amount, spent=g.spent + amount)
    return tuple(changed)


def spend_held(grants: tuple[Grant, ...], parts: Sequence[Part]) -> tuple[Grant, ...]:
    """Spend `parts` out of what the grants hold for a hold."""
    by_id = {g.id: g for g in grants}
    changes: dict[str, Grant] = {}
    for grant_id_, amount in parts:
        g = changes.get(grant_id_) or by_id[grant_id_]
        if not 0 < amount <= g.held:
            raise ValueError(f"cannot spend {amount} held of {grant_id_}, which holds {g.held}")
        # What was owed of a part spent will never come back: it is no longer owed.
        held = g.held - amount
        changes[grant_id_] = g._replace(held=held, spent=g.spent + amount, owed=min(g.owed, held))
    return _changed(grants, changes)


def give_back(
    grants: tuple[Grant, ...], parts: Sequence[Part], moment: datetime
) -> tuple[tuple[Grant, ...], int]:
    """Give held `parts` back to their grants at `moment`: what a grant owes
    is taken back first, and what comes back to a grant past its expiry
    expires at once. Returns the grants and how much expired so."""
    by_id = {g.id: g for g in grants}
    changes: dict[str, Grant] = {}
    expired = 0
    for grant_id_, amount in parts:
        g = changes.get(grant_id_) or by_id[grant_id_]
        if not 0 < amount <= g.held:
            raise ValueError(f"cannot give {amount} back to {grant_id_}, which holds {g.held}")
        owed = min(amount, g.owed)
        g = g._replace(held=g.held - amount, owed=g.owed - owed, clawed_back=g.clawed_back + owed)
        g, lapsed = _returned(g, amount - owed, moment)
        changes[grant_id_] = g
        expired += lapsed
    return _changed(grants, changes), expired


def _returned(g: Grant, amount: int, moment: datetime) -> tuple[Grant, int]:
    """`amount` back to a grant's remainder at `moment` (expired at once past its
    expiry); and how much expired so."""
    if not amount:
        return g, 0
    if g.expired_by(moment):
        return g._replace(expired=g.expired + amount), amount
    return g._replace(remaining=g.remaining + amount), 0


def clawback(grant: Grant | None, claim: int) -> tuple[int, int, int]:
    """How a claim of `claim` back from a grant is met: (taken from its
    remainder now, owed out of what it holds, short: what it no longer has)."""
    if grant is None:
        return 0, 0, claim
    taken = min(claim, grant.remaining)
    owed = min(claim - taken, grant.held - grant.owed)
    return taken, owed, claim - taken - owed


def claw_back(
    grants: tuple[Grant, ...], grant_id_: str, taken: int, owed: int
) -> tuple[Grant, ...]:
    """Take `taken` of a grant's remainder back now, and `owed` more as its
    holds give it back."""
    g = next((g for g in grants if g.id == grant_id_), None)
    if g is None or not (0 <= taken <= g.remaining and 0 <= owed <= g.held - g.owed):
        raise ValueError(f"cannot claw {taken} and {owed} held back from {grant_id_}")
    changed = g._replace(
        remaining=g.remaining - taken, clawed_back=g.clawed_back + taken, owed=g.owed + owed
    )
    return _changed(grants, {g.id: changed})


def give_back_clawed(
    grants: tuple[Grant, ...], grant_id_: str, amount: int, moment: datetime
) -> tuple[tuple[Grant, ...], int]:
    """Give `amount` of what was clawed back from a grant back at `moment`:
    what it owes first (never taken), then what was taken, to its remainder
    (expired at once past its expiry). Returns the grants and how much expired."""
    g = next((g for g in grants if g.id == grant_id_), None)
    if g is None or not 0 <= amount <= g.owed + g.clawed_back:
        raise ValueError(f"cannot give {amount} clawed back to {grant_id_}")
    owed = min(amount, g.owed)
    g = g._replace(owed=g.owed - owed, clawed_back=g.clawed_back - (amount - owed))
    g, expired = _returned(g, amount - owed, moment)
    return _changed(grants, {g.id: g}), expired


def expire(
    grants: tuple[Grant, ...], grant_id_: str, amount: int, moment: datetime
) -> tuple[Grant, ...]:
    """A grant's remainder expires at `moment`, and so does whatever comes back
    to it later (it expires at `moment`, if not before)."""
    g = next((g for g in grants if g.id == grant_id_), None)
    if g is None or not 0 < amount <= g.remaining:
        raise ValueError(f"cannot expire {amount} of {grant_id_}")
    expires_at = moment if g.expires_at is None or g.expires_at > moment else g.expires_at
    expired = g._replace(remaining=0, expired=g.expired + amount, expires_at=expires_at)
    changed = _changed(grants, {g.id: expired})
    # An earlier expiry moves the grant in the order.
    return changed if expires_at == g.expires_at else in_order(changed)


#: Each balance's next expiry (when a remainder of it expires next, and how
#: much then; None, None when nothing will), in BALANCES' order.
Expiring = tuple[tuple[datetime | None, int | None], ...]
NOTHING_EXPIRING: Expiring = tuple((None, None) for _ in BALANCES)


def summed(grants: Iterable[Grant]) -> tuple[int, int, Expiring]:
    """What remains of the grants of credits and of chat messages, and each
    balance's next expiry, in one pass: the fold sums them per event, and a
    state keeps them (an answer and a users row read them there). (One branch
    per balance, in locals: indexing lists by balance took twice as long.)"""
    credits = messages = 0
    credits_at = messages_at = None
    credits_expiring = messages_expiring = 0
    for g in grants:
        remaining = g.remaining
        if not remaining:
            continue
        at = g.expires_at
        if g.balance is _CREDITS:
            credits += remaining
            if at is not None:
                if credits_at is None or at < credits_at:
                    credits_at, credits_expiring = at, remaining
                elif at == credits_at:
                    credits_expiring += remaining
        else:
            messages += remaining
            if at is not None:
                if messages_at is None or at < messages_at:
                    messages_at, messages_expiring = at, remaining
                elif at == messages_at:
                    messages_expiring += remaining
    pairs = (
        (credits_at, credits_expiring if credits_at is not None else None),
        (messages_at, messages_expiring if messages_at is not None else None),
    )
    return credits, messages, tuple(pairs[i] for i in _PLACES)


_CREDITS = Balance.CREDITS
#: Where each of BALANCES is in `summed`'s pairs.
_PLACES = tuple(0 if kind is _CREDITS else 1 for kind in BALANCES)
