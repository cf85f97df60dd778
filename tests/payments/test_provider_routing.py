"""Payments through an organization's own providers, end to end (payments.md §1.3, §11 7, 8,
27): settings stored through the gateway, then payment methods and payment intents served by
local servers speaking Stripe's and Square's wire formats (test_stripe_adapter.FakeStripe,
square_server.FakeSquare), which the payments service reaches through its platform settings
`STRIPE_API_BASE` and `SQUARE_BASE_URL`. What each server received is checked: paths,
idempotency keys, the provider's customer instead of our user id."""

from __future__ import annotations

import pytest

from services.payments.providers.base import provider_key
from services.runtime.config import Settings
from tests.payments.square_server import FakeSquare
from tests.payments.test_stripe_adapter import API_KEY, FakeStripe
from tests.support import (
    add_payment_method,
    balance,
    get,
    new_user,
    org_id_of,
    post,
    request,
    service_with,
)

STRIPE = {"stripe": {"secretKey": API_KEY}}
SQUARE = {"square": {"accessToken": FakeSquare().token, "locationId": FakeSquare().location_id}}


@pytest.fixture(scope="module")
async def providers(platform, settings):
    """(Stripe, Square): the servers every organization's settings lead to in this module."""
    stripe_api, square_api = FakeStripe(), FakeSquare()
    await stripe_api.start()
    await square_api.start()
    env = {**settings.env, "STRIPE_API_BASE": stripe_api.url,
           "SQUARE_BASE_URL": square_api.url}
    async with service_with(platform, "payments", Settings.from_env(env)):
        yield stripe_api, square_api
    await stripe_api.stop()
    await square_api.stop()
    assert stripe_api.violations == [] and square_api.problems == []


@pytest.fixture
def stripe_api(providers) -> FakeStripe:
    return providers[0]


@pytest.fixture
def square_api(providers) -> FakeSquare:
    return providers[1]


async def configure(http, org, settings, key="sk_test"):
    status, body, _ = await post(http, "/provider-settings", settings, org.auth(key))
    assert status == 200, body


async def pay(http, org, user, method_id, amount=2500, key="sk_test"):
    """(status, body) of confirming a new payment intent of `amount` with the method."""
    status, intent, _ = await post(http, "/payment-intents", {
        "customerId": user, "amount": amount, "paymentMethodId": method_id}, org.auth(key))
    assert status == 201, intent
    status, body, _ = await post(http, f"/payment-intents/{intent['id']}/confirm", {},
                                 org.auth(key))
    return status, body, intent["id"]


async def test_an_organizations_stripe_account_takes_its_payments(http, org, platform,
                                                                 stripe_api, square_api):
    await configure(http, org, STRIPE)
    org_id = await org_id_of(platform, org)
    user = new_user()
    seen, square_seen = len(stripe_api.requests), len(square_api.requests)
    method = await add_payment_method(http, org, user, "pm_card_visa")
    assert (method["providerRef"], method["metadata"]) == ("pm_card_visa", {"verified": True})
    status, paid, intent_id = await pay(http, org, user, method["id"])
    assert (status, paid["status"], paid["amountReceived"]) == (200, "succeeded", 2500), paid
    assert paid["providerRef"].startswith("pi_")

    calls = stripe_api.requests[seen:]
    assert [(c.method, c.path) for c in calls] == [
        ("POST", "/v1/customers"), ("POST", "/v1/payment_methods/pm_card_visa/attach"),
        ("POST", "/v1/payment_intents")]
    assert [c.key for c in calls] == [
        provider_key(org_id, False, "customer", user),
        provider_key(org_id, False, "attach", method["id"]),
        provider_key(org_id, False, "confirm", intent_id, 0)]
    customer = calls[1].form["customer"]
    assert customer.startswith("cus_")  # Stripe's customer, never our user id
    charge = calls[2].form
    assert (charge["customer"], charge["payment_method"], charge["amount"], charge["currency"],
            charge["metadata[paymentIntentId]"]) == (customer, "pm_card_visa", "2500", "usd",
                                                     intent_id)
    assert len(square_api.requests) == square_seen


