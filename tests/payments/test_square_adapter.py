"""The Square adapter (payments.md §1.8, §1.10) through the official SDK's async client,
against a local server speaking Square's wire format (tests/payments/square_server.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from square.utils.webhooks_helper import verify_signature

from services.payments.providers import square as sq
from services.payments.providers.base import (
    PaymentRequest,
    Provider,
    ProviderError,
    RefundRequest,
    provider_key,
)
from services.payments.providers.square import SquareProvider
from tests.payments.square_server import FakeSquare, fixture

ORG = "org_square_tests"


def key(operation: str, object_id: str, attempt: int = 0) -> str:
    return provider_key(ORG, False, operation, object_id, attempt)


@pytest.fixture
async def square():
    server = FakeSquare()
    await server.start()
    yield server
    await server.stop()
    assert server.problems == []  # every request had Square's headers and body rules


@pytest.fixture
async def provider(square):
    p = SquareProvider(square.token, square.location_id, base_url=square.url, timeout=1.0,
                       max_retries=0)
    yield p
    await p.close()


def charge_request(object_id: str = "pi_1", amount: int = 1000, currency: str = "usd",
                   token: str = "cnon:card-nonce-ok", **kw) -> PaymentRequest:
    return PaymentRequest(amount=amount, currency=currency, token=token,
                          idempotency_key=key("charge", object_id), **kw)


async def declined(call) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await call
    return info.value


# -- payments -----------------------------------------------------------------------------

async def test_provider_satisfies_the_interface(provider):
    assert isinstance(provider, SquareProvider)
    typed: Provider = provider  # the Protocol's shape (checked by type checkers, used here)
    assert typed.name == "square"


async def test_charge_sends_square_create_payment(square, provider):
    req = charge_request(customer_id="W92WH6P11H4Z77CTET0RNTGFW8", description="Top-up",
                         order_id="ord_42")
    result = await provider.charge(req)
    [call] = square.calls("POST", "/v2/payments")
    assert call["body"] == {
        "source_id": "cnon:card-nonce-ok", "idempotency_key": req.idempotency_key,
        "amount_money": {"amount": 1000, "currency": "USD"}, "autocomplete": True,
        "customer_id": "W92WH6P11H4Z77CTET0RNTGFW8", "location_id": square.location_id,
        "note": "Top-up", "reference_id": "ord_42",
    }
    assert call["headers"]["Authorization"] == f"Bearer {square.token}"
    assert len(req.idempotency_key) <= 45
    assert result.status == "succeeded"
    assert result.transaction_id in square.payments
    assert result.amount == 1000 and result.fee == 0


async def test_authorize_then_capture_all(square, provider):
    auth = await provider.authorize(charge_request("pi_auth", amount=2500, currency="eur"))
    assert (auth.status, auth.amount) == ("requires_capture", 2500)
    [create] = square.calls("POST", "/v2/payments")
    assert create["body"]["autocomplete"] is False
    assert create["body"]["amount_money"] == {"amount": 2500, "currency": "EUR"}

    captured = await provider.capture(auth.transaction_id, 0, key("capture", "pi_auth"))
    assert (captured.status, captured.amount, captured.fee) == ("succeeded", 2500, 34)
    assert square.calls("PUT", r"/v2/payments/.+") == []  # no amount change
    assert len(square.calls("POST", r"/v2/payments/.+/complete")) == 1
    assert square.payments[auth.transaction_id]["status"] == "COMPLETED"


async def test_partial_capture_lowers_the_amount_before_completing(square, provider):
    auth = await provider.authorize(charge_request("pi_part", amount=1000))
    ckey = key("capture", "pi_part")
    captured = await provider.capture(auth.transaction_id, 600, ckey)
    assert (captured.status, captured.amount) == ("succeeded", 600)
    [update] = square.calls("PUT", f"/v2/payments/{auth.transaction_id}")
    assert update["body"] == {"idempotency_key": ckey,
                              "payment": {"amount_money": {"amount": 600, "currency": "USD"}}}
    order = [(r["method"], r["path"].rsplit("/", 1)[-1]) for r in square.requests]
    assert order[-3:] == [("GET", auth.transaction_id), ("PUT", auth.transaction_id),
                          ("POST", "complete")]


async def test_partial_capture_refused_when_square_cannot_edit_the_amount(square, provider):
    auth = await provider.authorize(charge_request("pi_fixed", amount=1000))
    square.payments[auth.transaction_id]["capabilities"] = ["EDIT_TIP_AMOUNT_UP"]
    err = await declined(provider.capture(auth.transaction_id, 400, key("capture", "pi_fixed")))
    assert (err.kind, err.message) == ("invalid", "partial capture not supported by square")
    assert square.calls("POST", r"/v2/payments/.+/complete") == []  # nothing over-captured
    assert square.payments[auth.transaction_id]["status"] == "APPROVED"


async def test_capture_above_the_authorized_amount_is_refused(square, provider):
    auth = await provider.authorize(charge_request("pi_over", amount=1000))
    err = await declined(provider.capture(auth.transaction_id, 1001, key("capture", "pi_over")))
    assert err.kind == "invalid"
    assert square.calls("POST", r"/v2/payments/.+/complete") == []


async def test_retried_capture_returns_the_completed_payment(square, provider):
    auth = await provider.authorize(charge_request("pi_twice", amount=800))
    ckey = key("capture", "pi_twice")
    first = await provider.capture(auth.transaction_id, 500, ckey)
    again = await provider.capture(auth.transaction_id, 500, ckey)
    assert first == again
    assert len(square.calls("POST", r"/v2/payments/.+/complete")) == 1
    assert len(square.calls("PUT", r"/v2/payments/.+")) == 1


async def test_cancel_voids_the_hold_and_is_safe_to_retry(square, provider):
    auth = await provider.authorize(charge_request("pi_void"))
    await provider.cancel(auth.transaction_id, key("cancel", "pi_void"))
    assert square.payments[auth.transaction_id]["status"] == "CANCELED"
    await provider.cancel(auth.transaction_id, key("cancel", "pi_void"))  # already voided: ok
    assert len(square.calls("POST", r"/v2/payments/.+/cancel")) == 2


async def test_cancel_of_a_captured_payment_is_refused(square, provider):
    paid = await provider.charge(charge_request("pi_paid"))
    err = await declined(provider.cancel(paid.transaction_id, key("cancel", "pi_paid")))
    assert (err.kind, err.code) == ("invalid", "DELAYED_TRANSACTION_CAPTURED")


# -- refunds ------------------------------------------------------------------------------

async def test_refund_is_in_the_payments_currency(square, provider):
    paid = await provider.charge(charge_request("pi_gbp", amount=1500, currency="gbp"))
    req = RefundRequest(transaction_id=paid.transaction_id, amount=500, currency="gbp",
                        idempotency_key=key("refund", "re_1"), reason="requested_by_customer")
    result = await provider.refund(req)
    [call] = square.calls("POST", "/v2/refunds")
    assert call["body"] == {"idempotency_key": req.idempotency_key,
                            "payment_id": paid.transaction_id,
                            "amount_money": {"amount": 500, "currency": "GBP"},
                            "reason": "requested_by_customer"}
    assert result.status == "pending" and result.refund_id in square.refunds
    square.refunds[result.refund_id]["status"] = "COMPLETED"


async def test_refund_beyond_the_payment_is_declined_by_square(square, provider):
    paid = await provider.charge(charge_request("pi_small", amount=300))
    err = await declined(provider.refund(RefundRequest(
        transaction_id=paid.transaction_id, amount=301, currency="usd",
        idempotency_key=key("refund", "re_big"))))
    assert (err.kind, err.code) == ("declined", "REFUND_AMOUNT_INVALID")


async def test_retried_refund_sends_the_same_key_and_refunds_once(square, provider):
    paid = await provider.charge(charge_request("pi_r", amount=1000))
    req = RefundRequest(transaction_id=paid.transaction_id, amount=1000, currency="usd",
                        idempotency_key=key("refund", "re_retry"))
    square.fail("POST", "/v2/refunds", "timeout")
    err = await declined(provider.refund(req))
    assert (err.kind, err.code) == ("unavailable", "timeout")
    result = await provider.refund(req)  # Square already refunded: the same refund comes back
    keys = [c["body"]["idempotency_key"] for c in square.calls("POST", "/v2/refunds")]
    assert keys == [req.idempotency_key] * 2
    assert list(square.refunds) == [result.refund_id]


# -- customers and cards ------------------------------------------------------------------

async def test_create_customer_splits_the_name(square, provider):
    ckey = key("customer", "alice")
    customer_id = await provider.create_customer("alice@example.com", "Amelia Mary Earhart", ckey)
    [call] = square.calls("POST", "/v2/customers")
    assert call["body"] == {"idempotency_key": ckey, "email_address": "alice@example.com",
                            "given_name": "Amelia", "family_name": "Mary Earhart"}
    assert customer_id and customer_id == await provider.create_customer(
        "alice@example.com", "Amelia Mary Earhart", ckey)


async def test_create_customer_needs_an_email_or_a_name(square, provider):
    err = await declined(provider.create_customer("", " ", key("customer", "nobody")))
    assert err.kind == "invalid"
    assert square.requests == []


async def test_attach_vaults_the_card_on_file(square, provider):
    mkey = key("attach", "pm_1")
    method = await provider.attach_method("VDKXEEKPJN48QDG3BGGFAK05P8", "cnon:card-nonce-ok", mkey)
    [call] = square.calls("POST", "/v2/cards")
    assert call["body"] == {"idempotency_key": mkey, "source_id": "cnon:card-nonce-ok",
                            "card": {"customer_id": "VDKXEEKPJN48QDG3BGGFAK05P8"}}
    assert method.provider_ref.startswith("ccof:") and method.provider_ref in square.cards
    assert method.customer_ref == "VDKXEEKPJN48QDG3BGGFAK05P8"
    assert (method.card.brand, method.card.last4, method.card.exp_month,
            method.card.exp_year) == ("visa", "1111", 11, 2022)


async def test_attach_refused_card_is_declined_with_the_message(square, provider):
    err = await declined(provider.attach_method(
        "CUST1", "cnon:card-nonce-rejected-cvv", key("attach", "pm_cvv")))
    assert (err.kind, err.code, err.message) == (
        "declined", "CVV_FAILURE", "Card declined — incorrect security code (CVV).")
    assert square.cards == {}


async def test_setup_saves_the_card(square, provider):
    result = await provider.setup("CUST1", "cnon:card-nonce-ok", key("setup", "seti_1"))
    assert result.status == "succeeded"
    assert result.method is not None and result.setup_id == result.method.provider_ref
    assert square.cards[result.setup_id]["customer_id"] == "CUST1"


async def test_detach_disables_the_card(square, provider):
    method = await provider.attach_method("CUST1", "cnon:card-nonce-ok", key("attach", "pm_d"))
    await provider.detach_method(method.provider_ref, key("detach", "pm_d"))
    assert square.cards[method.provider_ref]["enabled"] is False
    assert len(square.calls("POST", f"/v2/cards/{method.provider_ref}/disable")) == 1
    err = await declined(provider.detach_method("ccof:unknown", key("detach", "pm_x")))
    assert (err.kind, err.code) == ("invalid", "NOT_FOUND")


# -- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("code, message", [
    ("CARD_DECLINED", "Card declined. Please try a different card."),
    ("INSUFFICIENT_FUNDS", "Card declined — insufficient funds."),
    ("CVV_FAILURE", "Card declined — incorrect security code (CVV)."),
    ("CARD_EXPIRED", "Card declined — card is expired."),
    ("ADDRESS_VERIFICATION_FAILURE",
     "Card declined — billing address does not match. Please check your address and try again."),
    ("TRANSACTION_LIMIT",
     "Card declined — transaction limit reached. Please try a different card."),
    ("INVALID_CARD", "Card declined — invalid card number."),
    ("GENERIC_DECLINE",
     "Card declined by your bank. Please try a different card or contact your bank."),
    ("INVALID_EXPIRATION", "Card declined. Please try a different card."),
])
async def test_declines_map_to_the_1_10_messages(square, provider, code, message):
    square.fail("POST", "/v2/payments", code)
    err = await declined(provider.charge(charge_request(f"pi_{code}")))
    assert (err.provider, err.kind, err.code, err.message) == ("square", "declined", code, message)


async def test_sandbox_decline_nonces(square, provider):
    for nonce, code in [("cnon:card-nonce-declined", "CARD_DECLINED"),
                        ("cnon:card-nonce-rejected-postalcode", "ADDRESS_VERIFICATION_FAILURE")]:
        err = await declined(provider.charge(charge_request(nonce, token=nonce)))
        assert (err.kind, err.code) == ("declined", code)
    assert square.payments == {}


async def test_unknown_decline_codes_and_no_code(square, provider):
    assert sq.decline_message("SOMETHING_NEW") == "Card declined. Please try a different card."
    assert sq.decline_message("") == (
        "Unable to verify card. Please try again or use a different card.")


async def test_invalid_requests_map_to_invalid(square, provider):
    square.fail("POST", "/v2/payments", "INVALID_VALUE")
    err = await declined(provider.charge(charge_request("pi_inv")))
    assert (err.kind, err.code) == ("invalid", "INVALID_VALUE")
    err = await declined(provider.capture("missing-payment", 0, key("capture", "x")))
    assert (err.kind, err.code) == ("invalid", "NOT_FOUND")


async def test_bad_credentials_are_invalid_not_a_decline(square):
    wrong = SquareProvider("not-the-token", square.location_id, base_url=square.url,
                           max_retries=0)
    try:
        err = await declined(wrong.charge(charge_request("pi_auth_err")))
    finally:
        await wrong.close()
    assert (err.kind, err.code) == ("invalid", "UNAUTHORIZED")
    square.problems.clear()  # the server noted the wrong token, as it should


async def test_bad_input_never_reaches_square(square, provider):
    for req in (charge_request("pi_zero", amount=0), charge_request("pi_cur", currency="us"),
                charge_request("pi_tok", token="")):
        err = await declined(provider.charge(req))
        assert err.kind == "invalid"
    long_key = PaymentRequest(amount=100, currency="usd", token="cnon:card-nonce-ok",
                              idempotency_key="k" * 46)
    assert (await declined(provider.charge(long_key))).kind == "invalid"
    assert square.requests == []


@pytest.mark.parametrize("status, code", [(500, "INTERNAL_SERVER_ERROR"),
                                          (503, "SERVICE_UNAVAILABLE"),
                                          (429, "RATE_LIMITED")])
async def test_5xx_and_rate_limits_are_unavailable(square, provider, status, code):
    square.fail("POST", "/v2/payments", status)
    err = await declined(provider.charge(charge_request(f"pi_{status}")))
    assert (err.kind, err.code) == ("unavailable", code)
    assert square.payments == {}


async def test_temporary_error_is_unavailable(square, provider):
    square.fail("POST", "/v2/payments", "TEMPORARY_ERROR")
    err = await declined(provider.charge(charge_request("pi_tmp")))
    assert (err.kind, err.code) == ("unavailable", "TEMPORARY_ERROR")


async def test_unreachable_square_is_unavailable():
    gone = SquareProvider("tok", "L1", base_url="http://127.0.0.1:9", timeout=1.0,
                          max_retries=0)
    try:
        err = await declined(gone.charge(charge_request("pi_gone")))
    finally:
        await gone.close()
    assert (err.kind, err.code) == ("unavailable", "connection")


async def test_timeout_then_retry_charges_once_with_the_same_key(square, provider):
    req = charge_request("pi_timeout", amount=4200)
    square.fail("POST", "/v2/payments", "timeout")
    err = await declined(provider.charge(req))
    assert (err.kind, err.code) == ("unavailable", "timeout")
    result = await provider.charge(req)  # the caller retries the same logical charge
    calls = square.calls("POST", "/v2/payments")
    assert [c["body"]["idempotency_key"] for c in calls] == [req.idempotency_key] * 2
    assert list(square.payments) == [result.transaction_id]  # charged once at Square
    assert result.status == "succeeded"


async def test_sdk_retry_of_a_5xx_sends_the_same_key(square):
    p = SquareProvider(square.token, square.location_id, base_url=square.url, timeout=5.0,
                       max_retries=1)
    try:
        square.fail("POST", "/v2/payments", 503)
        req = charge_request("pi_sdk_retry")
        result = await p.charge(req)
    finally:
        await p.close()
    calls = square.calls("POST", "/v2/payments")
    assert len(calls) == 2 and calls[0]["body"] == calls[1]["body"]
    assert calls[0]["body"]["idempotency_key"] == req.idempotency_key
    assert list(square.payments) == [result.transaction_id]


async def test_same_key_with_another_amount_is_refused(square, provider):
    await provider.charge(charge_request("pi_same", amount=100))
    err = await declined(provider.charge(charge_request("pi_same", amount=200)))
    assert (err.kind, err.code) == ("invalid", "IDEMPOTENCY_KEY_REUSED")
    assert len(square.payments) == 1


# -- webhooks (§1.8.2, §1.8.3) -------------------------------------------------------------

SPEC_URL = "https://commerce.hanzo.ai/v1/billing/webhooks/square"
SPEC_BODY = (b'{"merchant_id":"M1","type":"payment.updated","event_id":"e-1",'
             b'"created_at":"2026-04-19T10:00:00Z","data":{"type":"payment","id":"P1",'
             b'"object":{"payment":{"id":"P1","status":"COMPLETED"}}}}')


def sign(key_: str, url: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(key_.encode(), url.encode() + body,
                                     hashlib.sha256).digest()).decode()


async def test_webhook_spec_example_validates(provider):
    headers = {"X-Square-Hmacsha256-Signature": "kc+g+4lIZ+C4j6yaO0nBoHXHRayPtHyIFUuV1ImvlJo="}
    event = provider.verify_webhook(SPEC_BODY, headers, "sqkey_test", SPEC_URL)
    assert (event.id, event.type, event.provider) == ("e-1", "payment.updated", "square")
    assert event.data == {"id": "P1", "status": "COMPLETED"}  # unwrapped from {"payment": …}
    assert event.timestamp == 1776592800
    # The same scheme as the SDK's own helper.
    assert verify_signature(request_body=SPEC_BODY.decode(), signature_header=headers[
        "X-Square-Hmacsha256-Signature"], signature_key="sqkey_test", notification_url=SPEC_URL)


@pytest.mark.parametrize("headers, secret, url", [
    ({"x-square-hmacsha256-signature": "vb55qCE7KjDUxiWmp6Doc+bboD226RPODOwXQJnzH2k="},
     "sqkey_test", SPEC_URL),  # the reference's body-only signature
    ({"x-square-hmacsha256-signature": "kc+g+4lIZ+C4j6yaO0nBoHXHRayPtHyIFUuV1ImvlJo="},
     "other_key", SPEC_URL),
    ({"x-square-hmacsha256-signature": "kc+g+4lIZ+C4j6yaO0nBoHXHRayPtHyIFUuV1ImvlJo="},
     "sqkey_test", SPEC_URL + "/"),
    ({"x-square-hmacsha256-signature": "kc+g+4lIZ+C4j6yaO0nBoHXHRayPtHyIFUuV1ImvlJo="},
     "", SPEC_URL),
    ({"x-square-hmacsha256-signature": "kc+g+4lIZ+C4j6yaO0nBoHXHRayPtHyIFUuV1ImvlJo="},
     "sqkey_test", ""),
    ({"Stripe-Signature": "t=1,v1=00"}, "sqkey_test", SPEC_URL),
    ({"x-square-hmacsha256-signature": "ünïcode"}, "sqkey_test", SPEC_URL),
])
async def test_webhook_invalid_signatures_are_rejected(provider, headers, secret, url):
    with pytest.raises(ProviderError) as info:
        provider.verify_webhook(SPEC_BODY, headers, secret, url)
    assert info.value.kind == "invalid"


async def test_webhook_tampered_body_is_rejected(provider):
    headers = {"x-square-hmacsha256-signature": sign("sqkey_test", SPEC_URL, SPEC_BODY)}
    with pytest.raises(ProviderError):
        provider.verify_webhook(SPEC_BODY.replace(b"COMPLETED", b"FAILED"), headers,
                                "sqkey_test", SPEC_URL)


async def test_webhook_old_events_are_not_rejected_for_age(provider):
    # Square redelivers for up to 72 h with the original created_at (§5.5): no age limit.
    body = json.dumps(fixture("webhook_events")["refund.updated"]).encode()
    event = provider.verify_webhook(
        body, {"x-square-hmacsha256-signature": sign("k", SPEC_URL, body)}, "k", SPEC_URL)
    assert event.type == "refund.updated" and event.timestamp < time.time() - 3 * 86400
    assert event.data["status"] == "COMPLETED" and event.data["payment_id"]


async def test_webhook_types_are_normalized(provider):
    events = fixture("webhook_events")
    dispute = json.dumps(events["dispute.state.changed"]).encode()
    event = provider.verify_webhook(
        dispute, {"x-square-hmacsha256-signature": sign("k", SPEC_URL, dispute)}, "k", SPEC_URL)
    assert (event.id, event.type) == ("e89ff114-1972-4be0-9481-a621f2385fff", "dispute.updated")
    assert event.data["state"] == "WON"
    assert [sq.normalize_event_type(t) for t in (
        "payment.created", "payment.updated", "refund.created", "invoice.payment_made",
        "subscription.updated", "dispute.created", "dispute.state.changed", "customer.deleted",
        "unknown.event.type")] == [
        "payment.created", "payment.updated", "refund.created", "invoice.paid",
        "subscription.updated", "dispute.created", "dispute.updated", "customer.deleted",
        "unknown.event.type"]


async def test_webhook_signed_garbage_is_invalid(provider):
    for body in (b"not json", b'{"type":"payment.updated"}', b"[]"):
        headers = {"x-square-hmacsha256-signature": sign("k", SPEC_URL, body)}
        with pytest.raises(ProviderError) as info:
            provider.verify_webhook(body, headers, "k", SPEC_URL)
        assert info.value.code == "BAD_PAYLOAD"


# -- configuration ------------------------------------------------------------------------

async def test_environment_and_env_configuration():
    assert sq.environment("sandbox") is sq.SquareEnvironment.SANDBOX
    assert sq.environment("TEST") is sq.SquareEnvironment.SANDBOX
    assert sq.environment("") is sq.SquareEnvironment.PRODUCTION
    assert SquareProvider.from_env({"SQUARE_ACCESS_TOKEN": "t"}) is None  # no location
    assert SquareProvider.from_env({}) is None
    p = SquareProvider.from_env({"SQUARE_ENVIRONMENT": "sandbox", "SQUARE_ACCESS_TOKEN": "t",
                                 "SQUARE_SANDBOX_ACCESS_TOKEN": "ts",
                                 "SQUARE_LOCATION_ID": "L1"})
    assert p is not None and p.location_id == "L1"
    assert p._client._client_wrapper.get_base_url() == sq.SquareEnvironment.SANDBOX.value
    assert p._client._client_wrapper.get_headers()["Authorization"] == "Bearer ts"
    assert set(p.supported_currencies()) == {"usd", "cad", "gbp", "eur", "aud", "jpy"}
    await p.close()


# -- the payment janitor's retrieves ---------------------------------------------------------

async def test_retrieve_a_payment_as_square_knows_it(square, provider):
    held = await provider.authorize(charge_request("pi_janitor", amount=1200))
    assert await provider.retrieve_payment(held.transaction_id) == held  # APPROVED
    square.payments[held.transaction_id]["status"] = "COMPLETED"
    done = await provider.retrieve_payment(held.transaction_id)
    assert (done.status, done.amount) == ("succeeded", 1200)
    square.payments[held.transaction_id]["status"] = "PENDING"
    assert (await provider.retrieve_payment(held.transaction_id)).status == "processing"
    for status in ("FAILED", "CANCELED"):
        square.payments[held.transaction_id]["status"] = status
        err = await declined(provider.retrieve_payment(held.transaction_id))
        assert err.kind == "declined"
    err = await declined(provider.retrieve_payment("nope"))
    assert (err.kind, err.code) == ("invalid", "NOT_FOUND")
    assert len(square.calls("POST", "/v2/payments")) == 1  # asked, never charged again


async def test_retrieve_a_refund_as_square_knows_it(square, provider):
    paid = await provider.charge(charge_request("pi_refunded", amount=800))
    asked = await provider.refund(RefundRequest(
        transaction_id=paid.transaction_id, amount=800, currency="usd",
        idempotency_key=key("refund", "re_janitor")))
    assert await provider.retrieve_refund(asked.refund_id) == asked  # PENDING
    for status, ours in (("COMPLETED", "succeeded"), ("REJECTED", "failed"),
                         ("FAILED", "failed")):
        square.refunds[asked.refund_id]["status"] = status
        assert (await provider.retrieve_refund(asked.refund_id)).status == ours
    [call] = square.calls("GET", f"/v2/refunds/{asked.refund_id}")[:1]
    assert call["body"] is None
    assert len(square.calls("POST", "/v2/refunds")) == 1
    square.fail("GET", "/v2/refunds/.*", 503)
    err = await declined(provider.retrieve_refund(asked.refund_id))
    assert err.kind == "unavailable"


# -- whose merchant a token is (a provider account claim, payments.md §5.5) -------------------

async def test_a_token_speaks_for_its_own_merchant_only(square, provider):
    assert await provider.speaks_for(square.merchant_id)
    assert not await provider.speaks_for("MOTHERMERCHANT1")
    assert [c["path"] for c in square.calls("GET", r"/v2/merchants/.*")] == [
        "/v2/merchants/me"] * 2


async def test_a_token_square_refuses_speaks_for_no_merchant(square, provider):
    square.fail("GET", "/v2/merchants/me", "UNAUTHORIZED")
    assert not await provider.speaks_for(square.merchant_id)


async def test_square_not_answering_is_no_answer_about_the_merchant(square, provider):
    square.fail("GET", "/v2/merchants/me", 503)
    err = await declined(provider.speaks_for(square.merchant_id))
    assert err.kind == "unavailable"
