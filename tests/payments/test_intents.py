"""Payment intents through the gateway (payments.md §3, §9 20–30): the offline provider in
test mode, none in live mode; idempotent replays; one charge under concurrent confirms;
organizations and modes apart; events in the outbox."""

from __future__ import annotations

import asyncio
import dataclasses
import re

from contracts.journal import PAYMENT_RECORD, JournalPaymentParams
from services.payments.common import new_events, service_scope
from services.payments.intents import domain, store
from services.payments.postings.sender import LEASE, Posting, recorded
from services.payments.selection import OFFLINE
from services.runtime.config import Settings
from tests.conftest import bearer, iam_token
from tests.support import add_payment_method, events_of, eventually, get, new_user, post

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


async def create(http, org, body, key="sk_test", headers=None):
    return await post(http, "/payment-intents", body, {**org.auth(key), **(headers or {})})


async def confirm(http, org, intent_id, body=None, key="sk_test", **kw):
    return await post(http, f"/payment-intents/{intent_id}/confirm", body, org.auth(key), **kw)


async def intent_with_method(http, org, amount=2500, token="tok_visa", **extra):
    user = new_user()
    method = await add_payment_method(http, org, user, token)
    status, body, _ = await create(http, org, {"customerId": user, "amount": amount,
                                               "paymentMethodId": method["id"], **extra})
    assert status == 201, body
    return body


async def test_create_validates_before_storing(http, org):  # §9 20, 21
    cases = [({"customerId": "cus_123", "amount": 0}, "amount must be positive"),
             ({"customerId": "cus_123", "amount": -500}, "amount must be positive"),
             ({"amount": 1000}, "customerId is required"),
             ({"amount": 0}, "amount must be positive"),
             ({"customerId": "c", "amount": 5, "currency": "dollars"}, "invalid currency"),
             ({"customerId": "c", "amount": 5, "captureMethod": "x"},
              "captureMethod must be automatic or manual")]
    for body, message in cases:
        status, reply, _ = await create(http, org, body)
        assert (status, reply["error"]["message"]) == (400, message), body
    for raw in (b"{", b"", b'{"amount": "5", "customerId": "c"}', b'{"amount": 1.5}'):
        status, reply, _ = await post(http, "/payment-intents", None, org.auth(), raw=raw)
        assert (status, reply["error"]["message"]) == (400, "invalid request body"), raw
    _, listed, _ = await get(http, "/payment-intents", org.auth())
    assert listed == []  # nothing stored


async def test_create_get_and_list(http, org):  # §9 22, 23, 24, 27, 30
    alice, bob = f"{org.name}/alice", f"{org.name}/bob"
    status, first, _ = await create(http, org, {"customerId": alice, "amount": 2500})
    assert status == 201
    assert {k: first[k] for k in ("customerId", "amount", "currency", "status",
                                  "captureMethod", "confirmationMethod", "amountCapturable",
                                  "amountReceived", "livemode")} == {
        "customerId": alice, "amount": 2500, "currency": "usd",
        "status": "requires_payment_method", "captureMethod": "automatic",
        "confirmationMethod": "automatic", "amountCapturable": 0, "amountReceived": 0,
        "livemode": False}
    assert "paymentMethodId" not in first and RFC3339.match(first["created"])
    assert first["id"].startswith("pi_")
    status, second, _ = await create(http, org, {"customerId": alice, "amount": 100,
                                                 "currency": "EUR", "paymentMethodId": "pm_1",
                                                 "metadata": {"order": "42"}})
    assert (second["status"], second["paymentMethodId"], second["currency"],
            second["metadata"]) == ("requires_confirmation", "pm_1", "eur", {"order": "42"})
    await create(http, org, {"customerId": bob, "amount": 7})
    status, got, _ = await get(http, f"/payment-intents/{second['id']}", org.auth())
    assert status == 200 and got == second
    _, mine, _ = await get(http, "/payment-intents", org.auth(), customerId=alice)
    assert [i["id"] for i in mine] == [second["id"], first["id"]]  # newest first
    _, page, _ = await get(http, "/payment-intents", org.auth(), customerId=alice, limit=1,
                           startingAfter=second["id"])
    assert [i["id"] for i in page] == [first["id"]]
    status, body, _ = await get(http, "/payment-intents/pi_nope", org.auth())
    assert (status, body["error"]["message"]) == (404, "payment intent not found")  # §9 26
    for action in ("confirm", "capture", "cancel"):
        status, body, _ = await post(http, f"/payment-intents/pi_nope/{action}", {},
                                     org.auth())
        assert (status, body["error"]["message"]) == (404, "payment intent not found")


