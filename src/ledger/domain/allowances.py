"""Allowances: a balance reset to an amount every period (unused amounts do not
accumulate). Periods are computed in UTC from the anchor: days and weeks by
their length, months by the calendar, the anchor's day clamped to the month's
end (anchored on the 31st: Feb 28 or 29, Apr 30, then Mar 31 again)."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

from ledger.domain.balance import Balance


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


_LENGTHS = {Period.DAY: timedelta(days=1), Period.WEEK: timedelta(weeks=1)}


class Allowance(NamedTuple):
    balance: Balance
    amount: int
    period: str
    anchor: datetime
    #: The current period, once its grant is made: its bounds and the grant.
    period_start: datetime | None = None
    period_end: datetime | None = None
    grant_id: str | None = None

    def next_reset(self, after: datetime) -> datetime:
        """The first boundary after `after` (when the next grant is due)."""
        if self.period_end is not None and self.period_end > after:
            return self.period_end
        return period_at(self.anchor, Period(self.period), after)[1]


def boundary(anchor: datetime, period: Period, k: int) -> datetime:
    """The k-th boundary of periods anchored at `anchor` (k = 0 is the anchor)."""
    anchor = anchor.astimezone(UTC)
    if period in _LENGTHS:
        return anchor + k * _LENGTHS[period]
    months = anchor.year * 12 + anchor.month - 1 + k
    year, month = divmod(months, 12)
    day = min(anchor.day, calendar.monthrange(year, month + 1)[1])
    return anchor.replace(year=year, month=month + 1, day=day)


def period_at(anchor: datetime, period: Period, moment: datetime) -> tuple[datetime, datetime]:
    """The period that holds `moment` (start <= moment < end); the first
    period when `moment` is before the anchor."""
    k = _index(anchor, period, moment)
    return boundary(anchor, period, k), boundary(anchor, period, k + 1)


def _index(anchor: datetime, period: Period, moment: datetime) -> int:
    if moment <= anchor:
        return 0
    if period in _LENGTHS:
        return (moment - anchor) // _LENGTHS[period]
    a, m = anchor.astimezone(UTC), moment.astimezone(UTC)
    k = (m.year - a.year) * 12 + (m.month - a.month)
    while k > 0 and boundary(anchor, period, k) > moment:
        k -= 1
    while boundary(anchor, period, k + 1) <= moment:
        k += 1
    return k
