"""Why is my balance N? Every balance explained from the history, a refusal
with the facts behind it, and the chain's head for a witness."""

from __future__ import annotations

import re
import subprocess
from typing import TYPE_CHECKING

from tests.helpers import ledger_process

if TYPE_CHECKING:
    from tests.e2e.conftest import Api


def test_a_balance_is_explained_in_numbers_and_words(api: Api) -> None:
    user_id = api.registered("why")
    api.check_command(
        api.post(
            f"/v1/users/{user_id}/credits/grants",
            {"amount": 50, "reason": "promotion", "expires_at": "2099-12-31T23:59:59Z"},
        )
    )
    api.check_command(
        api.post(
            f"/v1/users/{user_id}/credits/spends",
            {"amount": 3, "reason": "image generation"},
            role="service",
        )
    )
    held = api.check_command(
        api.post(f"/v1/users/{user_id}/credits/holds", {"amount": 5, "reason": "chat reply"}),
        201,
    )

    explained = api.json(api.get(f"/v1/users/{user_id}/explain", role="reader"))

    credits = explained["balances"]["free_credits"]
    assert (credits["available"], credits["held"]) == (52, 5)
    assert [h["id"] for h in credits["holds"]] == [held["hold"]["id"]]
    assert credits["holds"][0]["reason"] == "chat reply"
    assert [(g["source"], g["remaining"]) for g in credits["grants"]] == [
        ("grant", 42),
        ("registration", 10),
    ]
    assert credits["next_expiry"] == {"at": "2099-12-31T23:59:59.000000Z", "amount": 42}
    assert credits["allowance"] is None
    assert credits["summary"].startswith("52 credits available; 5 held by 1 open hold")
    spent = explained["recent"][1]["sentence"]
    assert re.fullmatch(
        r"3 credits spent on image generation by service key key_[0-9a-f]{12}", spent
    )
    assert explained["recent"][0]["type"] == "HoldPlaced"
    assert explained["recent"][-1]["type"] == "UserRegistered"


def test_a_refusal_carries_the_facts_of_the_balance(api: Api) -> None:
    user_id = api.registered("short")
    api.check_command(
        api.put(f"/v1/users/{user_id}/allowances/credits", {"amount": 5, "period": "week"}), 200
    )

    refused = api.problem(
        api.post(f"/v1/users/{user_id}/credits/spends", {"amount": 40}), 409, "insufficient-balance"
    )

    assert (refused["requested"], refused["available"], refused["held"]) == (40, 15, 0)
    assert refused["shortfall"] == 25
    assert refused["next_allowance_at"].endswith("Z")
    assert refused["expiring"]["amount"] == 5


def test_explaining_nobody_is_not_found(api: Api) -> None:
    api.problem(api.get("/v1/users/nobody-at-all/explain"), 404, "user-not-found")


def test_the_chain_head_is_what_ledger_verify_checks(api: Api) -> None:
    api.registered("witnessed")
    head = api.json(api.get("/v1/chain/head"))
    assert len(head["hash"]) == 64 and head["position"] >= 1 and head["recorded_at"].endswith("Z")
    api.problem(api.get("/v1/chain/head", role="reader"), 403)

    process = ledger_process(
        "verify",
        "--expect",
        f"{head['hash']}@{head['position']}",
        database=api.database,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = process.communicate(timeout=120)

    assert process.returncode == 0, err
    assert b"chain intact" in out + err