async def test_confirm_offline_succeeds(http, org, pool):  # §9 2, 28
    created = await intent_with_method(http, org)
    status, body, _ = await confirm(http, org, created["id"])
    assert status == 200, body
    assert (body["status"], body["providerRef"], body["amountReceived"],
            body["amountCapturable"]) == ("succeeded", "internal", 2500, 0)
    assert await events_of(pool, created["id"]) == ["payment_intent.created",
                                                    "payment_intent.succeeded"]
    status, body, _ = await confirm(http, org, created["id"])
    assert (status, body["error"]["message"]) == (
        409, "cannot confirm payment intent in status succeeded")


async def test_confirm_with_a_method_in_the_body(http, org):  # §9 28, 29
    user = new_user()
    method = await add_payment_method(http, org, user)
    _, created, _ = await create(http, org, {"customerId": user, "amount": 300})
    status, body, _ = await confirm(http, org, created["id"], {"paymentMethodId": "pm_nope"})
    assert (status, body["error"]["message"]) == (400, "payment method not found")
    status, body, _ = await confirm(http, org, created["id"], raw=b'{"paymentMethodId": 5}')
    assert (status, body["error"]["message"]) == (400, "payment method is required to confirm")
    status, body, _ = await confirm(http, org, created["id"], {"paymentMethodId": method["id"]})
    assert (status, body["status"], body["paymentMethodId"]) == (200, "succeeded", method["id"])


async def test_a_method_of_another_customer_cannot_pay(http, org):
    other = await add_payment_method(http, org, new_user())
    _, created, _ = await create(http, org, {"customerId": new_user(), "amount": 300,
                                             "paymentMethodId": other["id"]})
    status, body, _ = await confirm(http, org, created["id"])
    assert (status, body["error"]["message"]) == (400, "payment method not found")
    _, after, _ = await get(http, f"/payment-intents/{created['id']}", org.auth())
    assert after["status"] == "requires_confirmation"


async def test_manual_capture(http, org, pool):  # §9 25, §8.2
    created = await intent_with_method(http, org, 10000, captureMethod="manual")
    status, held, _ = await confirm(http, org, created["id"])
    assert (status, held["status"], held["amountCapturable"]) == (200, "requires_capture",
                                                                  10000)
    path = f"/payment-intents/{created['id']}/capture"
    status, body, _ = await post(http, path, {"amountToCapture": 12000}, org.auth())
    assert (status, body["error"]["message"]) == (
        400, "capture amount 12000 exceeds capturable 10000")
    status, body, _ = await post(http, path, {"amountToCapture": 6000}, org.auth())
    assert (status, body["status"], body["amountReceived"], body["amountCapturable"]) == (
        200, "succeeded", 6000, 0)
    status, body, _ = await post(http, path, {}, org.auth())
    assert (status, body["error"]["message"]) == (
        409, "cannot capture payment intent in status succeeded")
    assert await events_of(pool, created["id"]) == [
        "payment_intent.created", "payment_intent.requires_capture",
        "payment_intent.succeeded"]
    other = await intent_with_method(http, org, 700, captureMethod="manual")
    await confirm(http, org, other["id"])
    status, body, _ = await post(http, f"/payment-intents/{other['id']}/capture", None,
                                 org.auth())  # no body: everything
    assert (status, body["amountReceived"]) == (200, 700)


