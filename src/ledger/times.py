"""Times as the ledger writes and reads them: RFC 3339, in UTC, to the microsecond."""

from __future__ import annotations

import re
from datetime import UTC, datetime


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC at full precision: 2026-01-31T12:00:00.000001Z."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"  # less its "+00:00"


_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})"
)


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 date-time, with its offset: 2026-01-31T12:00:00Z,
    2026-01-31T13:00:00.5+01:00. Nothing looser (no bare dates, no missing
    seconds or offset, no Unix times). Digits past the microsecond are dropped,
    which decides nothing: events are recorded to the microsecond. In UTC."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{text[:40]!r} is not an RFC 3339 time with an offset, such as 2026-01-31T12:00:00Z"
        )
    date, time, fraction, offset = match.groups()
    micros = f".{(fraction or '')[:6]:0<6}"
    try:
        moment = datetime.fromisoformat(f"{date}T{time}{micros}{_offset(offset)}")
    except ValueError as e:
        raise ValueError(f"{text[:40]!r} is not a valid time: {e}") from None
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        # Past 9999 or before year 1 once in UTC: as late, or as early, as can be.
        return (datetime.max if moment.year == 9999 else datetime.min).replace(tzinfo=UTC)


def _offset(text: str) -> str:
    return "+00:00" if text in ("Z", "z") else text
