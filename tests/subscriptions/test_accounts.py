"""Billing accounts and capabilities through the gateway (subscriptions.md §3.6, §3.7, §5.10
case 90): the organization as the one account, its IAM member, the console-only stubs, the
static capabilities payload; classes `user` and `admin`."""

from __future__ import annotations

import secrets

from tests.conftest import SERVICE_TOKENS, bearer, iam_token
from tests.support import get, org_id_of, request

CAPABILITIES = {
    "paymentMethods": ["card", "bank_account", "balance", "crypto"],
    "currencies": ["usd", "eur", "gbp", "cad", "aud", "jpy", "chf",
                   "btc", "eth", "sol", "usdc", "usdt", "lux"],
    "features": ["subscriptions", "subscription_items", "metered_billing", "invoicing",
                 "credit_grants", "credit_notes", "refunds", "disputes", "dunning",
                 "payment_intents", "setup_intents", "customer_balance", "payouts",
                 "webhooks", "billing_events", "customer_portal"],
    "billingModels": ["flat_rate", "per_seat", "metered", "tiered", "volume", "threshold",
                      "hybrid"],
    "taxCalculation": True,
    "bankTransferReconciliation": False,
}


def member_of(owner: str, **claims) -> dict[str, str]:
    return bearer(iam_token(owner=owner, name="alice", sub="sub-alice",
                            email="alice@example.com", **claims))


def service_for(org_name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SERVICE_TOKENS[0]}", "X-IAM-Org-Id": org_name}


async def test_accounts_role_follows_the_claims(http, platform):  # 90
    owner = f"acct-{secrets.token_hex(3)}"
    for roles, role in ((["member", "owner"], "owner"), (["admin", "owner"], "admin"),
                        ([], "member"), (["viewer"], "member")):
        status, body, _ = await get(http, "/accounts", member_of(owner, roles=roles))
        assert status == 200, body
        assert [a["role"] for a in body] == [role], roles
    org_id = await platform.gateway.pool.fetchval(
        "select id from gateway.orgs where name = $1", owner)
    created = await platform.gateway.pool.fetchval(
        "select created_at from gateway.orgs where name = $1", owner)
    [account] = body
    assert account == {"id": org_id, "name": owner, "orgId": org_id, "orgName": owner,
                       "currency": "usd", "createdAt": account["createdAt"], "role": "member"}
    assert account["createdAt"].startswith(created.strftime("%Y-%m-%dT%H:%M:%S"))


async def test_accounts_without_iam_have_no_role(http, org, platform):  # 90
    org_id = await org_id_of(platform, org)
    for auth in (org.auth(), service_for(org.name)):
        status, body, _ = await get(http, "/accounts", auth)
        assert status == 200, body
        assert [(a["id"], a["orgName"], "role" in a) for a in body] == [
            (org_id, org.name, False)]


async def test_members(http, org, platform):  # 90
    org_id = await org_id_of(platform, org)
    status, body, _ = await get(http, f"/accounts/{org_id}/members", service_for(org.name))
    assert (status, body) == (200, [])
    status, body, _ = await get(http, f"/accounts/{org_id}/members", org.auth())
    assert (status, body) == (200, [])
    for other in ("org_someone_else", org_id.upper()):
        status, body, _ = await get(http, f"/accounts/{other}/members", org.auth())
        assert (status, body["error"]["message"]) == (403, "access denied to billing account")
    owner = f"acct-{secrets.token_hex(3)}"
    auth = member_of(owner, roles=["owner"])
    [account] = (await get(http, "/accounts", auth))[1]
    status, body, _ = await get(http, f"/accounts/{account['id']}/members", auth)
    assert (status, body) == (200, [{"id": "sub-alice", "userId": "sub-alice",
                                     "email": "alice@example.com", "role": "owner",
                                     "addedAt": account["createdAt"]}])
    # Another organization's account, named by its id: refused.
    status, body, _ = await get(http, f"/accounts/{org_id}/members", auth)
    assert (status, body["error"]["message"]) == (403, "access denied to billing account")


async def test_management_is_the_consoles(http, org, platform):  # 90
    org_id = await org_id_of(platform, org)
    base = "/api/v1/billing/accounts"
    cases = [("POST", base, "billing account creation must be done via the Hanzo console"),
             ("POST", f"{base}/{org_id}/members",
              "member management must be done via the Hanzo console"),
             ("PATCH", f"{base}/anything/members/m1",
              "role updates must be done via the Hanzo console"),
             ("DELETE", f"{base}/anything/members/m1",
              "member removal must be done via the Hanzo console")]
    for method, path, message in cases:
        status, body, _ = await request(http, method, path, org.auth(), raw=b"not json")
        assert (status, body["error"]["message"]) == (501, message), path


async def test_accounts_are_the_user_class(http, org):
    for path in ("/accounts", "/capabilities"):
        status, body, _ = await get(http, path, org.auth("pk_test"))
        assert (status, body["error"]["message"]) == (403, "Token doesn't support this scope")
        status, body, _ = await get(http, path, {})
        assert (status, body["error"]["message"]) == (401, "No access token provided.")


async def test_capabilities_verbatim(http, org):  # 90
    for auth in (org.auth(), org.auth("sk_live"), service_for(org.name)):
        status, body, _ = await get(http, "/capabilities", auth)
        assert (status, body) == (200, CAPABILITIES)
    # Admin class: an IAM end user is refused.
    status, body, _ = await get(http, "/capabilities", member_of("acct-users"))
    assert (status, body["error"]["message"]) == (403, "Token doesn't support this scope")
