"""Top-ups through the gateway (payments.md §4.3, §8.6, §9 50–58): a saved method or a
one-time token is charged (the offline provider in test mode), the customer's balance is
credited once, the journal records the payment; bounds, replays and concurrent duplicates."""

from __future__ import annotations

import asyncio

import pytest

from contracts.envelope import Actor
from contracts.ledger import DEPOSIT_CREATE, TOPUP_CREDIT, DepositParams, TopupCreditParams
from contracts.payments import TopupParams, TopupTokenParams
from services.payments.topups import domain
from tests.conftest import bearer, iam_token
from tests.support import (
    Bus,
    add_payment_method,
    balance,
    eventually,
    get,
    ledger_verify,
    new_user,
    post,
    providing,
    refused,
    scope,
    service_down,
)


async def topup(http, org, body, key="sk_test", headers=None):
    return await post(http, "/topup", body, {**org.auth(key), **(headers or {})})


async def token_topup(http, org, body, key="sk_test", headers=None):
    return await post(http, "/topup/token", body, {**org.auth(key), **(headers or {})})


async def journal_payments(pool, intent_id):
    return await pool.fetchval(
        "select count(*) from ledger.journal_entries where payment_intent_id = $1", intent_id)


async def test_saved_method_top_up_credits_the_balance(http, org, pool):  # §9 54
    user = new_user()
    method = await add_payment_method(http, org, user)
    before = await balance(http, org, user)
    status, body, _ = await topup(http, org, {"userId": user, "paymentMethodId": method["id"],
                                              "amountCents": 500, "currency": "USD"})
    assert status == 200, body
    assert body["status"] == "ok" and body["balanceCents"] == before + 500
    assert await balance(http, org, user) == before + 500
    _, txs, _ = await get(http, "/transactions", org.auth(), user=user)
    credit = next(t for t in txs["transactions"] if t["id"] == body["transactionId"])
    assert credit["tags"] == "topup" and credit["amount"] == 500
    assert credit["notes"].startswith("Top-up via offline (ref: ")
    # The charge is a succeeded payment intent (recorded as the answer goes out), and the
    # journal records it once.
    async def listed() -> list:
        return (await get(http, "/payment-intents", org.auth(), customerId=user))[1]

    intents = await eventually(listed, bool)
    assert [(i["status"], i["amount"], i["amountReceived"]) for i in intents] == [
        ("succeeded", 500, 500)]
    assert await eventually(lambda: journal_payments(pool, intents[0]["id"]),
                            lambda n: n == 1) == 1


async def test_validation_order_and_bounds(http, org):  # §9 50, 51, 57; §8.6
    user = new_user()
    method = await add_payment_method(http, org, user)
    base = {"userId": user, "paymentMethodId": method["id"], "amountCents": 500}
    cases = [({**base, "amountCents": 0}, 400, "amountCents must be positive"),
             ({"paymentMethodId": method["id"], "amountCents": 500}, 400, "userId is required"),
             ({"amountCents": 0}, 400, "userId is required"),
             ({"userId": user, "amountCents": 500}, 400, "paymentMethodId is required"),
             ({**base, "amountCents": 99}, 400, "amountCents must be between 100 and 500000"),
             ({**base, "amountCents": 500001}, 400,
              "amountCents must be between 100 and 500000"),
             ({**base, "currency": "dollars"}, 400, "invalid currency"),
             ({**base, "paymentMethodId": "pm_nope"}, 404, "payment method not found"),
             ({**base, "userId": new_user()}, 400, "payment method does not belong to userId")]
    for body, code, message in cases:
        status, reply, _ = await topup(http, org, body)
        assert (status, reply["error"]["message"]) == (code, message), body
    for body in ({**base, "amountCents": 100}, {**base, "amountCents": 500000}):
        status, reply, _ = await topup(http, org, body)
        assert status == 200, reply
    assert await balance(http, org, user) == 500100  # only the two in bounds


def test_bounds_from_the_environment():  # §8.6
    assert domain.bounds({}) == (100, 500000)
    assert domain.bounds({"COMMERCE_TOPUP_MAX_CENTS": "abc"}) == (100, 500000)
    assert domain.bounds({"COMMERCE_TOPUP_MIN_CENTS": "-5"}) == (100, 500000)
    assert domain.bounds({"COMMERCE_TOPUP_MIN_CENTS": "50",
                          "COMMERCE_TOPUP_MAX_CENTS": "1000"}) == (50, 1000)


