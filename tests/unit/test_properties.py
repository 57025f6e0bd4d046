"""Properties of the rules, for any sequence of commands (hypothesis)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.commands import (
    ChangePlan,
    Command,
    Context,
    GrantChatMessages,
    GrantCredits,
    ImportUser,
    RegisterUser,
    SpendChatMessages,
    SpendCredits,
)
from ledger.domain import MAX_BALANCE, Cause, User, fold
from ledger.errors import (
    BalanceLimit,
    InsufficientBalance,
    InvalidCommand,
    LedgerError,
    UserExists,
    UserNotFound,
)

CAUSE = Context(Cause("admin", "key_prop", None, None), datetime(2026, 1, 1, tzinfo=UTC))
USERS = ["a", "b", "c"]

amounts = st.one_of(
    st.integers(min_value=1, max_value=1_000_000),
    st.integers(min_value=1, max_value=20),  # small spends hit the edges often
    st.integers(min_value=-5, max_value=0),
    st.sampled_from([1_000_001, 2**31, 10**30]),
)
balances = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=50),
    st.integers(min_value=MAX_BALANCE - 1_000_000, max_value=MAX_BALANCE),
)
user_ids = st.sampled_from(USERS)


def _balance_command(cls: type[Command]) -> st.SearchStrategy[Command]:
    return st.builds(cls, user_ids, amounts, st.none() | st.text(max_size=5))


commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(RegisterUser, user_ids),
    st.builds(
        ImportUser,
        user_ids,
        st.sampled_from(["free", "paid", "basic", "pro"]),
        st.sampled_from([None, "lifetime", "monthly"]),
        balances,
        balances,
    ),
    _balance_command(GrantCredits),
    _balance_command(SpendCredits),
    _balance_command(GrantChatMessages),
    _balance_command(SpendChatMessages),
    st.builds(
        ChangePlan,
        user_ids,
        st.sampled_from(["free", "paid", "pro", "gold"]),
        st.sampled_from([None, "lifetime", "monthly"]),
    ),
)


@dataclass
class Model:
    """What a user is expected to have: the rules, written plainly."""

    credits: int | None
    chat: int | None
    level: str
    renewal: str | None
    events: int = field(default=1)


def expected_refusal(model: Model | None, command: Command) -> type[LedgerError] | None:
    if isinstance(command, RegisterUser | ImportUser):
        return UserExists if model is not None else None
    if model is None:
        return UserNotFound
    if isinstance(command, ChangePlan):
        valid = (command.level, command.renewal_period) in {("free", None), ("paid", "lifetime")}
        return None if valid else InvalidCommand
    assert isinstance(command, GrantCredits | SpendCredits | GrantChatMessages | SpendChatMessages)
    if not 1 <= command.amount <= 1_000_000 or "\x00" in (command.reason or ""):
        return InvalidCommand
    balance = model.credits if command.balance.value == "free_credits" else model.chat
    if isinstance(command, GrantCredits | GrantChatMessages):
        return BalanceLimit if (balance or 0) + command.amount > MAX_BALANCE else None
    return InsufficientBalance if command.amount > (balance or 0) else None


def apply_to_model(models: dict[str, Model], command: Command) -> None:
    uid = command.user_id
    if isinstance(command, RegisterUser):
        models[uid] = Model(10, 20, "free", None)
    elif isinstance(command, ImportUser):
        models[uid] = Model(
            command.free_credits, command.free_chat_messages, command.level, command.renewal_period
        )
    else:
        model = models[uid]
        model.events += 1
        if isinstance(command, ChangePlan):
            model.level, model.renewal = command.level, command.renewal_period
            return
        assert isinstance(
            command, GrantCredits | SpendCredits | GrantChatMessages | SpendChatMessages
        )
        sign = 1 if isinstance(command, GrantCredits | GrantChatMessages) else -1
        if command.balance.value == "free_credits":
            model.credits = (model.credits or 0) + sign * command.amount
        else:
            model.chat = (model.chat or 0) + sign * command.amount


@settings(max_examples=300, deadline=None)
@given(st.lists(commands, max_size=40))
def test_any_sequence_of_commands_follows_the_rules(sequence: list[Command]) -> None:
    users: dict[str, User] = {}
    models: dict[str, Model] = {}
    recorded: dict[str, list[User.Event]] = {uid: [] for uid in USERS}
    for command in sequence:
        uid = command.user_id
        expected = expected_refusal(models.get(uid), command)
        before = users[uid].state if uid in users else None
        try:
            user = command.decide(users.get(uid), CAUSE)
        except LedgerError as refusal:
            assert type(refusal) is expected, (command, refusal)
            assert (users[uid].state if uid in users else None) == before  # nothing changed
            continue
        assert expected is None, (command, "was accepted")
        users[uid] = user
        recorded[uid].extend(user.collect_events())
        apply_to_model(models, command)

    for uid, user in users.items():
        state = user.state
        model = models[uid]
        assert (state.free_credits, state.free_chat_messages) == (model.credits, model.chat)
        assert (state.level, state.renewal_period) == (model.level, model.renewal)
        assert state.version == model.events == len(recorded[uid])
        for value in (state.free_credits, state.free_chat_messages):
            assert value is None or 0 <= value <= MAX_BALANCE
        assert fold(recorded[uid]) == state  # replay gives the same state