async def test_cancel(http, org, pool):  # §3.6, §9 13, 14
    created = await intent_with_method(http, org, 800, captureMethod="manual")
    await confirm(http, org, created["id"])
    path = f"/payment-intents/{created['id']}/cancel"
    status, body, _ = await post(http, path, {"cancellationReason": "duplicate"}, org.auth())
    assert (status, body["status"], body["cancellationReason"], body["amountCapturable"]) == (
        200, "canceled", "duplicate", 0)
    assert RFC3339.match(body["canceledAt"])
    status, body, _ = await post(http, path, None, org.auth())
    assert (status, body["error"]["message"]) == (
        409, "cannot cancel payment intent in status canceled")
    assert (await events_of(pool, created["id"]))[-1] == "payment_intent.canceled"


async def test_a_declined_charge_is_recorded_and_can_be_retried(http, org, pool):
    # 4000…0341 attaches, then its charges are declined (Stripe's test card).
    user = new_user()
    declining = await add_payment_method(http, org, user, "4000000000000341")
    good = await add_payment_method(http, org, user)
    _, created, _ = await create(http, org, {"customerId": user, "amount": 900,
                                             "paymentMethodId": declining["id"]})
    message = ("charge failed: Card declined by your bank. Please try a different card or "
               "contact your bank.")
    status, body, _ = await confirm(http, org, created["id"])
    assert (status, body["error"]["message"]) == (400, message)
    _, after, _ = await get(http, f"/payment-intents/{created['id']}", org.auth())
    assert (after["status"], after["amountReceived"]) == ("requires_payment_method", 0)
    assert after["lastError"] == message.removeprefix("charge failed: ")
    status, body, _ = await confirm(http, org, created["id"], {"paymentMethodId": good["id"]})
    assert (status, body["status"], body["amountReceived"]) == (200, "succeeded", 900)
    assert "lastError" not in body
    assert await events_of(pool, created["id"]) == [
        "payment_intent.created", "payment_intent.payment_failed",
        "payment_intent.succeeded"]


async def test_live_mode_without_a_provider_never_fakes_a_payment(http, org, pool):
    user = new_user()
    method_body = {"customerId": user, "type": "card",
                   "card": {"brand": "visa", "last4": "4242", "expMonth": 1, "expYear": 2030}}
    status, method, _ = await post(http, "/payment-methods", method_body, org.auth("sk_live"))
    assert status == 201 and method["livemode"] is True  # stored, not verified
    status, body, _ = await post(http, "/payment-methods",
                                 {"customerId": user, "providerRef": "tok_visa"},
                                 org.auth("sk_live"))
    assert (status, body["error"]["message"]) == (400, "no payment processor available")
    _, created, _ = await create(http, org, {"customerId": user, "amount": 5000,
                                             "paymentMethodId": method["id"]}, key="sk_live")
    status, body, _ = await confirm(http, org, created["id"], key="sk_live")
    assert (status, body["error"]["message"]) == (400, "no payment processor available")
    _, after, _ = await get(http, f"/payment-intents/{created['id']}", org.auth("sk_live"))
    assert (after["status"], after["amountReceived"]) == ("requires_confirmation", 0)
    assert await events_of(pool, created["id"]) == ["payment_intent.created"]


async def test_modes_and_organizations_are_apart(http, org, make_org):
    created = await intent_with_method(http, org)
    other = await make_org()
    for auth in (org.auth("sk_live"), other.auth()):
        status, _, _ = await get(http, f"/payment-intents/{created['id']}", auth)
        assert status == 404
        status, _, _ = await post(http, f"/payment-intents/{created['id']}/confirm", {}, auth)
        assert status == 404
        _, listed, _ = await get(http, "/payment-intents", auth)
        assert created["id"] not in [i["id"] for i in listed]


async def test_intents_are_for_admins(http, org):
    user = bearer(iam_token(owner=org.name, name="alice"))
    status, _, _ = await create(http, org, {"customerId": f"{org.name}/alice", "amount": 1},
                                headers=user)
    assert status == 403
    status, _, _ = await get(http, "/payment-intents", org.auth("pk_test"))
    assert status == 403