def test_end_users_credit_themselves():  # §4.3 DO 2
    user = scope("org_1", actor=Actor(kind="iam", role="user", user_id="acme/alice"))
    t = domain.token_topup(TopupTokenParams(sourceId="cnon:1", amountCents=500,
                                            userId="acme/mallory"), user, (100, 500000))
    assert t.customer_id == "acme/alice"
    admin = scope("org_1")
    assert domain.token_topup(TopupTokenParams(sourceId="cnon:1", amountCents=500,
                                               userId="Acme/Bob"), admin,
                              (100, 500000)).customer_id == "acme/bob"
    assert refused(domain.token_topup, TopupTokenParams(sourceId="cnon:1", amountCents=500),
                   admin, (100, 500000)) == (400, "userId is required")
    assert refused(domain.saved_method_topup, TopupParams(userId="a/b", paymentMethodId="pm",
                                                          amountCents=5),
                   (100, 500000)) == (400, "amountCents must be between 100 and 500000")


async def test_declines_charge_nothing(http, org):  # §9 53
    user = new_user()
    # Attaches, then fails to charge (Stripe's …0341).
    method = await add_payment_method(http, org, user, "4000000000000341")
    status, body, _ = await topup(http, org, {"userId": user, "paymentMethodId": method["id"],
                                              "amountCents": 500},
                                  headers={"Idempotency-Key": "declined-once"})
    assert status == 402, body
    assert body["error"]["message"] == (
        "Card declined by your bank. Please try a different card or contact your bank.")
    assert await balance(http, org, user) == 0
    # A declined top-up frees its key: the same key may try again (and is declined again).
    status, _, _ = await topup(http, org, {"userId": user, "paymentMethodId": method["id"],
                                           "amountCents": 500},
                               headers={"Idempotency-Key": "declined-once"})
    assert status == 402
    status, body, _ = await token_topup(http, org, {"sourceId": "tok_chargedeclined",
                                                    "amountCents": 500, "userId": user})
    assert status == 402, body


async def test_token_top_up_once_per_token_and_key(http, org, pool):  # §9 55, 56
    user = new_user()
    assert (await token_topup(http, org, {"amountCents": 500, "userId": user}))[1][
        "error"]["message"] == "sourceId is required"
    assert (await token_topup(http, org, {"sourceId": "cnon:x", "amountCents": 500}))[1][
        "error"]["message"] == "userId is required"
    body = {"sourceId": "cnon:card-nonce-ok", "amountCents": 700, "userId": user}
    first = await token_topup(http, org, body)
    again = await token_topup(http, org, body)  # no key: the token is the key
    assert first[0] == again[0] == 200 and first[1] == again[1]
    assert "Idempotent-Replayed" not in first[2]
    assert again[2].get("Idempotent-Replayed") == "true"
    keyed = {"Idempotency-Key": "topup-key-1"}
    other = {**body, "sourceId": "cnon:another"}
    one = await token_topup(http, org, other, headers=keyed)
    two = await token_topup(http, org, other, headers=keyed)
    assert one[0] == two[0] == 200 and one[1] == two[1]
    assert await balance(http, org, user) == 1400
    # The same key with another body is refused, and nothing moves.
    status, reply, _ = await token_topup(http, org, {**other, "amountCents": 900},
                                         headers=keyed)
    assert status == 422, reply
    assert await balance(http, org, user) == 1400


async def test_concurrent_duplicates_charge_once(http, org, pool):  # §9 56
    user = new_user()
    method = await add_payment_method(http, org, user)
    body = {"userId": user, "paymentMethodId": method["id"], "amountCents": 1000}
    replies = await asyncio.gather(*(
        topup(http, org, body, headers={"Idempotency-Key": "same-top-up"}) for _ in range(8)))
    statuses = sorted(r[0] for r in replies)
    assert statuses.count(200) >= 1 and set(statuses) <= {200, 409}, statuses
    for status, reply, _ in replies:
        if status == 409:
            assert reply["error"]["message"] == "top-up already in progress"
    assert await balance(http, org, user) == 1000
    # One charge, recorded (once its completion commits: the answer does not wait for it).
    charged = await eventually(lambda: pool.fetchval(
        "select count(*) from payments.payment_intents where customer_id = $1", user),
        lambda n: n >= 1)
    assert charged == 1
    # Without a key, every request is a top-up of its own.
    await asyncio.gather(*(topup(http, org, body) for _ in range(3)))
    assert await balance(http, org, user) == 4000


