"""The catalogue (LEDGER_STRIPE_CATALOG): a TOML file mapping each SKU to what
it buys and what it costs, read with the standard library and checked whole at
start-up, each mistake named by its SKU and field:

    [sku.lifetime]
    amount = 4900            # smallest currency unit
    currency = "usd"
    plan = { level = "paid", renewal_period = "lifetime" }
    credits = 500

    [sku.credits_100]
    amount = 900
    currency = "usd"
    credits = 100
    credits_expire_after_days = 365
    priority = 60
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from ledger.domain import DEFAULT_PRIORITY, MAX_AMOUNT, MAX_PRIORITY, MIN_PRIORITY, check_plan
from ledger.domain.purchases import MAX_MONEY, Offer
from ledger.domain.rules import LONGEST_EXPIRY, Level
from ledger.errors import InvalidCommand

SKU_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
_SKU = re.compile(SKU_PATTERN)
_CURRENCY = re.compile(r"^[a-z]{3}$")
_FIELDS = frozenset(
    {"amount", "currency", "credits", "plan", "priority", "credits_expire_after_days"}
)

Catalog = dict[str, Offer]


class CatalogError(ValueError):
    """The catalogue cannot be used: every reason, one a line."""


def load(path: Path) -> Catalog:
    """The catalogue at `path`, or CatalogError naming each mistake."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise CatalogError(f"{path}: cannot be read: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise CatalogError(f"{path}: is not TOML: {e}") from e
    return parse(document, str(path))


def parse(document: dict[str, Any], where: str = "the catalogue") -> Catalog:
    problems: list[str] = []
    extra = sorted(set(document) - {"sku"})
    if extra:
        problems.append(f"unknown table {extra[0]!r}: each SKU is a [sku.NAME] table")
    skus = document.get("sku")
    if not isinstance(skus, dict) or not skus:
        problems.append("no SKU: add a [sku.NAME] table for each")
        skus = {}
    catalog: Catalog = {}
    for name, terms in skus.items():
        found = _problems(name, terms)
        if found:
            problems.extend(f"sku.{name}: {problem}" for problem in found)
        else:
            catalog[name] = _offer(name, terms)
    if problems:
        raise CatalogError("\n".join(f"{where}: {problem}" for problem in problems))
    return catalog


def _problems(name: str, terms: Any) -> list[str]:
    if not _SKU.fullmatch(name):
        return ["a SKU's name is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-'"]
    if not isinstance(terms, dict):
        return ["must be a table of amount, currency and what it buys"]
    problems = [f"{field}: unknown field" for field in sorted(set(terms) - _FIELDS)]
    problems += _integer(terms, "amount", 1, MAX_MONEY, required=True)
    currency = terms.get("currency")
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        problems.append("currency: must be a three-letter ISO code in lower case, such as 'usd'")
    problems += _integer(terms, "credits", 1, MAX_AMOUNT)
    problems += _integer(terms, "priority", MIN_PRIORITY, MAX_PRIORITY)
    problems += _integer(terms, "credits_expire_after_days", 1, LONGEST_EXPIRY.days - 1)
    if "credits" not in terms:
        problems += [
            f"{f}: applies to credits, and it buys none" for f in _CREDIT_TERMS if f in terms
        ]
    if "plan" in terms:
        problems += _plan_problems(terms["plan"])
    elif "credits" not in terms:
        problems.append("buys nothing: give it credits, a plan, or both")
    return problems


_CREDIT_TERMS = ("priority", "credits_expire_after_days")


def _integer(
    terms: dict[str, Any], field: str, low: int, high: int, *, required: bool = False
) -> list[str]:
    if field not in terms:
        return [f"{field}: is required"] if required else []
    value = terms[field]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return [f"{field}: must be a whole number from {low:,} to {high:,}, not {value!r}"]
    return []


def _plan_problems(plan: Any) -> list[str]:
    if not isinstance(plan, dict) or set(plan) - {"level", "renewal_period"}:
        return ['plan: must be { level = "paid", renewal_period = "lifetime" }']
    level, renewal = plan.get("level"), plan.get("renewal_period")
    if level != Level.PAID:
        return [f"plan.level: a purchase buys the level 'paid', not {level!r}"]
    try:
        check_plan(level, renewal)
    except InvalidCommand as e:
        return [f"plan.renewal_period: {e.detail}"]
    return []


def _offer(name: str, terms: dict[str, Any]) -> Offer:
    plan = terms.get("plan") or {}
    return Offer(
        sku=name,
        amount=terms["amount"],
        currency=terms["currency"],
        credits=terms.get("credits", 0),
        level=plan.get("level"),
        renewal_period=plan.get("renewal_period"),
        priority=terms.get("priority", DEFAULT_PRIORITY),
        credits_expire_after_days=terms.get("credits_expire_after_days"),
    )
