"""Billing accounts (subscriptions.md §3.6): `user` class, answered by the gateway itself
(kind `gateway`: nothing is stored, everything follows from the caller's organization and
claims). The management stubs read neither path nor body and always answer 501."""

from __future__ import annotations

from contracts.accounts import AccountMember, AccountMembersParams, BillingAccount, NoParams
from services.gateway import accounts
from services.gateway.routing import Answered, Route

ACCOUNTS_LIST = Answered("billing.gateway.account.list", NoParams, list[BillingAccount],
                         accounts.list_accounts)
MEMBERS_LIST = Answered("billing.gateway.account_member.list", AccountMembersParams,
                        list[AccountMember], accounts.list_members)


def _stub(subject: str, params: type, message: str) -> Answered:
    return Answered(subject, params, None, accounts.console_only(message))


ACCOUNT_ROUTES: tuple[Route, ...] = (
    Route("GET", "/billing/accounts", ACCOUNTS_LIST, "user", source="query", user_field=None,
          kind="gateway"),
    Route("POST", "/billing/accounts", _stub(
        "billing.gateway.account.create", NoParams,
        "billing account creation must be done via the Hanzo console"),
        "user", source="query", user_field=None, kind="gateway"),
    Route("GET", "/billing/accounts/{id}/members", MEMBERS_LIST, "user", source="query",
          user_field=None, kind="gateway"),
    Route("POST", "/billing/accounts/{id}/members", _stub(
        "billing.gateway.account_member.add", AccountMembersParams,
        "member management must be done via the Hanzo console"),
        "user", source="query", user_field=None, kind="gateway"),
    Route("PATCH", "/billing/accounts/{id}/members/{memberId}", _stub(
        "billing.gateway.account_member.update", AccountMembersParams,
        "role updates must be done via the Hanzo console"),
        "user", source="query", user_field=None, kind="gateway"),
    Route("DELETE", "/billing/accounts/{id}/members/{memberId}", _stub(
        "billing.gateway.account_member.remove", AccountMembersParams,
        "member removal must be done via the Hanzo console"),
        "user", source="query", user_field=None, kind="gateway"),
)