async def test_live_mode_without_a_provider(http, org):  # §9 52; §1.6
    user = new_user()
    method = await add_payment_method(http, org, user)
    status, body, _ = await token_topup(http, org, {"sourceId": "cnon:x", "amountCents": 500,
                                                    "userId": user}, key="sk_live")
    assert (status, body["error"]["message"]) == (422, "no payment processor available")
    # A test-mode method does not exist in live mode.
    status, body, _ = await topup(http, org, {"userId": user, "paymentMethodId": method["id"],
                                              "amountCents": 500}, key="sk_live")
    assert (status, body["error"]["message"]) == (404, "payment method not found")
    # An end user (IAM: live mode) is refused the same way; publishable keys not at all.
    alice = bearer(iam_token(owner=org.name, name="alice"))
    status, body, _ = await post(http, "/topup/token", {"sourceId": "cnon:y",
                                                        "amountCents": 500}, alice)
    assert (status, body["error"]["message"]) == (422, "no payment processor available")
    status, _, _ = await post(http, "/topup/token", {"sourceId": "cnon:y",
                                                     "amountCents": 500}, org.auth("pk_test"))
    assert status in (401, 403)
    status, _, _ = await post(http, "/topup", {"userId": user}, alice)
    assert status == 403


async def test_credit_waits_for_the_ledger(http, org, platform, database_url):  # §9 58
    """The ledger is down after the charge: 500 with the reference's message, the credit
    stays owed and is posted once the ledger is back; a retry never charges again."""
    user = new_user()
    method = await add_payment_method(http, org, user)
    body = {"userId": user, "paymentMethodId": method["id"], "amountCents": 800}
    keyed = {"Idempotency-Key": "ledger-was-down"}
    async with service_down(platform, "ledger"):
        status, reply, _ = await topup(http, org, body, headers=keyed)
        assert (status, reply["error"]["message"]) == (
            500, "charge succeeded but balance credit failed; contact support")
    assert await eventually(lambda: balance(http, org, user), lambda b: b == 800,
                            timeout=20) == 800
    status, reply, _ = await topup(http, org, body, headers=keyed)
    assert status == 200 and reply["balanceCents"] == 800
    assert await balance(http, org, user) == 800
    assert ledger_verify(database_url).returncode == 0


@pytest.mark.parametrize("path", ["/topup", "/topup/token"])
async def test_bad_bodies(http, org, path):
    for raw in (b"{", b"[]", b'{"amountCents": "5"}', b'{"amountCents": 1.5}'):
        status, reply, _ = await post(http, path, None, org.auth(), raw=raw)
        assert (status, reply["error"]["message"]) == (400, "invalid request body"), raw


async def test_the_ledger_credits_a_top_up_once(nc):
    """`billing.ledger.topup.credit` (bus only): the natural key is the top-up; only the
    platform may send it; clients cannot label a deposit as a top-up."""
    bus = Bus(nc)
    credit = TopupCreditParams(topupId="tu_once", user="acme/alice", amount=300,
                               provider="offline", providerRef="ch_1")
    first = await bus.ok(TOPUP_CREDIT.subject, credit)
    again = await bus.ok(TOPUP_CREDIT.subject, credit)
    assert first == again and first["balance"] == 300
    other = await bus.ok(TOPUP_CREDIT.subject, TopupCreditParams(
        topupId="tu_twice", user="acme/alice", amount=200, provider="offline"))
    assert other["balance"] == 500
    admin = Actor(kind="api_key", role="admin", may_mint=True)
    assert (await bus.error(TOPUP_CREDIT.subject, TopupCreditParams(
        topupId="tu_admin", user="acme/alice", amount=1), actor=admin))[0] == 403
    assert await bus.error(DEPOSIT_CREATE.subject, DepositParams(
        user="acme/alice", amount=5, tags=" TopUp ")) == (
        400, "tags 'TopUp' is reserved for the ledger")