async def test_idempotent_replays(http, org, pool):
    user = new_user()
    headers = {"Idempotency-Key": f"pi-{user}"}
    body = {"customerId": user, "amount": 1234}
    status, first, _ = await create(http, org, body, headers=headers)
    status2, again, replay_headers = await create(http, org, body, headers=headers)
    assert (status, status2) == (201, 201) and again == first
    assert replay_headers.get("Idempotent-Replayed") == "true"
    status, _, _ = await create(http, org, {**body, "amount": 99}, headers=headers)
    assert status == 422  # the same key with another body (idempotency mismatch)
    _, listed, _ = await get(http, "/payment-intents", org.auth(), customerId=user)
    assert len(listed) == 1
    # A confirm replayed under its key does not charge again.
    created = await intent_with_method(http, org, 500)
    key = {**org.auth(), "Idempotency-Key": f"confirm-{created['id']}"}
    path = f"/payment-intents/{created['id']}/confirm"
    first = await post(http, path, {}, key)
    second = await post(http, path, {}, key)
    assert first[0] == second[0] == 200 and first[1] == second[1]
    assert (await events_of(pool, created["id"])).count("payment_intent.succeeded") == 1


class Counting:
    """The offline provider, counting the charges it is asked for."""

    def __init__(self, inner):
        self.inner, self.charges = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def charge(self, req):
        self.charges += 1
        await asyncio.sleep(0.05)  # a provider takes a while: confirms overlap
        return await self.inner.charge(req)


async def test_concurrent_confirms_charge_once(http, org, pool, payments_service):
    created = await intent_with_method(http, org, 4200)
    providers = payments_service.ctx.state.providers
    counting = Counting(OFFLINE)

    async def issuer(scope, name):
        return counting

    providers.issuer = issuer  # the instance's, removed below
    try:
        results = await asyncio.gather(*[confirm(http, org, created["id"]) for _ in range(8)])
    finally:
        del providers.issuer
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] + [409] * 7, results
    assert counting.charges == 1
    assert (await events_of(pool, created["id"])).count("payment_intent.succeeded") == 1


async def test_a_write_after_another_writes_nothing(http, org, pool):
    """The intent's writes made from what a request read before (a confirm without a key,
    and the answer it applies after the provider's call) write nothing once another write
    came between: not the state, not its event, not the ledger posting it would owe."""
    created = await intent_with_method(http, org, 700)
    org_id = await pool.fetchval("select org_id from payments.payment_intents where id = $1",
                                 created["id"])
    read = await store.confirming(pool, org_id, False, created["id"], "", lock=False)
    processing = domain.begin_confirm(store.as_intent(read), "")
    written = await store.save_intent(pool, org_id, False, created["id"], processing, 0,
                                      version=read["version"])
    assert written["status"] == "processing"
    assert await store.save_intent(pool, org_id, False, created["id"],
                                   domain.payment_failed(processing, "no"), 0,
                                   version=read["version"]) is None

    succeeded = dataclasses.replace(processing, status="succeeded", amount_received=700)
    paid = Posting(f"payment:{created['id']}", PAYMENT_RECORD, JournalPaymentParams(
        paymentIntentId=created["id"], amount=700, currency=created["currency"],
        customerId=created["customerId"]))

    async def settle(version):
        ((event_id, payload),) = new_events([(
            "payment_intent.succeeded", "payment_intent", service_scope(org_id, False),
            created["id"], created["customerId"],
            {**created, "status": "succeeded", "amountReceived": 700})])
        settled = await store.settle(
            pool, org_id, False, created["id"], succeeded, 0, version,
            (event_id, "payment_intent.succeeded", payload), recorded(paid), LEASE)
        return settled, event_id

    owed = "select count(*) from payments.ledger_postings where id = $1"
    announced = "select count(*) from payments.outbox where id = $1"
    settled, event_id = await settle(read["version"])
    assert settled is None
    assert await pool.fetchval(announced, event_id) == 0
    assert await pool.fetchval(owed, paid.id) == 0
    _, stored, _ = await get(http, f"/payment-intents/{created['id']}", org.auth())
    assert stored["status"] == "processing"
    settled, event_id = await settle(written["version"])
    assert settled["status"] == "succeeded"
    assert await pool.fetchval(announced, event_id) == 1
    assert await pool.fetchval(owed, paid.id) == 1


