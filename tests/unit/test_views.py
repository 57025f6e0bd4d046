"""The User the API shows, the users table's columns and the documented shape are one list."""

from __future__ import annotations

from datetime import UTC, datetime

from api.http.schemas import UserOut
from ledger.commands import Context, RegisterUser
from ledger.domain import Cause
from projections.users import USER_COLUMNS
from projections.views import user_view


def test_a_user_is_shown_with_the_users_tables_columns_in_order() -> None:
    user = RegisterUser("ann").decide(None, Context(Cause(), datetime.now(UTC)))

    view = user_view(user.state, 1)

    assert tuple(view) == USER_COLUMNS
    assert view["position"] == 1 and view["updated_at"].endswith("Z")


def test_the_documented_user_has_the_same_fields() -> None:
    assert tuple(UserOut.model_fields) == USER_COLUMNS