async def test_the_recovery_job_finishes_what_a_worker_left(http, org, pool,
                                                            payments_service):
    """A top-up left `started` (its worker gone right after the claim) and one left
    `charged` (gone before the credit) are finished by the job alone: charged under the
    top-up's own provider key, credited once, answered to the client's later retry."""
    from services.payments.topups.handlers import finish_unfinished

    user = new_user()
    method = await add_payment_method(http, org, user)
    body = {"userId": user, "paymentMethodId": method["id"], "amountCents": 300}
    status, _, _ = await topup(http, org, body, headers={"Idempotency-Key": "left-charged"})
    assert status == 200
    # As if its worker died after the charge committed: the answer not yet kept (from the
    # completed row, once the worker's own completion, answered before it commits, has).
    completed = await eventually(lambda: pool.fetchval(
        "select status from payments.topups where customer_id = $1", user),
        lambda s: s == "completed")
    assert completed == "completed"
    await pool.execute(
        "update payments.topups set status = 'charged', reply = null,"
        " updated_at = '-infinity' where customer_id = $1", user)
    # As if a worker died right after claiming a key: nothing charged, nothing owed.
    org_id = await pool.fetchval("select org_id from payments.topups where customer_id = $1",
                                 user)
    await pool.execute(
        "insert into payments.topups (org_id, livemode, id, customer_id, idempotency_key,"
        " status, amount, currency, payment_method_id, source_token, provider, updated_at)"
        " values ($1, false, 'tu_left_started', $2, 'left-started', 'started', 400, 'usd',"
        " $3, $4, 'offline', '-infinity')", org_id, user, method["id"], method["providerRef"])
    await finish_unfinished(payments_service.ctx)
    await finish_unfinished(payments_service.ctx)  # again: nothing left to do
    states = await pool.fetch(
        "select idempotency_key, status from payments.topups where customer_id = $1"
        " order by idempotency_key", user)
    assert [tuple(r) for r in states] == [("left-charged", "completed"),
                                          ("left-started", "completed")]
    assert await balance(http, org, user) == 700
    _, intents, _ = await get(http, "/payment-intents", org.auth(), customerId=user)
    assert sorted(i["amount"] for i in intents) == [300, 400]
    status, _, headers = await topup(http, org, body,
                                     headers={"Idempotency-Key": "left-charged"})
    assert status == 200 and headers.get("Idempotent-Replayed") == "true"


async def test_refunding_a_top_up_takes_its_credit_back(http, org, payments_service):
    """A top-up's charge is refunded only with its credit: what is still available leaves
    the balance before the provider refunds; what was spent cannot be refunded; a refund
    the provider refuses gives the credit back; a replay moves nothing more."""
    from tests.payments.test_refunds import Provider, declining

    user = new_user()
    status, _, _ = await token_topup(http, org, {"sourceId": "cnon:refundable",
                                                 "amountCents": 1000, "userId": user})
    assert status == 200
    status, _, _ = await post(http, "/usage", {"user": user, "amount": 300, "model": "m",
                                               "requestId": f"r-{user}"}, org.auth())
    assert status == 201
    _, (charge,), _ = await get(http, "/payment-intents", org.auth(), customerId=user)
    path = "/refunds"
    status, body, _ = await post(http, path, {"paymentIntentId": charge["id"], "amount": 800},
                                 org.auth())
    assert (status, body["error"]["message"]) == (
        400, "refund failed: insufficient balance: have 700 cents, need 800 cents")
    assert await balance(http, org, user) == 700
    keyed = {**org.auth(), "Idempotency-Key": f"refund-{user}"}
    status, refunded, _ = await post(http, path, {"paymentIntentId": charge["id"],
                                                  "amount": 500}, keyed)
    assert (status, refunded["status"]) == (201, "succeeded"), refunded
    again = await post(http, path, {"paymentIntentId": charge["id"], "amount": 500}, keyed)
    assert again[0] == 201 and again[1]["id"] == refunded["id"]
    assert await balance(http, org, user) == 200
    with providing(payments_service, Provider(declining)):
        status, body, _ = await post(http, path, {"paymentIntentId": charge["id"],
                                                  "amount": 200}, org.auth())
    assert (status, body["error"]["message"]) == (400, "refund failed: refund declined by bank")
    assert await eventually(lambda: balance(http, org, user), lambda b: b == 200) == 200
    _, txs, _ = await get(http, "/transactions", org.auth(), user=user)
    moves = sorted(t["amount"] for t in txs["transactions"] if t["tags"] == "topup-refund")
    assert moves == [200, 200, 500]  # taken back twice, given back once
