"""The payment janitor (Kill Bill's model): intents left `processing` and refunds the
provider answered `pending`, or never answered (it timed out), are asked of the provider
again once they have waited the recovery window, and settled to its answer with the events
and the ledger postings of the normal path. A payment or refund the provider has a reference
for is retrieved by it, never sent again; one with no reference is asked again under the
same key (the provider replays its first answer)."""

from __future__ import annotations

from datetime import timedelta

from services.payments.intents.handlers import settle_interrupted_confirms
from services.payments.providers.base import PaymentResult, ProviderError, RefundResult
from services.payments.refunds.handlers import redrive_unanswered
from services.payments.selection import OFFLINE
from tests.support import (
    add_payment_method,
    events_of,
    eventually,
    get,
    journal_entries,
    new_user,
    paid_intent,
    post,
    providing,
)


class Scripted:
    """The offline provider, with the calls named in `answers` answered by them (a value, or
    an exception to raise) and recorded."""

    def __init__(self, **answers):
        self.answers, self.calls = answers, []

    def __getattr__(self, name):
        if name not in self.answers:
            return getattr(OFFLINE, name)

        async def call(*args):
            self.calls.append((name, args))
            answer = self.answers[name]
            if isinstance(answer, Exception):
                raise answer
            return answer
        return call

    def asked(self, name):
        return [args for called, args in self.calls if called == name]


TIMED_OUT = ProviderError("offline", "unavailable", "timeout", "provider timed out")


async def waited(pool, table, object_id, seconds):
    """The object untouched for `seconds` (the recovery window is 60 s)."""
    await pool.execute(f"update payments.{table} set updated_at = now() - $2::interval"
                       f" where id = $1", object_id, timedelta(seconds=seconds))


async def intent_of(http, org, intent_id):
    status, body, _ = await get(http, f"/payment-intents/{intent_id}", org.auth())
    assert status == 200, body
    return body


async def new_intent(http, org, amount):
    user = new_user()
    method = await add_payment_method(http, org, user)
    status, body, _ = await post(http, "/payment-intents", {
        "customerId": user, "amount": amount, "paymentMethodId": method["id"]}, org.auth())
    assert status == 201, body
    return body


async def test_a_timed_out_confirm_is_settled_to_the_providers_answer(
        http, org, pool, platform, nc, payments_service):
    intent = await new_intent(http, org, 2100)
    path = f"/payment-intents/{intent['id']}/confirm"
    with providing(payments_service, Scripted(charge=TIMED_OUT)) as timing_out:
        status, body, _ = await post(http, path, None, org.auth())
        assert (status, body["error"]["message"]) == (502, "payment provider unavailable")
        # The charge may have been made: the intent waits for the janitor, not a new charge.
        assert (await intent_of(http, org, intent["id"]))["status"] == "processing"
        status, body, _ = await post(http, path, None, org.auth())
        assert (status, body["error"]["message"]) == (
            409, "cannot confirm payment intent in status processing")
    charged = PaymentResult(status="succeeded", transaction_id="pi_remote", amount=2100)
    with providing(payments_service, Scripted(charge=charged)) as answering:
        await waited(pool, "payment_intents", intent["id"], 30)
        await settle_interrupted_confirms(payments_service.ctx)
        assert answering.calls == []  # within the recovery window: left to its request
        await waited(pool, "payment_intents", intent["id"], 90)
        await settle_interrupted_confirms(payments_service.ctx)
        await settle_interrupted_confirms(payments_service.ctx)  # nothing left to do
    settled = await intent_of(http, org, intent["id"])
    assert (settled["status"], settled["amountReceived"], settled["providerRef"]) == (
        "succeeded", 2100, "pi_remote")
    # Asked once more, under the first call's key: the provider replays, never charges twice.
    [(first,)] = timing_out.asked("charge")
    [(again,)] = answering.asked("charge")
    assert again.idempotency_key == first.idempotency_key
    assert await events_of(pool, intent["id"]) == ["payment_intent.created",
                                                   "payment_intent.succeeded"]
    entries = await eventually(lambda: journal_entries(platform, nc, org,
                                                       paymentIntentId=intent["id"]),
                               lambda found: len(found) == 1)
    assert sorted(p["amount"] for p in entries[0]["postings"]) == [-2100, 2100]


async def test_a_payment_the_provider_left_processing_is_retrieved_not_charged_again(
        http, org, pool, platform, nc, payments_service):
    intent = await new_intent(http, org, 3300)
    slow = PaymentResult(status="processing", transaction_id="pi_slow", amount=0)
    with providing(payments_service, Scripted(charge=slow, retrieve_payment=slow)) as provider:
        status, body, _ = await post(http, f"/payment-intents/{intent['id']}/confirm", None,
                                     org.auth())
        assert (status, body["status"], body["providerRef"]) == (200, "processing", "pi_slow")
        await waited(pool, "payment_intents", intent["id"], 90)
        await settle_interrupted_confirms(payments_service.ctx)  # still processing there
        assert provider.asked("retrieve_payment") == [("pi_slow",)]
        provider.answers["retrieve_payment"] = PaymentResult(
            status="succeeded", transaction_id="pi_slow", amount=3300)
        await waited(pool, "payment_intents", intent["id"], 90)
        await settle_interrupted_confirms(payments_service.ctx)
    assert len(provider.asked("charge")) == 1
    settled = await intent_of(http, org, intent["id"])
    assert (settled["status"], settled["amountReceived"]) == ("succeeded", 3300)
    assert await events_of(pool, intent["id"]) == [
        "payment_intent.created", "payment_intent.processing", "payment_intent.succeeded"]
    assert len(await eventually(lambda: journal_entries(platform, nc, org,
                                                        paymentIntentId=intent["id"]),
                                lambda found: len(found) == 1)) == 1


