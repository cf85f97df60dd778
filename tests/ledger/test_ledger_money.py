"""Withdrawals, refunds, starter credit, expiring deposits, tiers and the billing gate
(ledger.md §3.8–§3.12, §6.2, §8 A, B, G, with the [FIX]es)."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest

from services.ledger.balances.handlers import lapse_expired_deposits
from tests.conftest import SERVICE_TOKENS, bearer, iam_token
from tests.support import (
    add_payment_method,
    get,
    has_payment_method,
    ledger_verify,
    post,
    service,
)


async def balance(http, org, user, key="sk_test"):
    return (await get(http, "/balance", org.auth(key), user=user))[1]["balance"]


# ---- withdrawals ----------------------------------------------------------------------


async def test_withdraw_needs_funds_and_writes_nothing_when_refused(http, org):
    # A.9
    await post(http, "/deposit", {"user": "hanzo/amy", "amount": 300}, org.auth())
    status, body, _ = await post(http, "/withdraw", {"user": "hanzo/amy", "amount": 500},
                                 org.auth())
    assert (status, body["error"]["message"]) == (
        402, "insufficient balance: have 300 cents, need 500 cents")
    status, body, _ = await post(http, "/withdraw", {"user": "hanzo/amy", "amount": 300},
                                 org.auth())
    assert status == 201
    assert body == {"transactionId": body["transactionId"], "user": "hanzo/amy",
                    "amount": 300, "currency": "usd", "type": "withdraw", "tags": ""}
    assert await balance(http, org, "hanzo/amy") == 0
    status, txs, _ = await get(http, "/transactions", org.auth(), user="hanzo/amy")
    assert txs["count"] == 2


@pytest.mark.parametrize(("body", "message"), [
    ({"amount": 5}, "user is required"),
    ({"user": "a", "amount": 0}, "amount must be positive"),
    ({"user": "a", "amount": "5"}, "invalid request body"),
])
async def test_withdraw_refuses_bad_input(http, org, body, message):
    status, reply, _ = await post(http, "/withdraw", body, org.auth())
    assert (status, reply["error"]["message"]) == (400, message)


async def test_end_users_withdraw_only_their_own_money(http, make_org):
    # A.10 / conventions 21.
    org = await make_org()
    await post(http, "/deposit", {"user": f"{org.name}/alice", "amount": 10}, org.auth("sk_live"))
    token = bearer(iam_token(owner=org.name, name="Alice"))
    status, body, _ = await post(http, "/withdraw", {"user": f"{org.name}/bob", "amount": 1}, token)
    assert (status, body["error"]["message"]) == (
        403, "cannot withdraw from another user's account")
    status, body, _ = await post(http, "/withdraw",
                                 {"user": f"{org.name.upper()}/alice", "amount": 1}, token)
    assert status == 201 and body["user"] == f"{org.name}/alice"
    status, _, _ = await post(http, "/withdraw", {"user": "x", "amount": 1}, org.auth("pk_live"))
    assert status == 403


async def test_concurrent_withdrawals_never_overdraw(http, org):
    await post(http, "/deposit", {"user": "hanzo/race", "amount": 100}, org.auth())
    results = await asyncio.gather(*[
        post(http, "/withdraw", {"user": "hanzo/race", "amount": 1}, org.auth())
        for _ in range(200)])
    statuses = [status for status, _, _ in results]
    assert statuses.count(201) == 100 and statuses.count(402) == 100
    assert await balance(http, org, "hanzo/race") == 0


async def test_two_withdrawals_of_everything_one_wins(http, org):
    # conventions 30.
    await post(http, "/deposit", {"user": "hanzo/two", "amount": 100}, org.auth())
    results = await asyncio.gather(*[
        post(http, "/withdraw", {"user": "hanzo/two", "amount": 100}, org.auth())
        for _ in range(2)])
    assert sorted(status for status, _, _ in results) == [201, 402]
    refused = next(body for status, body, _ in results if status == 402)
    assert refused["error"]["message"] == "insufficient balance: have 0 cents, need 100 cents"


# ---- refunds --------------------------------------------------------------------------


async def test_refunds_give_back_usage_never_more(http, org):
    # A.11 with the [FIX]: the original must be a usage debit of that user.
    _, usage, _ = await post(http, "/usage", {"user": "hanzo/dave", "amount": 100}, org.auth())
    original = usage["transactionId"]
    status, body, _ = await post(http, "/refund", {
        "user": "hanzo/dave", "amount": 60, "originalTransactionId": original,
        "notes": "Partial refund"}, org.auth())
    assert status == 201
    assert body == {"transactionId": body["transactionId"], "user": "hanzo/dave", "amount": 60,
                    "currency": "usd", "type": "deposit", "tags": "refund",
                    "originalTransactionId": original}
    status, body, _ = await post(http, "/refund", {
        "user": "hanzo/dave", "amount": 50, "originalTransactionId": original}, org.auth())
    assert status == 409 and "40 cents left to refund" in body["error"]["message"]
    status, _, _ = await post(http, "/refund", {
        "user": "hanzo/dave", "amount": 40, "originalTransactionId": original}, org.auth())
    assert status == 201
    assert await balance(http, org, "hanzo/dave") == 0
    _, txs, _ = await get(http, "/transactions", org.auth(), user="hanzo/dave")
    refund = next(t for t in txs["transactions"] if t["amount"] == 60)
    assert refund["metadata"] == {"refundType": "billing-correction",
                                  "originalTransactionId": original}


async def test_refunds_that_would_mint_money_are_refused(http, org):
    # A.12 and ledger.md §9.4.
    _, deposit, _ = await post(http, "/deposit", {"user": "hanzo/eve", "amount": 200}, org.auth())
    _, usage, _ = await post(http, "/usage", {"user": "hanzo/eve", "amount": 50}, org.auth())
    cases = [
        ({"user": "hanzo/eve", "amount": 10}, 400, "originalTransactionId is required"),
        ({"user": "hanzo/eve", "amount": 10, "originalTransactionId": "does-not-exist"},
         404, "original transaction not found"),
        ({"user": "hanzo/eve", "amount": 10, "originalTransactionId": deposit["transactionId"]},
         404, "original transaction not found"),
        ({"user": "hanzo/mallory", "amount": 10, "originalTransactionId": usage["transactionId"]},
         404, "original transaction not found"),
        ({"user": "hanzo/eve", "amount": 10, "currency": "eur",
          "originalTransactionId": usage["transactionId"]},
         400, "currency does not match the original transaction"),
    ]
    for body, status, message in cases:
        got, reply, _ = await post(http, "/refund", body, org.auth())
        assert (got, reply["error"]["message"]) == (status, message), body
    # Another mode cannot see the original either.
    got, _, _ = await post(http, "/refund", {"user": "hanzo/eve", "amount": 10,
                                             "originalTransactionId": usage["transactionId"]},
                           org.auth("sk_live"))
    assert got == 404


async def test_concurrent_refunds_never_exceed_the_original(http, org):
    _, usage, _ = await post(http, "/usage", {"user": "hanzo/rr", "amount": 100}, org.auth())
    results = await asyncio.gather(*[
        post(http, "/refund", {"user": "hanzo/rr", "amount": 20,
                               "originalTransactionId": usage["transactionId"]}, org.auth())
        for _ in range(10)])
    assert sorted(status for status, _, _ in results) == [201] * 5 + [409] * 5
    assert await balance(http, org, "hanzo/rr") == 0


# ---- starter credit -------------------------------------------------------------------


async def test_starter_credit_needs_a_payment_method(http, org):
    # B.1: a user without a payment method.
    status, body, _ = await post(http, "/credit", {"user": "hanzo/charlie"}, org.auth())
    assert (status, body["error"]["message"]) == (
        403, "a verified payment method is required before claiming starter credit")
    status, body, _ = await get(http, "/status", org.auth(), user="hanzo/charlie")
    assert status == 200 and body["hasPaymentMethod"] is False


async def test_starter_credit_is_granted_once(http, org):
    # B.3 with the product decision: a second claim returns the same grant (200).
    await add_payment_method(http, org, "hanzo/charlie")
    status, first, _ = await post(http, "/credit", {"user": "Hanzo/Charlie"}, org.auth())
    assert status == 201
    assert {k: first[k] for k in ("user", "amount", "currency", "type", "tags")} == {
        "user": "hanzo/charlie", "amount": 500, "currency": "usd", "type": "deposit",
        "tags": "starter-credit"}
    status, second, _ = await post(http, "/credit", {"user": "hanzo/charlie"}, org.auth())
    assert status == 200 and second == first
    assert await balance(http, org, "hanzo/charlie") == 500
    assert await balance(http, org, "hanzo/charlie", key="sk_live") == 0
    assert await has_payment_method(http, org, "hanzo/charlie")
    status, body, _ = await get(http, "/status", org.auth(), user="hanzo/charlie")
    assert body == {"user": "hanzo/charlie", "hasPaymentMethod": True, "creditBalance": 500,
                    "tier": "free"}


async def test_concurrent_starter_claims_grant_once(http, org):
    await add_payment_method(http, org, "hanzo/rush")
    results = await asyncio.gather(*[post(http, "/credit", {"user": "hanzo/rush"}, org.auth())
                                     for _ in range(20)])
    assert {body["transactionId"] for _, body, _ in results} == {results[0][1]["transactionId"]}
    assert sorted(status for status, _, _ in results).count(201) == 1
    assert await balance(http, org, "hanzo/rush") == 500


# ---- expiring deposits ----------------------------------------------------------------


async def _expire_now(platform, user):
    async with platform.gateway.pool.acquire() as conn:
        await conn.execute("update ledger.lots set expires_at = now() - interval '1 second'"
                           " where user_id = $1", user)
        await conn.execute("update ledger.transactions set expires_at = now() - interval"
                           " '1 second' where user_id = $1 and expires_at is not null", user)


async def test_only_the_unspent_part_of_an_expired_deposit_lapses(http, org, platform):
    user = "hanzo/lots"
    await post(http, "/deposit", {"user": user, "amount": 100}, org.auth())  # never expires
    await post(http, "/deposit", {"user": user, "amount": 500, "expiresIn": 7}, org.auth())
    await post(http, "/usage", {"user": user, "amount": 200}, org.auth())  # spends the lot first
    assert await balance(http, org, user) == 400
    await _expire_now(platform, user)
    # A read right after expiry no longer counts the unspent 300; the spent 200 stays spent.
    assert await balance(http, org, user) == 100
    status, body, _ = await post(http, "/withdraw", {"user": user, "amount": 101}, org.auth())
    assert status == 402 and body["error"]["message"].startswith("insufficient balance: have 100")
    ledger = service(platform, "ledger")
    await lapse_expired_deposits(ledger)
    await lapse_expired_deposits(ledger)  # idempotent
    assert await balance(http, org, user) == 100
    _, txs, _ = await get(http, "/transactions", org.auth(), user=user)
    expiry = [t for t in txs["transactions"] if t.get("tags") == "expiry"]
    assert [t["amount"] for t in expiry] == [300]
    assert any(t.get("expiresAt") for t in txs["transactions"])  # expired rows stay listed


async def test_a_deposit_paying_off_debt_does_not_lapse_that_part(http, org, platform):
    user = "hanzo/debt"
    await post(http, "/usage", {"user": user, "amount": 300}, org.auth())
    await post(http, "/deposit", {"user": user, "amount": 500, "expiresIn": 1}, org.auth())
    assert await balance(http, org, user) == 200
    await _expire_now(platform, user)
    assert await balance(http, org, user) == 0  # 300 paid the debt; 200 unspent lapsed


# ---- tiers and the billing gate -------------------------------------------------------


async def test_tier_check(http, org):
    # G.8
    status, body, _ = await get(http, "/tier-check", org.auth(), user="hanzo/alice",
                                model="zen4-max", tier="starter")
    assert body == {"user": "hanzo/alice", "tier": {
        "name": "starter", "displayName": "Starter",
        "allowedModels": ["claude-sonnet", "claude-haiku", "zen3", "zen4"], "maxAgents": 3},
        "model": "zen4-max", "allowed": True}
    status, body, _ = await get(http, "/tier-check", org.auth(), user="hanzo/alice")
    assert "model" not in body and "allowed" not in body and body["tier"]["name"] == "free"
    status, body, _ = await get(http, "/tier-check", org.auth(), user="hanzo/alice",
                                model="claude-opus-4")
    assert body["allowed"] is False


async def test_tier_balance_with_the_free_daily_credit(http, org):
    # G.9
    await post(http, "/deposit", {"user": "hanzo/tiered", "amount": 1000}, org.auth())
    await post(http, "/usage", {"user": "hanzo/tiered", "amount": 30}, org.auth())
    status, body, _ = await get(http, "/tier", org.auth(), user="hanzo/tiered")
    assert status == 200
    assert body["tier"] == {"name": "free", "displayName": "Free", "maxAgents": 1,
                            "unlimitedAgents": False, "dailyCreditsCents": 100,
                            "allowedModels": ["claude-sonnet", "zen3"]}
    assert body["balance"] == {"currency": "usd", "prepaidAvailable": 970,
                               "dailyRemaining": 70, "effectiveAvailable": 1040}
    status, body, _ = await get(http, "/tier", org.auth(), user="hanzo/tiered", tier="pro")
    assert body["tier"]["name"] == "pro" and body["balance"]["dailyRemaining"] == 0


async def test_tier_comes_from_the_token_not_the_query(http, make_org):
    # §6.2 example 5 and the [FIX] W10.
    org = await make_org()
    claim = bearer(iam_token(owner=org.name, name="boss", isAdmin=True,
                             properties={"tier": "gold"}))
    status, body, _ = await get(http, "/tier", claim, user=f"{org.name}/boss", tier="pro")
    assert body["tier"]["name"] == "free"
    no_claim = bearer(iam_token(owner=org.name, name="boss", isAdmin=True))
    status, body, _ = await get(http, "/tier", no_claim, user=f"{org.name}/boss", tier="pro")
    assert body["tier"]["name"] == "free"  # an IAM admin may not name a price
    service = {**bearer(SERVICE_TOKENS[0]), "X-IAM-Org": org.name}
    status, body, _ = await get(http, "/tier", service, user=f"{org.name}/boss", tier="enterprise")
    assert body["tier"]["name"] == "enterprise" and body["tier"]["unlimitedAgents"] is True


async def test_status_is_the_callers_own(http, make_org):
    org = await make_org()
    await post(http, "/deposit", {"user": f"{org.name}/alice", "amount": 70},
               org.auth("sk_live"))
    token = bearer(iam_token(owner=org.name, name="alice", properties={"tier": "pro"}))
    status, body, _ = await get(http, "/status", token)
    assert body == {"user": f"{org.name}/alice", "hasPaymentMethod": False,
                    "creditBalance": 70, "tier": "pro"}
    status, body, _ = await get(http, "/status", token, user=f"{org.name}/bob")
    assert status == 403
    status, body, _ = await get(http, "/status", org.auth())
    assert (status, body["error"]["message"]) == (400, "user query parameter is required")


# ---- verification ---------------------------------------------------------------------


async def test_ledger_verify_finds_a_tampered_balance(http, org, platform, database_url):
    await post(http, "/deposit", {"user": "hanzo/audit", "amount": 80}, org.auth())
    verify = partial(ledger_verify, database_url)

    clean = await asyncio.to_thread(verify)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "0 mismatch(es)" in clean.stdout
    await platform.gateway.pool.execute(
        "update ledger.balances set balance = balance + 1 where user_id = 'hanzo/audit'")
    try:
        tampered = await asyncio.to_thread(verify)
        assert tampered.returncode == 1
        assert "user=hanzo/audit" in tampered.stdout and "stored=81 computed=80" in tampered.stdout
    finally:
        await platform.gateway.pool.execute(
            "update ledger.balances set balance = balance - 1 where user_id = 'hanzo/audit'")
