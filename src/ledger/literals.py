"""Values written into SQL as literals, for the statements a batch sends with
its COMMIT (ledger.writer.alongside: one round trip, so no parameters). Only
shapes in which nothing a value holds can end the literal, whatever
`standard_conforming_strings` says: digits, ISO 8601 times, text that holds
neither a quote nor a backslash, and hex in escape strings for the rest."""

from __future__ import annotations

from datetime import datetime


def integer(value: int | None) -> str:
    return "NULL" if value is None else str(int(value))


def time(value: datetime | None) -> str:
    if value is None:
        return "NULL"
    if value.tzinfo is None:
        raise ValueError(f"a time without its zone: {value!r}")
    return f"'{value.isoformat()}'::timestamptz"


def bytea(value: bytes) -> str:
    return f"E'\\\\x{value.hex()}'::bytea"


def text(value: str | None) -> str:
    """As it is when it holds neither a quote nor a backslash; else its UTF-8,
    as hex, decoded by the server. (PostgreSQL's text holds no NUL: the
    rules refuse it before it comes here.)"""
    if value is None:
        return "NULL"
    if "'" not in value and "\\" not in value:
        return f"'{value}'"
    return f"convert_from({bytea(value.encode())}, 'UTF8')"