async def test_the_token_decides_when_both_are_configured(http, org, platform, stripe_api,
                                                         square_api):
    await configure(http, org, {**STRIPE, **SQUARE, "preferredProcessor": "stripe"})
    user = new_user()
    stripe_seen, square_seen = len(stripe_api.requests), len(square_api.requests)
    card = await add_payment_method(http, org, user, "cnon:card-nonce-ok")  # a Square nonce
    assert card["providerRef"].startswith("ccof:")  # vaulted as Square's card on file
    assert len(stripe_api.requests) == stripe_seen  # never sent to Stripe, though preferred
    vaulted = square_api.calls("POST", "/v2/cards")[-1]["body"]
    assert vaulted["source_id"] == "cnon:card-nonce-ok"
    square_customer = vaulted["card"]["customer_id"]  # Square's customer, never our user id
    assert square_customer != user

    status, paid, _ = await pay(http, org, user, card["id"], 1200)
    assert (status, paid["status"]) == (200, "succeeded"), paid
    payment = square_api.calls("POST", "/v2/payments")[-1]["body"]
    assert (payment["source_id"], payment["customer_id"], payment["amount_money"],
            payment["location_id"]) == (card["providerRef"], square_customer,
                                        {"amount": 1200, "currency": "USD"},
                                        square_api.location_id)
    assert len(stripe_api.requests) == stripe_seen

    stripe_method = await add_payment_method(http, org, user, "pm_card_mastercard")
    assert stripe_api.requests[-1].path == "/v1/payment_methods/pm_card_mastercard/attach"
    assert stripe_method["providerRef"] == "pm_card_mastercard"
    assert len(square_api.requests) == square_seen + 3  # the customer, the card, the payment


async def test_a_web_payments_nonce_tops_up_through_square(http, org, platform, stripe_api,
                                                            square_api):
    """§11 7: with both configured, the reference sent Square nonces to Stripe."""
    await configure(http, org, {**STRIPE, **SQUARE, "preferredProcessor": "stripe"})
    org_id, user = await org_id_of(platform, org), new_user()
    stripe_seen = len(stripe_api.requests)
    status, body, _ = await post(http, "/topup/token", {
        "sourceId": "cnon:card-nonce-ok", "amountCents": 700, "userId": user}, org.auth())
    assert status == 200, body
    assert await balance(http, org, user) == 700
    payment = square_api.calls("POST", "/v2/payments")[-1]["body"]
    assert (payment["source_id"], payment["amount_money"]) == (
        "cnon:card-nonce-ok", {"amount": 700, "currency": "USD"})
    topup_id = await platform.gateway.pool.fetchval(
        "select id from payments.topups where org_id = $1 and customer_id = $2", org_id, user)
    assert payment["idempotency_key"] == provider_key(org_id, False, "topup", topup_id)
    assert len(stripe_api.requests) == stripe_seen


async def test_a_saved_method_whose_provider_is_gone_is_refused(http, org, stripe_api):
    await configure(http, org, STRIPE)
    user = new_user()
    method = await add_payment_method(http, org, user, "pm_card_visa")
    status, _, _ = await request(http, "DELETE", "/api/v1/billing/provider-settings/stripe",
                                 org.auth())
    assert status == 200
    seen = len(stripe_api.requests)
    status, body, intent_id = await pay(http, org, user, method["id"])
    assert (status, body["error"]["message"]) == (400, "payment processor stripe is not "
                                                       "configured")
    _, intent, _ = await get(http, f"/payment-intents/{intent_id}", org.auth())
    assert (intent["status"], intent["amountReceived"]) == ("requires_confirmation", 0)
    status, body, _ = await request(http, "DELETE", f"/api/v1/billing/payment-methods/"
                                                    f"{method['id']}", org.auth())
    assert (status, body["error"]["message"]) == (400, "payment processor stripe is not "
                                                       "configured")
    assert len(stripe_api.requests) == seen  # nothing went anywhere else either
    # New methods of the organization are the offline provider's again (test mode).
    offline = await add_payment_method(http, org, user, "pm_card_visa")
    assert offline["providerRef"].startswith("pm_offline_")


async def test_other_organizations_and_the_live_mode_never_use_the_settings(
        http, org, make_org, stripe_api, square_api):
    await configure(http, org, {**STRIPE, **SQUARE})
    seen = len(stripe_api.requests), len(square_api.requests)
    other = await make_org()
    method = await add_payment_method(http, other, new_user(), "pm_card_visa")
    assert method["providerRef"].startswith("pm_offline_")  # its own: none (test mode)
    status, body, _ = await post(http, "/payment-methods",
                                 {"customerId": new_user(), "providerRef": "pm_card_visa"},
                                 org.auth("sk_live"))
    assert (status, body["error"]["message"]) == (400, "no payment processor available")
    assert (len(stripe_api.requests), len(square_api.requests)) == seen