async def test_a_payment_the_provider_failed_fails(http, org, pool, platform, nc,
                                                   payments_service):
    intent = await new_intent(http, org, 900)
    slow = PaymentResult(status="processing", transaction_id="pi_doomed", amount=0)
    refused = ProviderError("offline", "declined", "insufficient_funds",
                            "Card declined — insufficient funds.")
    with providing(payments_service, Scripted(charge=slow, retrieve_payment=refused)):
        await post(http, f"/payment-intents/{intent['id']}/confirm", None, org.auth())
        await waited(pool, "payment_intents", intent["id"], 90)
        await settle_interrupted_confirms(payments_service.ctx)
    failed = await intent_of(http, org, intent["id"])
    assert (failed["status"], failed["lastError"], failed["amountReceived"]) == (
        "requires_payment_method", "Card declined — insufficient funds.", 0)
    assert await events_of(pool, intent["id"]) == [
        "payment_intent.created", "payment_intent.processing",
        "payment_intent.payment_failed"]
    assert await journal_entries(platform, nc, org, paymentIntentId=intent["id"]) == []
    # A new attempt may follow: the intent is confirmable again, under a new provider key.
    status, body, _ = await post(http, f"/payment-intents/{intent['id']}/confirm", None,
                                 org.auth())
    assert (status, body["status"]) == (200, "succeeded")


async def refund_of(http, org, refund_id):
    status, body, _ = await get(http, f"/refunds/{refund_id}", org.auth())
    assert status == 200, body
    return body


async def test_a_pending_refund_is_retrieved_and_settled(http, org, pool, platform, nc,
                                                         payments_service):
    paid = await paid_intent(http, org, 5000)
    pending = RefundResult(refund_id="re_slow", status="pending")
    with providing(payments_service, Scripted(refund=pending, retrieve_refund=pending)) as p:
        status, made, _ = await post(http, "/refunds", {"paymentIntentId": paid["id"],
                                                        "amount": 2000}, org.auth())
        assert (status, made["status"]) == (201, "pending")
        await redrive_unanswered(payments_service.ctx)
        assert p.asked("retrieve_refund") == []  # within the recovery window
        await waited(pool, "refunds", made["id"], 90)
        await redrive_unanswered(payments_service.ctx)  # still pending there
        p.answers["retrieve_refund"] = RefundResult(refund_id="re_slow", status="succeeded")
        await waited(pool, "refunds", made["id"], 90)
        await redrive_unanswered(payments_service.ctx)
        await redrive_unanswered(payments_service.ctx)  # nothing left to do
    assert p.asked("retrieve_refund") == [("re_slow",), ("re_slow",)]
    assert len(p.asked("refund")) == 1  # retrieved, never refunded again
    done = await refund_of(http, org, made["id"])
    assert (done["status"], done["providerRef"]) == ("succeeded", "re_slow")
    assert (await intent_of(http, org, paid["id"]))["amountRefunded"] == 2000
    assert await events_of(pool, made["id"]) == ["refund.created", "refund.succeeded"]
    assert len(await journal_entries(platform, nc, org, refundId=made["id"])) == 1


async def test_a_refund_the_provider_failed_frees_its_amount(http, org, pool, platform, nc,
                                                             payments_service):
    paid = await paid_intent(http, org, 5000)
    with providing(payments_service, Scripted(
            refund=RefundResult(refund_id="re_doomed", status="pending"),
            retrieve_refund=RefundResult(refund_id="re_doomed", status="failed"))):
        status, made, _ = await post(http, "/refunds", {"paymentIntentId": paid["id"]},
                                     org.auth())
        assert (status, made["amount"]) == (201, 5000)
        await waited(pool, "refunds", made["id"], 90)
        await redrive_unanswered(payments_service.ctx)
    failed = await refund_of(http, org, made["id"])
    assert (failed["status"], failed["failureReason"]) == (
        "failed", "the payment provider failed the refund")
    assert await events_of(pool, made["id"]) == ["refund.created", "refund.failed"]
    assert await journal_entries(platform, nc, org, refundId=made["id"]) == []
    status, again, _ = await post(http, "/refunds", {"paymentIntentId": paid["id"]},
                                  org.auth())
    assert (status, again["amount"]) == (201, 5000)  # its reservation is free again


async def test_a_timed_out_refund_is_asked_again_under_its_key(http, org, pool,
                                                               payments_service):
    paid = await paid_intent(http, org, 1500)
    with providing(payments_service, Scripted(refund=TIMED_OUT)) as timing_out:
        status, _, _ = await post(http, "/refunds", {"paymentIntentId": paid["id"]},
                                  org.auth())
        assert status == 502
    [made] = (await get(http, "/refunds", org.auth(), paymentIntentId=paid["id"]))[1]
    with providing(payments_service, Scripted(
            refund=RefundResult(refund_id="re_late", status="succeeded"))) as answering:
        await waited(pool, "refunds", made["id"], 90)
        await redrive_unanswered(payments_service.ctx)
    assert answering.asked("retrieve_refund") == []  # no reference to retrieve by
    [(first,)], [(again,)] = timing_out.asked("refund"), answering.asked("refund")
    assert again.idempotency_key == first.idempotency_key
    assert (await refund_of(http, org, made["id"]))["status"] == "succeeded"
