"""Refunds (payments.md §4.4, §8.1, §9 59–67): the rules without I/O, then through the
gateway with the offline provider — the cumulative cap under concurrency, idempotent
replays, a provider that is unreachable, refuses or settles later, the re-drive job,
organizations and modes apart, events, and exactly one ledger journal entry per refund."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from contracts.invoicing import INVOICE_PAYMENT_GET
from contracts.payments import RefundCreateParams
from services.payments.providers.base import ProviderError, RefundResult
from services.payments.refunds import domain
from services.payments.refunds.domain import Refund
from services.payments.refunds.handlers import redrive_unanswered
from services.payments.selection import OFFLINE
from tests.conftest import bearer, iam_token
from tests.support import (
    events_of,
    eventually,
    get,
    journal_entries,
    new_user,
    paid_intent,
    post,
    providing,
    refused,
    responder,
)

# ---- the rules, without I/O ---------------------------------------------------------------


@pytest.mark.parametrize(("received", "refunded", "requested", "amount"), [  # §8.1 DO
    (5000, 0, 0, 5000), (5000, 0, 2000, 2000), (5000, 0, -5, 5000), (5000, 2000, 0, 3000),
    (5000, 2000, 3000, 3000),
])
def test_refund_amount(received, refunded, requested, amount):
    assert domain.refund_amount(requested, received, refunded) == amount


@pytest.mark.parametrize(("received", "refunded", "requested", "message"), [
    (5000, 0, 6000, "refund amount 6000 exceeds refundable amount 5000"),
    (5000, 2000, 4000, "refund amount 4000 exceeds refundable amount 3000"),
    (5000, 5000, 0, "payment intent already fully refunded"),
    (5000, 5000, 1, "payment intent already fully refunded"),
    (0, 0, 0, "payment intent already fully refunded"),
])
def test_refund_amount_refusals(received, refunded, requested, message):
    assert refused(domain.refund_amount, requested, received, refunded) == (400, message)


def test_what_a_request_asks():  # §9 59
    assert domain.asked(RefundCreateParams(paymentIntentId=" pi_1 ", invoiceId="in_1",
                                           amount=-1, reason="duplicate")) == domain.Asked(
        "pi_1", "in_1", -1, "duplicate")
    assert refused(domain.asked, RefundCreateParams(reason="requested_by_customer")) == (
        400, "either paymentIntentId or invoiceId is required")
    assert refused(domain.asked, RefundCreateParams(paymentIntentId="pi_1", reason="oops")) == (
        400, "reason must be one of duplicate, fraudulent, requested_by_customer")
    assert refused(domain.refundable, "requires_confirmation") == (
        400, "can only refund succeeded payment intents, current: requires_confirmation")
    assert domain.refundable("succeeded") is None


OTHER = dict(amount=3000, currency="eur", provider_ref="re_abc", reason="duplicate")


@pytest.mark.parametrize("status", ["pending", "failed", "canceled", "", "succeeded"])
def test_the_model_transitions_are_permissive(status):  # §9 67
    r = Refund(status=status, failure_reason="earlier", **OTHER)
    assert domain.mark_succeeded(r) == Refund(status="succeeded", failure_reason="earlier",
                                              **OTHER)
    assert domain.mark_failed(r, "declined") == Refund(status="failed",
                                                       failure_reason="declined", **OTHER)
    assert domain.mark_failed(r, "").failure_reason == ""


def test_the_providers_answer():
    r = Refund(status="pending", amount=100, currency="usd")
    assert domain.answered(r, RefundResult(refund_id="re_1", status="succeeded")) == Refund(
        status="succeeded", amount=100, currency="usd", provider_ref="re_1")
    assert domain.answered(r, RefundResult(refund_id="re_2", status="pending")) == Refund(
        status="pending", amount=100, currency="usd", provider_ref="re_2")
    assert domain.answered(r, RefundResult(refund_id="re_3", status="failed")) == Refund(
        status="failed", amount=100, currency="usd", provider_ref="re_3",
        failure_reason=domain.PROVIDER_FAILED)


# ---- through the gateway ------------------------------------------------------------------


async def refund(http, org, body, key="sk_test", headers=None):
    return await post(http, "/refunds", body, {**org.auth(key), **(headers or {})})


async def intent_of(http, org, intent_id, key="sk_test"):
    status, body, _ = await get(http, f"/payment-intents/{intent_id}", org.auth(key))
    assert status == 200, body
    return body


async def refund_of(http, org, refund_id):
    status, body, _ = await get(http, f"/refunds/{refund_id}", org.auth())
    assert status == 200, body
    return body


async def listed(http, org, key="sk_test", **query):
    status, body, _ = await get(http, "/refunds", org.auth(key), **query)
    assert status == 200, body
    return body


class Provider:
    """The offline provider, with refunds answered by `answer(request)` and counted."""

    def __init__(self, answer):
        self.answer, self.refunds = answer, []

    def __getattr__(self, name):
        return getattr(OFFLINE, name)

    async def refund(self, req):
        self.refunds.append(req)
        return self.answer(req)


def unreachable(req):
    raise ProviderError("offline", "unavailable", "timeout", "provider timed out")


def declining(req):
    raise ProviderError("offline", "declined", "refund_declined", "refund declined by bank")


async def test_a_full_refund(http, org, pool, platform, nc):  # §9 60
    paid = await paid_intent(http, org, 5000)
    assert paid["amountRefunded"] == 0
    status, body, _ = await refund(http, org, {"paymentIntentId": paid["id"],
                                               "reason": "requested_by_customer"})
    assert status == 201, body
    assert {k: body[k] for k in ("amount", "currency", "status", "paymentIntentId",
                                 "reason", "providerRef", "livemode")} == {
        "amount": 5000, "currency": "usd", "status": "succeeded",
        "paymentIntentId": paid["id"], "reason": "requested_by_customer",
        "providerRef": "internal", "livemode": False}
    assert body["id"].startswith("re_") and "failureReason" not in body
    assert "invoiceId" not in body and body["created"].endswith("Z")
    assert (await intent_of(http, org, paid["id"]))["amountRefunded"] == 5000
    status, got, _ = await get(http, f"/refunds/{body['id']}", org.auth())
    assert (status, got) == (200, body)
    assert await events_of(pool, body["id"]) == ["refund.created", "refund.succeeded"]
    [entry] = await journal_entries(platform, nc, org, refundId=body["id"])
    amounts = sorted(p["amount"] for p in entry["postings"])
    assert amounts == [-5000, 5000]
    assert await pool.fetchval("select posted_at is not null from payments.ledger_postings"
                               " where id = $1", f"refund:{body['id']}")


async def test_the_cap_is_cumulative(http, org):  # §9 61, 63
    paid = await paid_intent(http, org, 5000)
    target = {"paymentIntentId": paid["id"]}
    status, body, _ = await refund(http, org, {**target, "amount": 6000})
    assert (status, body["error"]["message"]) == (
        400, "refund amount 6000 exceeds refundable amount 5000")
    status, first, _ = await refund(http, org, {**target, "amount": 2000})
    assert (status, first["amount"]) == (201, 2000)
    status, body, _ = await refund(http, org, {**target, "amount": 4000})
    assert (status, body["error"]["message"]) == (
        400, "refund amount 4000 exceeds refundable amount 3000")
    status, rest, _ = await refund(http, org, {**target, "amount": -1})  # what is left
    assert (status, rest["amount"]) == (201, 3000)
    status, body, _ = await refund(http, org, target)
    assert (status, body["error"]["message"]) == (400, "payment intent already fully refunded")
    assert (await intent_of(http, org, paid["id"]))["amountRefunded"] == 5000


async def test_what_cannot_be_refunded(http, org):  # §9 59, 62, 64, 65
    user = new_user()
    _, unpaid, _ = await post(http, "/payment-intents", {
        "customerId": user, "amount": 700, "paymentMethodId": "pm_x"}, org.auth())
    status, body, _ = await refund(http, org, {"paymentIntentId": unpaid["id"]})
    assert (status, body["error"]["message"]) == (
        400, "can only refund succeeded payment intents, current: requires_confirmation")
    status, body, _ = await refund(http, org, {"reason": "requested_by_customer"})
    assert (status, body["error"]["message"]) == (
        400, "either paymentIntentId or invoiceId is required")
    status, body, _ = await refund(http, org, {"paymentIntentId": "pi_nope"})
    assert (status, body["error"]["message"]) == (404, "payment intent not found")
    # No invoicing answers yet: there is no invoice to refund.
    status, body, _ = await refund(http, org, {"invoiceId": "in_1"})
    assert (status, body["error"]["message"]) == (404, "invoice not found")
    assert await listed(http, org) == []


async def test_an_invoice_paid_through_an_intent_refunds_the_intent(http, org, nats_url):
    paid = await paid_intent(http, org, 9900)  # §9 65, with invoicing's answer stood in for
    async with responder(nats_url, INVOICE_PAYMENT_GET.subject,
                         lambda request: {"paymentIntentId": paid["id"]}):
        status, body, _ = await refund(http, org, {"invoiceId": "in_paid"})
    assert status == 201, body
    assert (body["amount"], body["currency"], body["invoiceId"], body["paymentIntentId"]) == (
        9900, "usd", "in_paid", paid["id"])
    assert [r["id"] for r in await listed(http, org, invoiceId="in_paid")] == [body["id"]]


async def test_list_and_get(http, org):  # §9 66
    one, two = await paid_intent(http, org, 1000), await paid_intent(http, org, 1000)
    made = []
    for intent, amount in ((one, 100), (two, 200), (one, 300)):
        status, body, _ = await refund(http, org, {"paymentIntentId": intent["id"],
                                                   "amount": amount})
        assert status == 201, body
        made.append(body["id"])
    assert [r["id"] for r in await listed(http, org)] == made[::-1]  # newest first
    assert [r["id"] for r in await listed(http, org, paymentIntentId=one["id"])] == [
        made[2], made[0]]
    assert [r["id"] for r in await listed(http, org, limit=1, startingAfter=made[2])] == [
        made[1]]
    assert await listed(http, org, paymentIntentId=one["id"], invoiceId="in_x") == []
    status, body, _ = await get(http, "/refunds/re_nope", org.auth())
    assert (status, body["error"]["message"]) == (404, "refund not found")


async def test_bad_input_is_refused_and_nothing_is_stored(http, org):
    paid = await paid_intent(http, org, 1000)
    pi = paid["id"]
    cases = [
        ({"paymentIntentId": pi, "reason": "because"},
         "reason must be one of duplicate, fraudulent, requested_by_customer"),
        ({"paymentIntentId": pi, "amount": "5"}, "invalid request body"),
        ({"paymentIntentId": pi, "amount": 1.5}, "invalid request body"),
        ({"paymentIntentId": pi, "amount": 2**63}, "invalid request body"),
        ({"paymentIntentId": 5}, "invalid request body"),
        ({"paymentIntentId": pi, "invoiceId": ["x"]}, "invalid request body"),
        ({"paymentIntentId": pi, "reason": 1}, "invalid request body"),
        ({"paymentIntentId": "p" * 256}, "paymentIntentId: at most 255 characters"),
        ({"paymentIntentId": pi, "invoiceId": "i" * 256},
         "invoiceId: at most 255 characters"),
        ({"paymentIntentId": pi, "reason": "r" * 65}, "reason: at most 64 characters"),
        ({"paymentIntentId": pi, "amount": 1001},
         "refund amount 1001 exceeds refundable amount 1000"),
    ]
    for body, message in cases:
        status, reply, _ = await refund(http, org, body)
        assert (status, reply["error"]["message"]) == (400, message), body
    for raw in (b"{", b"", b"[]", b'"x"'):
        status, reply, _ = await post(http, "/refunds", None, org.auth(), raw=raw)
        assert (status, reply["error"]["message"]) == (400, "invalid request body"), raw
    status, reply, _ = await refund(http, org, {"paymentIntentId": pi},
                                    headers={"Idempotency-Key": "k" * 256})
    assert status == 400 and reply["error"]["message"] == "invalid idempotency key"
    status, reply, _ = await get(http, "/refunds", org.auth(), paymentIntentId="p" * 256)
    assert (status, reply["error"]["message"]) == (400, "paymentIntentId: at most 255 characters")
    assert await listed(http, org) == []
    assert (await intent_of(http, org, pi))["amountRefunded"] == 0


async def test_concurrent_refunds_never_exceed_the_intent(http, org, pool, platform, nc):
    paid = await paid_intent(http, org, 10000)
    results = await asyncio.gather(*[
        refund(http, org, {"paymentIntentId": paid["id"], "amount": 3000})
        for _ in range(10)])
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [201] * 3 + [400] * 7, results
    assert {body["error"]["message"] for status, body, _ in results if status == 400} <= {
        "refund amount 3000 exceeds refundable amount 1000"}
    assert (await intent_of(http, org, paid["id"]))["amountRefunded"] == 9000
    for _, body, _ in results:
        if "id" in body:
            assert len(await journal_entries(platform, nc, org, refundId=body["id"])) == 1


async def test_the_same_key_replays_the_same_refund(http, org, pool, platform, nc):
    paid = await paid_intent(http, org, 4000)
    headers = {"Idempotency-Key": f"refund-{paid['id']}"}
    body = {"paymentIntentId": paid["id"], "amount": 1500}
    status, first, _ = await refund(http, org, body, headers=headers)
    status2, again, replay_headers = await refund(http, org, body, headers=headers)
    assert (status, status2) == (201, 201) and again == first
    assert replay_headers.get("Idempotent-Replayed") == "true"
    status, reply, _ = await refund(http, org, {**body, "amount": 99}, headers=headers)
    assert (status, reply["error"]["message"]) == (
        422, "idempotency key reused with different parameters")
    assert [r["id"] for r in await listed(http, org, paymentIntentId=paid["id"])] == [
        first["id"]]
    assert (await intent_of(http, org, paid["id"]))["amountRefunded"] == 1500
    assert len(await journal_entries(platform, nc, org, refundId=first["id"])) == 1
    assert await events_of(pool, first["id"]) == ["refund.created", "refund.succeeded"]


async def test_a_retry_while_the_provider_is_asked_is_in_progress(http, org,
                                                                  payments_service):
    paid = await paid_intent(http, org, 4000)

    class Slow(Provider):
        async def refund(self, req):
            await asyncio.sleep(0.3)  # the retry arrives meanwhile
            return await super().refund(req)

    headers = {"Idempotency-Key": f"slow-{paid['id']}"}
    with providing(payments_service, Slow(lambda req: RefundResult(
            refund_id="re_once", status="succeeded"))) as provider:
        results = await asyncio.gather(*[
            refund(http, org, {"paymentIntentId": paid["id"]}, headers=headers)
            for _ in range(2)])
    assert sorted((status, body.get("error", {}).get("message")) for status, body, _ in
                  results) == [(201, None), (409, "a request with this idempotency key is "
                                                   "in progress")]
    assert len(provider.refunds) == 1
    assert len(await listed(http, org, paymentIntentId=paid["id"])) == 1


async def test_organizations_and_modes_are_apart(http, org, make_org, payments_service):
    paid = await paid_intent(http, org, 1000)
    status, made, _ = await refund(http, org, {"paymentIntentId": paid["id"], "amount": 10})
    assert status == 201
    other = await make_org()
    for auth_org, key in ((other, "sk_test"), (org, "sk_live")):
        status, body, _ = await refund(http, auth_org, {"paymentIntentId": paid["id"]}, key)
        assert (status, body["error"]["message"]) == (404, "payment intent not found")
        status, body, _ = await get(http, f"/refunds/{made['id']}", auth_org.auth(key))
        assert (status, body["error"]["message"]) == (404, "refund not found")
        assert await listed(http, auth_org, key) == []
    # A live intent (PAYMENTS_OFFLINE=1) and its refund stay out of test mode.
    providers = payments_service.ctx.state.providers
    providers.offline_everywhere = True
    try:
        live = await paid_intent(http, org, 800, key="sk_live")
        status, live_refund, _ = await refund(http, org, {"paymentIntentId": live["id"]},
                                              "sk_live")
    finally:
        providers.offline_everywhere = False
    assert (status, live_refund["livemode"]) == (201, True)
    assert [r["id"] for r in await listed(http, org, "sk_live")] == [live_refund["id"]]
    assert [r["id"] for r in await listed(http, org)] == [made["id"]]


async def test_refunds_are_for_admins(http, org):
    paid = await paid_intent(http, org, 1000)
    user = bearer(iam_token(owner=org.name, name="alice"))
    status, _, _ = await post(http, "/refunds", {"paymentIntentId": paid["id"]}, user)
    assert status == 403
    for path in ("/refunds", "/refunds/re_x"):
        status, _, _ = await get(http, path, org.auth("pk_test"))
        assert status == 403
    assert await listed(http, org) == []


async def test_an_unreachable_provider_keeps_the_refund_pending_for_a_retry(
        http, org, pool, platform, nc, payments_service):
    paid = await paid_intent(http, org, 5000)
    headers = {"Idempotency-Key": f"refund-{paid['id']}"}
    body = {"paymentIntentId": paid["id"], "amount": 2000, "reason": "duplicate"}
    with providing(payments_service, Provider(unreachable)) as provider:
        status, reply, _ = await refund(http, org, body, headers=headers)
    assert (status, reply["error"]["message"]) == (502, "payment provider unavailable")
    [pending] = await listed(http, org, paymentIntentId=paid["id"])
    assert (pending["status"], pending["amount"]) == ("pending", 2000)
    # Its amount stays reserved.
    status, reply, _ = await refund(http, org, {"paymentIntentId": paid["id"], "amount": 3001})
    assert (status, reply["error"]["message"]) == (
        400, "refund amount 3001 exceeds refundable amount 3000")
    # The retry asks the provider again under the same key, and finishes the same refund.
    with providing(payments_service, Provider(lambda req: RefundResult(
            refund_id="re_provider", status="succeeded"))) as retried:
        status, done, _ = await refund(http, org, body, headers=headers)
    assert (status, done["id"], done["status"], done["providerRef"]) == (
        201, pending["id"], "succeeded", "re_provider")
    assert provider.refunds[0].idempotency_key == retried.refunds[0].idempotency_key
    assert (provider.refunds[0].transaction_id, provider.refunds[0].reason) == (
        "internal", "duplicate")
    assert len(await listed(http, org, paymentIntentId=paid["id"])) == 1
    assert (await intent_of(http, org, paid["id"]))["amountRefunded"] == 2000
    assert len(await journal_entries(platform, nc, org, refundId=done["id"])) == 1
    assert await events_of(pool, done["id"]) == ["refund.created", "refund.succeeded"]


async def test_the_job_finishes_refunds_the_provider_never_answered(
        http, org, pool, platform, nc, payments_service):
    paid = await paid_intent(http, org, 5000)
    with providing(payments_service, Provider(unreachable)):
        status, _, _ = await refund(http, org, {"paymentIntentId": paid["id"]})
    assert status == 502
    [pending] = await listed(http, org, paymentIntentId=paid["id"])

    async def stuck_for(seconds):
        await pool.execute("update payments.refunds set updated_at = now() - $2::interval"
                           " where id = $1", pending["id"], timedelta(seconds=seconds))

    counting = Provider(lambda req: RefundResult(refund_id="re_late", status="succeeded"))
    with providing(payments_service, counting):
        await stuck_for(30)
        await redrive_unanswered(payments_service.ctx)
        assert counting.refunds == []  # not stuck long enough yet
        await stuck_for(90)
        await redrive_unanswered(payments_service.ctx)  # (or the platform's own run of it)
        done = await eventually(lambda: refund_of(http, org, pending["id"]),
                                lambda r: r["status"] == "succeeded")
        await redrive_unanswered(payments_service.ctx)  # nothing left to do
    assert len(counting.refunds) == 1 and done["providerRef"] == "re_late"
    assert (await intent_of(http, org, paid["id"]))["amountRefunded"] == 5000
    assert len(await journal_entries(platform, nc, org, refundId=done["id"])) == 1
    assert await events_of(pool, done["id"]) == ["refund.created", "refund.succeeded"]


async def test_a_refused_refund_frees_its_amount(http, org, pool, platform, nc,
                                                 payments_service):
    paid = await paid_intent(http, org, 5000)
    headers = {"Idempotency-Key": f"refused-{paid['id']}"}
    message = "refund failed: refund declined by bank"
    with providing(payments_service, Provider(declining)):
        status, reply, _ = await refund(http, org, {"paymentIntentId": paid["id"]},
                                        headers=headers)
        assert (status, reply["error"]["message"]) == (400, message)
        status, reply, _ = await refund(http, org, {"paymentIntentId": paid["id"]},
                                        headers=headers)  # replayed
        assert (status, reply["error"]["message"]) == (400, message)
    [failed] = await listed(http, org, paymentIntentId=paid["id"])
    assert (failed["status"], failed["failureReason"]) == ("failed",
                                                           "refund declined by bank")
    assert await events_of(pool, failed["id"]) == ["refund.created", "refund.failed"]
    assert await journal_entries(platform, nc, org, refundId=failed["id"]) == []
    status, body, _ = await refund(http, org, {"paymentIntentId": paid["id"]})
    assert (status, body["amount"]) == (201, 5000)


async def test_a_refund_the_provider_settles_later_stays_pending(http, org, pool,
                                                                payments_service):
    paid = await paid_intent(http, org, 5000)
    with providing(payments_service, Provider(lambda req: RefundResult(
            refund_id="re_slow", status="pending"))):
        status, body, _ = await refund(http, org, {"paymentIntentId": paid["id"],
                                                   "amount": 1000})
    assert (status, body["status"], body["providerRef"]) == (201, "pending", "re_slow")
    assert (await intent_of(http, org, paid["id"]))["amountRefunded"] == 0
    assert await events_of(pool, body["id"]) == ["refund.created"]
    status, reply, _ = await refund(http, org, {"paymentIntentId": paid["id"]})
    assert (status, reply["amount"]) == (201, 4000)  # what is left beside the pending one
    await pool.execute("update payments.refunds set updated_at = now() - interval '1 hour'"
                       " where id = $1", body["id"])
    counting = Provider(unreachable)
    with providing(payments_service, counting):
        await redrive_unanswered(payments_service.ctx)
    # Answered: the job retrieves it (the offline provider's refunds all succeed), it never
    # refunds it again (test_janitor.py).
    assert counting.refunds == []
    assert (await refund_of(http, org, body["id"]))["status"] == "succeeded"
