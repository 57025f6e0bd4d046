"""`ledger import`: users of an existing CRUD table as opening events.

The file is CSV with a header, or JSON lines. Every row is checked before
anything is written; the good rows are then recorded in one transaction, so a
file is imported whole or not at all. Users already in the ledger are left
alone, which makes importing the same file again a no-op.
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.application import Ledger
from ledger.commands import ImportUser
from ledger.db import Database
from ledger.domain import Cause, check_balance, check_plan, check_user_id
from ledger.errors import InvalidCommand, UserExists
from ledger.writer import run_together
from projections.views import present

#: Column names as the ledger calls them, and as the seed's Drizzle schema did.
ALIASES = {
    "id": "id",
    "level": "level",
    "renewal_period": "renewal_period",
    "renewalPeriod": "renewal_period",
    "free_credits": "free_credits",
    "freeCredits": "free_credits",
    "free_chat_messages": "free_chat_messages",
    "freeChatMessages": "free_chat_messages",
}
REQUIRED = ("id", "level")


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


class _BadFile(str):
    """A reason the whole file cannot be read (its header): no row can be
    imported, --skip-bad or not."""


@dataclass
class ParsedFile:
    rows: list[tuple[int, ImportUser]] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    #: The file as a whole cannot be imported (see `bad` for why).
    unreadable: bool = False


@dataclass
class ImportReport:
    imported: int = 0
    already_there: int = 0
    bad: list[BadRow] = field(default_factory=list)


def parse(path: Path) -> ParsedFile:
    # Bytes that are not UTF-8 become lone surrogates, so that the rows they
    # are in can be named as bad, and the others still read.
    text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    first = text.lstrip()[:1]
    records = _json_lines(text) if first == "{" else _csv(text)
    parsed = ParsedFile()
    first_line: dict[str, int] = {}
    for line, record in records:
        if isinstance(record, str):
            parsed.bad.append(BadRow(line, record))
            parsed.unreadable = parsed.unreadable or isinstance(record, _BadFile)
            continue
        if _undecodable(record):
            parsed.bad.append(BadRow(line, "not UTF-8 text"))
            continue
        try:
            command = _command(record)
        except InvalidCommand as e:
            parsed.bad.append(BadRow(line, e.detail))
            continue
        if command.user_id in first_line:
            reason = (
                f"duplicate id {command.user_id!r} (first on line {first_line[command.user_id]})"
            )
            parsed.bad.append(BadRow(line, reason))
            continue
        first_line[command.user_id] = line
        parsed.rows.append((line, command))
    return parsed


_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def _undecodable(record: dict[str, Any]) -> bool:
    return any(
        isinstance(text, str) and _NOT_UTF8.search(text) is not None
        for text in (*record, *record.values())
    )


def _csv(text: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        yield 1, _BadFile("the file is empty: a CSV file starts with a header line")
        return
    if any(_NOT_UTF8.search(name) for name in header):
        yield 1, _BadFile("the header is not UTF-8 text")
        return
    names = [ALIASES.get(h.strip(), h.strip()) for h in header]
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        yield 1, _BadFile(f"the header has no column {', '.join(missing)}")
        return
    line = reader.line_num
    for values in reader:
        start, line = line + 1, reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(names):
            yield start, f"expected {len(names)} fields, found {len(values)}"
            continue
        yield start, dict(zip(names, values, strict=True))


def _json_lines(text: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError as e:
            yield number, f"not valid JSON: {e}"
            continue
        if not isinstance(record, dict):
            yield number, "not a JSON object"
            continue
        yield number, {ALIASES.get(str(k), str(k)): v for k, v in record.items()}


def _text(record: dict[str, Any], name: str) -> str | None:
    value = record.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidCommand(f"{name} must be text")
    return value.strip() or None


def _number(record: dict[str, Any], name: str) -> int | None:
    value = record.get(name)
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
        if not (value.isascii() and value.isdigit()):
            raise InvalidCommand(f"{name} must be a whole number from 0, or empty; got {value!r}")
        value = int(value)
    return check_balance(value, name)


def _command(record: dict[str, Any]) -> ImportUser:
    user_id = check_user_id(_text(record, "id") or "")
    level = _text(record, "level")
    if level is None:
        raise InvalidCommand("level is required")
    renewal_period = _text(record, "renewal_period")
    check_plan(level, renewal_period, allow_legacy=True)
    return ImportUser(
        user_id,
        level,
        renewal_period,
        _number(record, "free_credits"),
        _number(record, "free_chat_messages"),
    )


def run(ledger: Ledger, database: Database, parsed: ParsedFile, *, skip_bad: bool) -> ImportReport:
    """Record the good rows in one transaction, unless there are bad ones and
    `skip_bad` is off, in which case record nothing."""
    report = ImportReport(bad=list(parsed.bad))
    if parsed.bad and not skip_bad:
        return report
    cause = Cause(actor_role="import", request_id=f"import_{uuid.uuid4().hex}")
    results = run_together(
        ledger, database, present, [(command, cause) for _, command in parsed.rows]
    )
    for result in results:
        if isinstance(result, UserExists):
            report.already_there += 1
        elif isinstance(result, Exception):
            raise result
        else:
            report.imported += 1
    return report
