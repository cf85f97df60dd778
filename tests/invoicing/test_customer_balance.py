"""Customer balances through the gateway (metering-invoicing.md §7, §11.10): reading one
(never creating it), adjustments (mint class, idempotent, lower-cased currency, atomic under
concurrency), the transactions newest first, bad input (4xx, nothing stored), other modes."""

from __future__ import annotations

import asyncio

from tests.support import get, new_user, post


async def adjust(http, org, customer, amount, key="sk_test", headers=None, **fields):
    return await post(http, "/customer-balance/adjustments",
                      {"customerId": customer, "amount": amount, **fields},
                      {**org.auth(key), **(headers or {})})


async def balance(http, org, customer, key="sk_test", **query):
    status, body, _ = await get(http, "/customer-balance", org.auth(key), customerId=customer,
                                **query)
    assert status == 200, body
    return body


async def transactions(http, org, key="sk_test", **query):
    status, body, _ = await get(http, "/balance-transactions", org.auth(key), **query)
    assert status == 200, body
    return body


async def test_a_new_customer_has_nothing_and_no_row_is_made(http, org, pool):  # 86, 92
    customer = new_user()
    assert await balance(http, org, customer) == {
        "customerId": customer, "currency": "usd", "balance": 0}
    assert await pool.fetchval("select count(*) from invoicing.customer_balances"
                               " where customer_id = $1", customer) == 0
    status, body, _ = await get(http, "/customer-balance", org.auth())
    assert (status, body["error"]["message"]) == (400, "customerId is required")


async def test_credit_then_debit_below_zero(http, org):  # 87, 89
    customer = new_user()
    status, first, _ = await adjust(http, org, customer, 5000, description="goodwill")
    assert status == 200, first
    assert {k: first[k] for k in ("customerId", "amount", "currency", "type", "endingBalance",
                                  "description")} == {
        "customerId": customer, "amount": 5000, "currency": "usd", "type": "adjustment",
        "endingBalance": 5000, "description": "goodwill"}
    assert first["id"].startswith("cbtxn_") and first["created"].endswith("Z")
    status, second, _ = await adjust(http, org, customer, -7000)
    assert (status, second["endingBalance"]) == (200, -2000)
    assert (await balance(http, org, customer))["balance"] == -2000
    listed = await transactions(http, org, customerId=customer)
    assert [t["id"] for t in listed] == [second["id"], first["id"]]  # newest first


async def test_without_a_customer_every_customer_is_listed(http, make_org):  # 89
    org = await make_org()
    a, b = new_user(), new_user()
    await adjust(http, org, a, 100)
    await adjust(http, org, b, 200)
    assert {t["customerId"] for t in await transactions(http, org)} == {a, b}


async def test_currency_is_one_balance_whatever_its_case(http, org):  # 90
    customer = new_user()
    await adjust(http, org, customer, 300, currency="USD")
    await adjust(http, org, customer, 200, currency="usd")
    assert (await balance(http, org, customer, currency="Usd"))["balance"] == 500
    assert (await balance(http, org, customer, currency="eur"))["balance"] == 0


async def test_concurrent_adjustments_lose_nothing(http, org):  # 91
    customer = new_user()
    replies = await asyncio.gather(*(adjust(http, org, customer, 100) for _ in range(20)))
    assert all(status == 200 for status, _, _ in replies)
    assert sorted(body["endingBalance"] for _, body, _ in replies) == list(range(100, 2001, 100))
    assert (await balance(http, org, customer))["balance"] == 2000
    assert len(await transactions(http, org, customerId=customer)) == 20


async def test_concurrent_debits_each_see_the_other(http, org):
    """Two debits at once never both start from the same balance: the ending balances are
    one after the other."""
    customer = new_user()
    await adjust(http, org, customer, 1000)
    replies = await asyncio.gather(*(adjust(http, org, customer, -600) for _ in range(2)))
    assert sorted(body["endingBalance"] for _, body, _ in replies) == [-200, 400]
    assert (await balance(http, org, customer))["balance"] == -200


async def test_an_adjustment_is_made_once_per_idempotency_key(http, org):
    customer = new_user()
    key = {"Idempotency-Key": f"adj-{customer}"}
    first = await adjust(http, org, customer, 700, headers=key)
    again = await adjust(http, org, customer, 700, headers=key)
    assert again[0] == 200 and again[1] == first[1]
    assert again[2].get("Idempotent-Replayed") == "true"
    assert (await balance(http, org, customer))["balance"] == 700


async def test_bad_adjustments_store_nothing(http, org):  # 88
    customer = new_user()
    cases = [({"customerId": customer, "amount": 0}, "amount must be non-zero"),
             ({"amount": 100}, "customerId is required"),
             ({"customerId": customer, "amount": 10**13}, "amount exceeds the allowed maximum"),
             ({"customerId": customer, "amount": 5, "currency": "??"}, "invalid currency")]
    for body, message in cases:
        status, reply, _ = await post(http, "/customer-balance/adjustments", body, org.auth())
        assert (status, reply["error"]["message"]) == (400, message), body
    status, _, _ = await post(http, "/customer-balance/adjustments", "not json",
                              org.auth())
    assert status == 400
    assert await transactions(http, org, customerId=customer) == []


async def test_publishable_keys_never_mint(http, org):
    customer = new_user()
    status, _, _ = await adjust(http, org, customer, 100, key="pk_test")
    assert status in (401, 403)
    assert (await balance(http, org, customer))["balance"] == 0


async def test_test_mode_balances_are_not_live(http, org):
    customer = new_user()
    await adjust(http, org, customer, 400)
    assert (await balance(http, org, customer, key="sk_live"))["balance"] == 0
    assert await transactions(http, org, key="sk_live", customerId=customer) == []