async def test_a_confirm_the_janitor_settled_meanwhile_answers_it_as_settled(
        http, org, pool, payments_service):
    """While the provider is charging, the intent changes: the janitor took the confirm
    over (as after a crash), charged under the same provider key and settled it. The
    confirm's own answer is then not applied again: it answers the intent as it stands,
    announced once and posted to the journal once."""
    from services.payments.intents.handlers import settle_interrupted_confirms

    created = await intent_with_method(http, org, 1800)
    providers = payments_service.ctx.state.providers
    counting = Counting(OFFLINE)
    taken_over = False

    async def issuer(scope, name):
        return counting

    async def charge_while_the_janitor_settles(req):
        nonlocal taken_over
        if not taken_over:
            taken_over = True
            await pool.execute("update payments.payment_intents set updated_at = now()"
                               " - interval '2 minutes' where id = $1", created["id"])
            await settle_interrupted_confirms(payments_service.ctx)
        return await Counting.charge(counting, req)

    counting.charge = charge_while_the_janitor_settles
    providers.issuer = issuer  # the instance's, removed below
    try:
        status, body, _ = await confirm(http, org, created["id"])
    finally:
        del providers.issuer
    assert (status, body["status"], body["amountReceived"]) == (200, "succeeded", 1800)
    assert counting.charges == 2  # both under the attempt's key: one charge at the provider
    assert await events_of(pool, created["id"]) == ["payment_intent.created",
                                                    "payment_intent.succeeded"]
    entries = await eventually(lambda: pool.fetchval(
        "select count(*) from ledger.journal_entries where payment_intent_id = $1",
        created["id"]), lambda n: n >= 1)
    await asyncio.sleep(0.3)  # a second posting, were there one, would have landed by now
    assert entries == 1 == await pool.fetchval(
        "select count(*) from ledger.journal_entries where payment_intent_id = $1",
        created["id"])


async def test_payments_offline_serves_live_mode_too(http, org, payments_service):
    """`PAYMENTS_OFFLINE=1`: the offline provider everywhere, live mode included."""
    assert Settings.from_env({"PAYMENTS_OFFLINE": "1"}).payments_offline is True
    assert Settings.from_env({}).payments_offline is False
    providers = payments_service.ctx.state.providers
    providers.offline_everywhere = True
    try:
        user = new_user()
        method = await add_payment_method(http, org, user, key="sk_live")
        status, created, _ = await create(http, org, {"customerId": user, "amount": 100,
                                                      "paymentMethodId": method["id"]},
                                          key="sk_live")
        status, body, _ = await confirm(http, org, created["id"], key="sk_live")
        assert (status, body["status"], body["livemode"]) == (200, "succeeded", True)
    finally:
        providers.offline_everywhere = False


