"""The PaymentIntent state machine (payments.md §2.1, §8.2, §9 1–19), decline messages
(§1.10, §9 49) and the offline provider's outcomes (§1.6): pure, no I/O."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from contracts.payments import Card, PaymentIntentCreateParams, PaymentMethodCreateParams
from services.payments.intents import domain
from services.payments.intents.domain import Intent
from services.payments.methods import domain as methods
from services.payments.providers import declines
from services.payments.providers.base import PaymentRequest, PaymentResult, ProviderError
from services.payments.providers.offline import OfflineProvider
from services.payments.topups import domain as topups
from tests.support import refused

NOW = datetime(2026, 4, 19, 10, 0, tzinfo=UTC)


def intent(status: str, amount: int = 5000, pm: str = "pm_123", **kw) -> Intent:
    return Intent(status=status, amount=amount, currency="usd", capture_method="automatic",
                  payment_method_id=pm, **kw)


def ok(ref: str, amount: int, status: str = "succeeded") -> PaymentResult:
    return PaymentResult(status=status, transaction_id=ref, amount=amount)


# ---- create ------------------------------------------------------------------------------


def test_a_new_intent_has_the_defaults():  # §9 19, 22
    new = domain.new_intent(PaymentIntentCreateParams(customerId="Hanzo/Alice", amount=2500))
    assert new.customer_id == "hanzo/alice"
    assert new.intent == Intent(status="requires_payment_method", amount=2500, currency="usd",
                                capture_method="automatic")
    assert new.confirmation_method == "automatic"
    with_method = domain.new_intent(PaymentIntentCreateParams(customerId="c", amount=1,
                                                              paymentMethodId="pm_1"))
    assert with_method.intent.status == "requires_confirmation"  # §9 23


@pytest.mark.parametrize(("params", "message"), [
    ({"customerId": "cus_123", "amount": 0}, "amount must be positive"),  # §9 20
    ({"customerId": "cus_123", "amount": -500}, "amount must be positive"),
    ({"amount": 1000}, "customerId is required"),  # §9 21
    ({"amount": 0}, "amount must be positive"),  # amount first
    ({"customerId": "c", "amount": 1, "currency": "US"}, "invalid currency"),
    ({"customerId": "c", "amount": 1, "currency": "usdt"}, "invalid currency"),
    ({"customerId": "c", "amount": 1, "captureMethod": "later"},
     "captureMethod must be automatic or manual"),
    ({"customerId": "c", "amount": 1, "confirmationMethod": "x"},
     "confirmationMethod must be automatic or manual"),
])
def test_create_refuses_bad_input(params, message):
    assert refused(domain.new_intent, PaymentIntentCreateParams(**params)) == (400, message)


def test_currency_is_lower_cased():
    assert domain.new_intent(PaymentIntentCreateParams(
        customerId="c", amount=1, currency=" EUR ")).intent.currency == "eur"


# ---- confirm -----------------------------------------------------------------------------


def test_confirm_goes_to_processing_with_the_method():  # §9 1, 2
    assert domain.begin_confirm(intent("requires_confirmation"), "").status == "processing"
    i = domain.begin_confirm(intent("requires_payment_method", pm="pm_456"), "")
    assert (i.status, i.payment_method_id) == ("processing", "pm_456")
    assert domain.begin_confirm(intent("requires_payment_method", pm=""),
                                "pm_b").payment_method_id == "pm_b"
    assert domain.begin_confirm(intent("requires_action"), "").status == "processing"


def test_confirm_without_a_method_is_refused():  # §9 3
    assert refused(domain.begin_confirm, intent("requires_confirmation", pm=""), "") == (
        400, "payment method is required to confirm")


@pytest.mark.parametrize("status", ["processing", "succeeded", "canceled", "requires_capture"])
def test_confirm_from_another_status_conflicts(status):  # §9 4
    assert refused(domain.begin_confirm, intent(status), "") == (
        409, f"cannot confirm payment intent in status {status}")


def test_a_provider_answer_sets_the_outcome():  # §9 5, 6, 7
    processing = intent("processing", amount=5000)
    i = domain.charged(processing, ok("ch_abc", 5000), "stripe")
    assert (i.status, i.provider_ref, i.provider_type, i.amount_received,
            i.amount_capturable) == ("succeeded", "ch_abc", "stripe", 5000, 0)
    assert domain.charged(intent("processing", amount=10000), ok("ch_partial", 7500),
                          "stripe").amount_received == 7500
    i = domain.charged(intent("processing", amount=8000),
                       ok("ch_auth", 8000, "requires_capture"), "stripe")
    assert (i.status, i.provider_ref, i.amount_capturable) == ("requires_capture", "ch_auth",
                                                               8000)
    action = PaymentResult(status="requires_action", transaction_id="pi_x", amount=0,
                           client_secret="sec")
    i = domain.charged(processing, action, "stripe")
    assert (i.status, i.client_secret) == ("requires_action", "sec")
    failed = domain.payment_failed(processing, "declined")
    assert (failed.status, failed.last_error) == ("requires_payment_method", "declined")


# ---- capture (§8.2) ------------------------------------------------------------------------


def held(capturable: int, amount: int | None = None) -> Intent:
    return intent("requires_capture", amount=amount or capturable,
                  amount_capturable=capturable)


@pytest.mark.parametrize(("capturable", "requested", "received"), [
    (10000, 0, 10000), (10000, 6000, 6000), (10000, -1, 10000), (5000, 5000, 5000)])
def test_capture_amounts(capturable, requested, received):  # §9 8, 9, 12
    i = held(capturable)
    amount = domain.capture_amount(i, requested)
    after = domain.captured(i, amount)
    assert (after.status, after.amount_received, after.amount_capturable) == (
        "succeeded", received, 0)


def test_capture_refusals():  # §9 10, 11
    assert refused(domain.capture_amount, held(10000), 12000) == (
        400, "capture amount 12000 exceeds capturable 10000")
    assert refused(domain.capture_amount, held(3000, 5000), 5000) == (
        400, "capture amount 5000 exceeds capturable 3000")
    for status in ("processing", "succeeded"):
        assert refused(domain.capture_amount, intent(status), 100) == (
            409, f"cannot capture payment intent in status {status}")


# ---- cancel --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["processing", "requires_payment_method",
                                    "requires_confirmation", "requires_action",
                                    "requires_capture"])
def test_cancel(status):  # §9 13
    i = domain.cancel(intent(status, amount_capturable=100), "duplicate", NOW)
    assert (i.status, i.cancellation_reason, i.canceled_at, i.amount_capturable) == (
        "canceled", "duplicate", NOW, 0)


@pytest.mark.parametrize("status", ["succeeded", "canceled"])
def test_cancel_from_a_final_status_conflicts(status):  # §9 14
    assert refused(domain.cancel, intent(status), "", NOW) == (
        409, f"cannot cancel payment intent in status {status}")


def test_status_strings():  # §9 15
    assert domain.STATUSES == ("requires_payment_method", "requires_confirmation",
                               "requires_action", "processing", "requires_capture",
                               "succeeded", "canceled")


def test_lifecycles():  # §9 16, 17, 18
    i = domain.begin_confirm(intent("requires_confirmation", 2500, "pm_test"), "")
    assert domain.charged(i, ok("ch_final", 2500), "x").status == "succeeded"
    i = domain.begin_confirm(intent("requires_confirmation", 9900, "pm_auth"), "")
    i = domain.charged(i, ok("ch_hold", 9900, "requires_capture"), "x")
    i = domain.captured(i, domain.capture_amount(i, 9900))
    assert (i.status, i.amount_received) == ("succeeded", 9900)
    i = domain.begin_confirm(intent("requires_confirmation", 1000, "pm_cancel"), "")
    assert domain.cancel(i, "changed_mind", NOW).status == "canceled"


def test_every_status_change_names_its_event():
    assert [domain.event_type(s) for s in ("succeeded", "requires_capture",
                                           "requires_payment_method", "canceled")] == [
        "payment_intent.succeeded", "payment_intent.requires_capture",
        "payment_intent.payment_failed", "payment_intent.canceled"]


# ---- decline messages (§1.10) ------------------------------------------------------------


@pytest.mark.parametrize(("code", "message"), [
    ("insufficient_funds", "Card declined — insufficient funds."),
    ("INSUFFICIENT_FUNDS", "Card declined — insufficient funds."),
    ("TRANSACTION_LIMIT",
     "Card declined — transaction limit reached. Please try a different card."),
    ("avs_rejected", "Card declined — billing address does not match. Please check your "
                     "address and try again."),
    ("CVV_FAILURE", "Card declined — incorrect security code (CVV)."),
    ("incorrect_cvc", "Card declined — incorrect security code (CVV)."),
    ("CARD_EXPIRED", "Card declined — card is expired."),
    ("INVALID_ACCOUNT", "Card declined — invalid card number."),
    ("stolen_card", "Card declined — please contact your bank."),
    ("DO_NOT_HONOR",
     "Card declined by your bank. Please try a different card or contact your bank."),
    ("CARD_DECLINED", "Card declined. Please try a different card."),
    ("weird", "Card declined. Please try a different card."),
    ("", "Unable to verify card. Please try again or use a different card."),
])
def test_decline_messages(code, message):  # §9 49, as every provider (the offline one too) says
    assert declines.decline_message((code,), {}) == message


# ---- payment methods ---------------------------------------------------------------------


def test_a_method_is_named_after_its_card_and_keeps_no_provider_keys():  # §9 36
    new = methods.new_method(msgspec_card_params())
    assert (new.customer_id, new.type, new.name, new.metadata) == (
        "hanzo/charlie", "card", "visa ending in 4242", {"note": "x"})
    assert refused(methods.new_method, PaymentMethodCreateParams()) == (
        400, "customerId is required")
    assert refused(methods.new_method, PaymentMethodCreateParams(customerId="c",
                                                                type="cash"))[0] == 400


def msgspec_card_params() -> PaymentMethodCreateParams:
    return PaymentMethodCreateParams(
        customerId="hanzo/charlie", type="card",
        card=Card(brand="visa", last4="4242", expMonth=12, expYear=2028),
        metadata={"note": "x", "verified": True})


def test_metadata_merges():
    old = {"a": 1, "b": 2, "verified": True}
    assert methods.merged_metadata(old, {"b": None, "c": 3, "verified": False}) == {
        "a": 1, "c": 3, "verified": True}
    assert methods.merged_metadata(old, None) == old


# ---- the offline provider and its selection ----------------------------------------------


def charge(token: str, amount: int = 100) -> PaymentRequest:
    return PaymentRequest(amount=amount, currency="usd", idempotency_key="k", token=token)


async def test_offline_outcomes_follow_stripes_test_cards():
    p = OfflineProvider()
    result = await p.charge(charge("4242424242424242"))
    assert (result.status, result.transaction_id, result.amount) == ("succeeded", "internal",
                                                                     100)
    assert (await p.authorize(charge("tok_visa"))).status == "requires_capture"
    for token, code in (("4000000000000002", "generic_decline"),
                        ("tok_4000000000009995", "insufficient_funds"),
                        ("tok_chargeDeclined", "generic_decline")):
        with pytest.raises(ProviderError) as e:
            await p.charge(charge(token))
        assert (e.value.kind, e.value.code) == ("declined", code)
        assert e.value.message == declines.decline_message((code,), {})
        with pytest.raises(ProviderError):
            await p.attach_method("cus", token, "k")
    # 0341 attaches, then fails to charge; its saved reference keeps the outcome.
    saved = await p.attach_method("cus", "4000000000000341", "k")
    assert saved.card is not None and (saved.card.brand, saved.card.last4) == ("visa", "0341")
    assert "4000000000000341" not in saved.provider_ref
    with pytest.raises(ProviderError):
        await p.charge(charge(saved.provider_ref))
    again = await p.attach_method("cus", "4000000000000341", "k")
    assert again == saved  # deterministic


def test_intents_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        intent("succeeded").status = "canceled"  # type: ignore[misc]


# ---- setup intents (§2.2, §9 31–35) --------------------------------------------------------


def test_a_new_setup_intent():  # §9 31, 32
    assert domain.new_setup("Cus_1", "", "") == (
        "cus_1", domain.Setup("requires_payment_method"), "off_session")
    assert domain.new_setup("c", "pm_1", "on_session")[1].status == "requires_confirmation"
    assert refused(domain.new_setup, "", "", "") == (400, "customerId is required")
    assert refused(domain.new_setup, "c", "", "sometimes") == (
        400, "usage must be on_session or off_session")


def test_setup_confirm_and_cancel():  # §9 33, 34, 35
    for status in ("requires_confirmation", "requires_payment_method"):
        s = domain.begin_setup(domain.Setup(status, "pm_1"), "")
        assert domain.set_up(s, "internal", "offline").status == "succeeded"
    assert refused(domain.begin_setup, domain.Setup("requires_confirmation"), "") == (
        400, "payment method is required to confirm")
    for status in ("processing", "succeeded", "canceled", "requires_action"):
        assert refused(domain.begin_setup, domain.Setup(status, "pm_1"), "") == (
            409, f"cannot confirm setup intent in status {status}")
    s = domain.set_up(domain.Setup("processing"), "old_ref", "x")
    assert domain.set_up(s, "new_ref", "x").provider_ref == "new_ref"
    for status in ("requires_payment_method", "requires_confirmation", "requires_action",
                   "processing"):
        s = domain.cancel_setup(domain.Setup(status), "abandoned", NOW)
        assert (s.status, s.cancellation_reason, s.canceled_at) == ("canceled", "abandoned",
                                                                   NOW)
    for status in ("succeeded", "canceled"):
        assert refused(domain.cancel_setup, domain.Setup(status), "", NOW) == (
            409, f"cannot cancel setup intent in status {status}")


def test_a_top_up_asked_for_again():
    # Answered: the stored answer. Its worker still at it: wait for the answer (or be told
    # it is in progress). Its worker gone: take it over. Another body: refused.
    assert topups.again("completed", "fp", "fp", stale=False) == "replay"
    assert topups.again("started", "fp", "fp", stale=False) == "wait"
    assert topups.again("charged", "fp", "fp", stale=True) == "resume"
    assert refused(topups.again, "completed", "fp", "other", False)[0] == 422


def test_a_top_up_and_its_payment_intent_share_their_id():
    assert topups.intent_id("tu_3xY9") == "pi_3xY9"
