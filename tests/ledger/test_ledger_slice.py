"""The first ledger slice through the gateway: balances, deposits, usage debits, usage and
transaction lists, ledger.md §8 A."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from services.runtime.bus import forget_old_idempotency_keys
from tests.support import API, get, post, service


async def balance(http, org, user, currency="usd", key="sk_test"):
    status, body, _ = await get(http, "/balance", org.auth(key), user=user, currency=currency)
    assert status == 200, body
    return body


async def test_usage_record_then_deposit_then_balance(http, org):
    # A.1: a usage debit is recorded with its notes, tags and metadata.
    status, body, _ = await post(http, "/usage", {
        "user": "hanzo/bob", "currency": "usd", "amount": 25, "model": "gpt-4",
        "provider": "openai", "promptTokens": 100, "completionTokens": 50,
        "totalTokens": 150, "requestId": "req-test-1"}, org.auth())
    assert status == 201
    assert body["transactionId"] and body["type"] == "withdraw"
    assert body == {"transactionId": body["transactionId"], "user": "hanzo/bob", "amount": 25,
                    "currency": "usd", "type": "withdraw"}
    # A.3: a deposit echoes its tags and has no expiresAt.
    status, body, _ = await post(http, "/deposit", {
        "user": "hanzo/bob", "currency": "usd", "amount": 1000, "notes": "Test deposit",
        "tags": "test"}, org.auth())
    assert status == 201
    assert body["type"] == "deposit" and body["tags"] == "test" and "expiresAt" not in body
    # A.4
    assert await balance(http, org, "hanzo/bob") == {
        "user": "hanzo/bob", "currency": "usd", "balance": 975, "holds": 0, "available": 975}
    status, usage, _ = await get(http, "/usage", org.auth(), user="hanzo/bob")
    assert status == 200 and usage["count"] == 1 and usage["user"] == "hanzo/bob"
    item = usage["usage"][0]
    assert item["notes"] == "API usage: gpt-4 (150 tokens)"
    assert item["metadata"]["requestId"] == "req-test-1"
    assert item["metadata"]["totalTokens"] == 150


async def test_usage_with_zero_amount_is_skipped_and_writes_nothing(http, org):
    status, body, _ = await post(http, "/usage", {"user": "hanzo/bob", "amount": 0}, org.auth())
    assert (status, body) == (200, {"user": "hanzo/bob", "amount": 0, "status": "skipped"})
    status, usage, _ = await get(http, "/usage", org.auth(), user="hanzo/bob")
    assert usage["count"] == 0


async def test_user_is_trimmed_and_lowercased_everywhere(http, org):
    # A.5 and A.27 (ours): usage for `Hanzo/Alice` lands on `hanzo/alice`.
    status, body, _ = await post(http, "/deposit", {"user": "  HANZO/Bob ", "amount": 500},
                                 org.auth())
    assert status == 201 and body["user"] == "hanzo/bob"
    await post(http, "/usage", {"user": "Hanzo/Bob", "amount": 100}, org.auth())
    assert (await balance(http, org, "HANZO/BOB "))["balance"] == 400


async def test_usage_may_take_the_balance_negative(http, org):
    # A.8: no funds check on usage.
    status, _, _ = await post(http, "/usage", {"user": "hanzo/zed", "amount": 40}, org.auth())
    assert status == 201
    assert await balance(http, org, "hanzo/zed") == {
        "user": "hanzo/zed", "currency": "usd", "balance": -40, "holds": 0, "available": 0}


async def test_deposit_with_expiry_reports_expires_at(http, org):
    before = datetime.now(UTC)
    status, body, _ = await post(http, "/deposit", {"user": "hanzo/exp", "amount": 500,
                                                    "expiresIn": 7}, org.auth())
    assert status == 201
    expires = datetime.fromisoformat(body["expiresAt"].replace("Z", "+00:00"))
    assert timedelta(days=7) <= expires - before < timedelta(days=7, seconds=30)


async def test_balances_in_several_currencies_are_sorted(http, org):
    # A.16
    await post(http, "/deposit", {"user": "hanzo/multi", "amount": 5000, "currency": "JPY"},
               org.auth())
    await post(http, "/deposit", {"user": "hanzo/multi", "amount": 1000}, org.auth())
    status, body, _ = await get(http, "/balance/all", org.auth(), user="hanzo/multi")
    assert status == 200
    assert body == {"user": "hanzo/multi", "balances": [
        {"currency": "jpy", "balance": 5000, "holds": 0, "available": 5000},
        {"currency": "usd", "balance": 1000, "holds": 0, "available": 1000}]}
    assert (await balance(http, org, "hanzo/multi", currency="jpy"))["balance"] == 5000
    status, body, _ = await get(http, "/balance/all", org.auth(), user="hanzo/nobody")
    assert body == {"user": "hanzo/nobody", "balances": []}


async def test_test_and_live_money_are_separate(http, org):
    # A.13 / conventions 16.
    status, _, _ = await post(http, "/deposit", {"user": "hanzo/eve", "amount": 1000},
                              org.auth("sk_test"))
    assert status == 201
    assert (await balance(http, org, "hanzo/eve", key="sk_live"))["balance"] == 0
    assert (await balance(http, org, "hanzo/eve", key="sk_test"))["balance"] == 1000


async def test_organizations_never_see_each_other(http, make_org):
    a, b = await make_org(), await make_org()
    await post(http, "/deposit", {"user": "hanzo/shared", "amount": 700}, a.auth())
    await post(http, "/usage", {"user": "hanzo/shared", "amount": 5}, a.auth())
    assert (await balance(http, b, "hanzo/shared"))["balance"] == 0
    status, usage, _ = await get(http, "/usage", b.auth(), user="hanzo/shared")
    assert usage["count"] == 0
    status, txs, _ = await get(http, "/transactions", b.auth(), user="hanzo/shared")
    assert txs["count"] == 0 and txs["transactions"] == []


async def test_transactions_are_newest_first_and_paged(http, org):
    for amount in (1, 2, 3):
        await post(http, "/deposit", {"user": "hanzo/pager", "amount": amount}, org.auth())
    status, body, _ = await get(http, "/transactions", org.auth(), user="hanzo/pager")
    assert status == 200 and body["count"] == 3 and body["user"] == "hanzo/pager"
    assert [t["amount"] for t in body["transactions"]] == [3, 2, 1]
    first = body["transactions"][0]
    assert first["createdAt"].endswith("Z") and "." not in first["createdAt"]
    assert first["notes"] == "Deposit: 3 cents usd" and "tags" not in first
    status, body, _ = await get(http, "/transactions", org.auth(), user="hanzo/pager", limit="2")
    assert len(body["transactions"]) == 2 and body["count"] == 3
    status, body, _ = await get(http, "/transactions", org.auth(), user="hanzo/pager", offset="5")
    assert body["transactions"] == [] and body["count"] == 3
    for limit in ("0", "abc"):
        status, body, _ = await get(http, "/transactions", org.auth(), user="hanzo/pager",
                                    limit=limit)
        assert len(body["transactions"]) == 3
    status, body, _ = await get(http, "/transactions", org.auth(), user="hanzo/pager",
                                currency="eur")
    assert body == {"transactions": [], "count": 0, "user": "hanzo/pager"}


@pytest.mark.parametrize(("body", "message"), [
    ({"amount": 100}, "user is required"),
    ({"user": "x", "amount": 0}, "amount must be positive"),
    ({"user": "x", "amount": -5}, "amount must be positive"),
    ({"user": "x", "amount": "100"}, "invalid request body"),
    ({"user": "x", "amount": 1.5}, "invalid request body"),
    ({"user": "x", "amount": 2**63}, "invalid request body"),
    ({"user": "x", "amount": 5, "currency": "us dollars"}, "invalid currency"),
    ([1, 2], "invalid request body"),
])
async def test_deposit_refuses_bad_input(http, org, body, message):
    status, reply, _ = await post(http, "/deposit", body, org.auth())
    assert status == 400
    assert reply["error"]["type"] == "api-error" and reply["error"]["message"] == message


@pytest.mark.parametrize("raw", [b"", b"not-json", b"{", b'{"user": "x", "amount": 1e2}'])
async def test_malformed_bodies_are_400_not_500(http, org, raw):
    for path in ("/deposit", "/usage"):
        async with http.post(API + path, data=raw, headers=org.auth()) as r:
            assert r.status == 400
            assert (await r.json())["error"]["message"] == "invalid request body"


async def test_null_body_gets_field_messages(http, org):
    async with http.post(API + "/deposit", data=b"null", headers=org.auth()) as r:
        assert r.status == 400 and (await r.json())["error"]["message"] == "user is required"


async def test_keys_match_case_insensitively(http, org):
    # conventions 23: {"USER":"X","AMOUNT":5} → 201 for user `x`.
    status, body, _ = await post(http, "/deposit", {"USER": "X", "AMOUNT": 5}, org.auth())
    assert status == 201 and body["user"] == "x" and body["amount"] == 5


@pytest.mark.parametrize(("body", "message"), [
    ({"amount": 10}, "user is required"),
    ({"user": "x", "amount": "10"}, "invalid request body"),
    ({"user": "x", "amount": 10, "promptTokens": 1.5}, "invalid request body"),
    ({"user": "x", "amount": 10, "premium": "yes"}, "invalid request body"),
    ({"user": "x", "amount": 10, "currency": "$"}, "invalid currency"),
])
async def test_usage_refuses_bad_input(http, org, body, message):
    status, reply, _ = await post(http, "/usage", body, org.auth())
    assert status == 400 and reply["error"]["message"] == message


@pytest.mark.parametrize("path", ["/balance", "/balance/all", "/usage", "/transactions"])
async def test_reads_require_a_user(http, org, path):
    status, body, _ = await get(http, path, org.auth())
    assert status == 400 and body["error"]["message"] == "user query parameter is required"


async def test_balance_refuses_a_bad_currency(http, org):
    status, body, _ = await get(http, "/balance", org.auth(), user="x", currency="not a code")
    assert status == 400 and body["error"]["message"] == "invalid currency"


async def test_idempotent_deposit_replays_and_refuses_a_changed_body(http, org):
    # conventions 31.
    headers = {**org.auth(), "Idempotency-Key": "dep-1"}
    body = {"user": "hanzo/idem", "amount": 300}
    s1, first, h1 = await post(http, "/deposit", body, headers)
    s2, second, h2 = await post(http, "/deposit", body, headers)
    assert (s1, s2) == (201, 201) and first == second
    assert "Idempotent-Replayed" not in h1 and h2["Idempotent-Replayed"] == "true"
    assert (await balance(http, org, "hanzo/idem"))["balance"] == 300
    s3, reply, _ = await post(http, "/deposit", {**body, "amount": 301}, headers)
    assert s3 == 422
    assert reply["error"]["message"] == "idempotency key reused with different parameters"
    # The same key in live mode is another key.
    live = {**org.auth("sk_live"), "Idempotency-Key": "dep-1"}
    s4, _, h4 = await post(http, "/deposit", body, live)
    assert s4 == 201 and "Idempotent-Replayed" not in h4


async def test_idempotency_key_header_rules(http, org):
    body = {"user": "hanzo/keys", "amount": 1}
    both = {**org.auth(), "Idempotency-Key": "a", "X-Idempotency-Key": "b"}
    status, reply, _ = await post(http, "/deposit", body, both)
    assert status == 400 and reply["error"]["message"] == "conflicting idempotency keys"
    long_key = {**org.auth(), "Idempotency-Key": "k" * 256}
    status, reply, _ = await post(http, "/deposit", body, long_key)
    assert status == 400 and reply["error"]["message"] == "invalid idempotency key"
    alias = {**org.auth(), "X-Idempotency-Key": "alias-1"}
    await post(http, "/deposit", body, alias)
    status, _, headers = await post(http, "/deposit", body, alias)
    assert status == 201 and headers["Idempotent-Replayed"] == "true"
    assert (await balance(http, org, "hanzo/keys"))["balance"] == 1


async def test_usage_is_idempotent_by_request_id(http, org):
    body = {"user": "hanzo/rid", "amount": 7, "requestId": "req-42"}
    s1, first, _ = await post(http, "/usage", body, org.auth())
    s2, second, h2 = await post(http, "/usage", body, org.auth())
    assert (s1, s2) == (201, 201) and first == second
    assert h2["Idempotent-Replayed"] == "true"
    assert (await balance(http, org, "hanzo/rid"))["balance"] == -7
    status, reply, _ = await post(http, "/usage", {**body, "amount": 8}, org.auth())
    assert status == 422


async def test_concurrent_deposits_and_usage_give_the_exact_balance(http, org):
    user = "hanzo/busy"
    deposits = [post(http, "/deposit", {"user": user, "amount": 10}, org.auth())
                for _ in range(100)]
    usage = [post(http, "/usage", {"user": user, "amount": 3, "requestId": f"r{i}"},
                  org.auth()) for i in range(100)]
    results = await asyncio.gather(*deposits, *usage)
    assert all(status == 201 for status, _, _ in results)
    assert (await balance(http, org, user))["balance"] == 100 * 10 - 100 * 3
    status, body, _ = await get(http, "/transactions", org.auth(), user=user, limit="1000")
    assert body["count"] == 200


async def test_concurrent_replays_of_one_key_have_one_effect(http, org):
    headers = {**org.auth(), "Idempotency-Key": "burst"}
    results = await asyncio.gather(*[
        post(http, "/deposit", {"user": "hanzo/burst", "amount": 50}, headers)
        for _ in range(50)])
    statuses = {status for status, _, _ in results}
    assert statuses <= {201, 409}
    ids = {body["transactionId"] for status, body, _ in results if status == 201}
    assert len(ids) == 1
    assert (await balance(http, org, "hanzo/burst"))["balance"] == 50


async def test_a_key_still_in_progress_is_409(http, org, platform, database_url):
    import asyncpg

    from services.gateway import store

    org_id = (await store.org_by_name(platform.gateway.pool, org.name)).id
    holder = await asyncpg.connect(database_url)
    try:
        # Hold the key's lock as a concurrent request executing it would.
        await holder.execute("select pg_advisory_lock(hashtextextended($1, 0))",
                             f"ledger|{org_id}|0|slow-key")
        headers = {**org.auth(), "Idempotency-Key": "slow-key"}
        status, reply, _ = await post(http, "/deposit", {"user": "hanzo/slow", "amount": 5},
                                      headers)
        assert status == 409
        assert reply["error"]["message"] == "a request with this idempotency key is in progress"
    finally:
        await holder.close()
    # Released (the first attempt finished or died): the key works, and nothing was written.
    status, _, _ = await post(http, "/deposit", {"user": "hanzo/slow", "amount": 5}, headers)
    assert status == 201
    assert (await balance(http, org, "hanzo/slow"))["balance"] == 5


async def test_idempotency_keys_are_forgotten_after_seven_days(http, org, platform):
    headers = {**org.auth(), "Idempotency-Key": "old-key"}
    await post(http, "/deposit", {"user": "hanzo/aged", "amount": 5}, headers)
    ledger = service(platform, "ledger")
    await ledger.pool.execute("update ledger.idempotency_keys set created_at = now() -"
                              " interval '8 days' where key = 'old-key'")
    await forget_old_idempotency_keys(ledger.ctx)
    status, _, replayed = await post(http, "/deposit", {"user": "hanzo/aged", "amount": 5},
                                     headers)
    assert status == 201 and "Idempotent-Replayed" not in replayed  # a new effect now
    assert (await balance(http, org, "hanzo/aged"))["balance"] == 10