async def test_a_succeeded_payment_is_posted_to_the_journal_once(http, org, pool):
    """Confirm (automatic capture) and capture (manual) each owe the ledger one journal
    entry: cash in, owed to the customer; a replayed confirm posts nothing more."""
    intent = await intent_with_method(http, org, amount=4200)
    keyed = {**org.auth(), "Idempotency-Key": "confirm-posted-once"}
    path = f"/payment-intents/{intent['id']}/confirm"
    first = await post(http, path, None, keyed)
    again = await post(http, path, None, keyed)
    assert first[0] == again[0] == 200 and first[1] == again[1]
    held = await intent_with_method(http, org, amount=9000, captureMethod="manual")
    await confirm(http, org, held["id"])
    status, captured, _ = await post(http, f"/payment-intents/{held['id']}/capture",
                                     {"amountToCapture": 6000}, org.auth())
    assert (status, captured["amountReceived"]) == (200, 6000)

    async def entries(intent_id):
        return await pool.fetch(
            "select p.amount, a.name from ledger.journal_entries e"
            " join ledger.journal_postings p using (org_id, livemode)"
            " join ledger.journal_accounts a on (a.org_id, a.livemode, a.id)"
            " = (p.org_id, p.livemode, p.account_id)"
            " where e.payment_intent_id = $1 and p.entry_id = e.id order by p.amount desc",
            intent_id)

    posted = await eventually(lambda: entries(intent["id"]), lambda rows: len(rows) == 2)
    assert [(r["amount"], r["name"]) for r in posted] == [
        (4200, "platform:cash"), (-4200, f"customer_balance:{intent['customerId']}")]
    posted = await eventually(lambda: entries(held["id"]), lambda rows: len(rows) == 2,
                              timeout=20)
    assert [r["amount"] for r in posted] == [6000, -6000]


async def test_an_interrupted_confirm_is_settled_once(http, org, pool, payments_service):
    """A confirm that died between its two transactions (the intent `processing`, no word
    from the provider) is asked again with the same provider key and settled; the job
    running twice changes nothing more."""
    from services.payments.intents.handlers import settle_interrupted_confirms

    intent = await intent_with_method(http, org, amount=1500)
    await pool.execute(
        "update payments.payment_intents set status = 'processing',"
        " updated_at = now() - interval '2 minutes' where id = $1", intent["id"])
    await settle_interrupted_confirms(payments_service.ctx)
    await settle_interrupted_confirms(payments_service.ctx)
    _, settled, _ = await get(http, f"/payment-intents/{intent['id']}", org.auth())
    assert (settled["status"], settled["amountReceived"]) == ("succeeded", 1500)
    assert await events_of(pool, intent["id"]) == ["payment_intent.created",
                                                   "payment_intent.succeeded"]
    entries = await eventually(lambda: pool.fetchval(
        "select count(*) from ledger.journal_entries where payment_intent_id = $1",
        intent["id"]), lambda n: n >= 1)
    assert entries == 1


async def test_concurrent_captures_capture_once(http, org, pool):
    """Two captures of one hold race: the provider is asked under the intent's one capture
    key, the intent records one capture, the journal one payment; a keyed retry answers as
    the keyed capture did: its 200 replayed, or (it read the hold once the other had
    captured it) the 409 again."""
    held = await intent_with_method(http, org, amount=5000, captureMethod="manual")
    await confirm(http, org, held["id"])
    path = f"/payment-intents/{held['id']}/capture"
    keyed = {**org.auth(), "Idempotency-Key": f"capture-{held['id']}"}
    results = await asyncio.gather(post(http, path, {}, keyed), post(http, path, {}, org.auth()))
    assert [r[0] for r in results] in ([200, 200], [200, 409], [409, 200]), results
    again = await post(http, path, {}, keyed)
    if results[0][0] == 200:
        assert again[0] == 200 and again[2].get("Idempotent-Replayed") == "true"
        assert again[1] == results[0][1]
    else:
        assert again[0] == 409, again
    assert await events_of(pool, held["id"]) == [
        "payment_intent.created", "payment_intent.requires_capture",
        "payment_intent.succeeded"]
    entries = await eventually(lambda: pool.fetchval(
        "select count(*) from ledger.journal_entries where payment_intent_id = $1",
        held["id"]), lambda n: n >= 1, timeout=20)
    assert entries == 1
    # A hold released at the provider, then canceled once.
    other = await intent_with_method(http, org, amount=700, captureMethod="manual")
    await confirm(http, org, other["id"])
    status, canceled, _ = await post(http, f"/payment-intents/{other['id']}/cancel",
                                     {"cancellationReason": "abandoned"}, org.auth())
    assert (status, canceled["status"], canceled["amountCapturable"]) == (200, "canceled", 0)
