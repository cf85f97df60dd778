"""Inbound provider webhooks (payments.md §1.7.2, §1.8.2, §5, §9 83–91): the pure rules
(verification, what an event asks), then deliveries through the gateway to a payments
service whose organizations keep their Stripe accounts at a local fake Stripe
(test_stripe_adapter.FakeStripe): forged, missing and stale signatures, redeliveries with
one effect, per-organization secrets and the platform's fallback, another organization's
objects left alone, and what each kind of event changes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from services.payments.providers.base import WebhookEvent
from services.payments.webhooks_in import domain
from services.payments.webhooks_in.domain import Secret
from services.runtime.config import Settings
from tests.payments.square_server import FakeSquare
from tests.payments.test_payouts import destination, funded
from tests.payments.test_square_adapter import fixture as square_fixture
from tests.payments.test_stripe_adapter import API_KEY, FakeStripe, fixture
from tests.payments.webhook_receiver import Receiver
from tests.support import (
    add_payment_method,
    events_of,
    eventually,
    get,
    journal_entries,
    new_user,
    org_id_of,
    post,
    refused,
    service_with,
)

ORG_SECRET = "whsec_test_secret"
PLATFORM_SECRET = "whsec_platform_secret"
PLATFORM_SQUARE_KEY = "sqkey_platform"
SPEC_STRIPE = (b'{"id":"evt_123","type":"payment_intent.succeeded",'
               b'"data":{"object":{"id":"pi_123","amount":1000}}}')
SPEC_SQUARE_URL = "https://commerce.hanzo.ai/v1/billing/webhooks/square"
SPEC_SQUARE = (b'{"merchant_id":"M1","type":"payment.updated","event_id":"e-1",'
               b'"created_at":"2026-04-19T10:00:00Z","data":{"type":"payment","id":"P1",'
               b'"object":{"payment":{"id":"P1","status":"COMPLETED"}}}}')


def stripe_header(body: bytes, secret: str = ORG_SECRET, t: int | None = None) -> dict:
    t = int(time.time()) if t is None else t
    v1 = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={v1}"}


def square_header(body: bytes, key: str, url: str) -> dict:
    mac = hmac.new(key.encode(), url.encode() + body, hashlib.sha256).digest()
    return {"x-square-hmacsha256-signature": base64.b64encode(mac).decode()}


def stripe_event(type: str, obj: dict, **extra) -> bytes:
    return json.dumps({"id": f"evt_{secrets.token_hex(8)}", "type": type,
                       "data": {"object": obj}, **extra}).encode()


# ---- the rules, without I/O ---------------------------------------------------------------


def test_the_stripe_worked_example_verifies_and_decides_the_mode():  # §1.7.2, §9 84
    header = {"Stripe-Signature": "t=1700000000,v1=eae116cb6f5cd28291c28b8f3cbb92be4b986066"
                                  "fd6aaf1e27332058da35e6c6"}
    secrets_ = [Secret(True, "whsec_live"), Secret(False, ORG_SECRET)]
    livemode, event = domain.verify("stripe", SPEC_STRIPE, header, "", secrets_, 1700000100)
    assert (livemode, event.id, event.type) == (False, "evt_123", "payment.completed")
    for now in (1700000301, 1699999000):  # stale, and too far ahead
        assert refused(domain.verify, "stripe", SPEC_STRIPE, header, "", secrets_, now) == (
            401, "invalid webhook signature")
    bad = {"Stripe-Signature": "t=12345,v1=invalidsig"}
    assert refused(domain.verify, "stripe", SPEC_STRIPE, bad, "", secrets_, 1700000100) == (
        401, "invalid webhook signature")
    assert refused(domain.verify, "stripe", SPEC_STRIPE, header, "", [], 1700000100) == (
        401, "invalid webhook signature")  # no secret at all


def test_a_stripe_event_of_the_other_mode_is_not_this_secrets():
    body = stripe_event("charge.succeeded", {"id": "ch_1"}, livemode=True)
    t = int(time.time())
    header = stripe_header(body, "whsec_shared", t)
    assert refused(domain.verify, "stripe", body, header, "", [Secret(False, "whsec_shared")],
                   t) == (401, "invalid webhook signature")
    assert domain.verify("stripe", body, header, "", [Secret(False, "whsec_shared"),
                                                      Secret(True, "whsec_shared")], t)[0]


def test_a_secret_serving_both_modes_is_checked_once(monkeypatch):
    body = stripe_event("charge.succeeded", {"id": "ch_1"}, livemode=False)
    t = int(time.time())
    calls = []
    verify_webhook = domain.stripe.verify_webhook
    monkeypatch.setattr(domain.stripe, "verify_webhook",
                        lambda *args: calls.append(args) or verify_webhook(*args))
    assert domain.verify("stripe", body, stripe_header(body, "whsec_shared", t), "", [
        Secret(True, "whsec_shared"), Secret(False, "whsec_shared")], t)[0] is False
    assert len(calls) == 1


def test_the_square_worked_example_is_signed_over_url_and_body():  # §1.8.2, §9 91
    good = {"x-square-hmacsha256-signature": "kc+g+4lIZ+C4j6yaO0nBoHXHRayPtHyIFUuV1ImvlJo="}
    livemode, event = domain.verify("square", SPEC_SQUARE, good, SPEC_SQUARE_URL,
                                    [Secret(True, "sqkey_test")], 0)
    assert (livemode, event.id, event.data, event.account) == (
        True, "e-1", {"id": "P1", "status": "COMPLETED"}, "M1")
    body_only = {"x-square-hmacsha256-signature":
                 "vb55qCE7KjDUxiWmp6Doc+bboD226RPODOwXQJnzH2k="}  # the reference's
    assert refused(domain.verify, "square", SPEC_SQUARE, body_only, SPEC_SQUARE_URL,
                   [Secret(True, "sqkey_test")], 0) == (401, "invalid webhook signature")


def test_providers_and_signature_headers():  # §5.2, §5.3, §9 83
    assert domain.provider_of(" Stripe ") == "stripe"
    assert refused(domain.provider_of, "paypal") == (404, "unknown provider")
    assert refused(domain.require_signature, {}) == (400, "missing webhook signature header")
    assert domain.require_signature({"X-Square-Hmacsha256-Signature": "x"}) is None


def _event(type: str, data: dict, provider: str = "stripe") -> WebhookEvent:
    return WebhookEvent(id="e", type=type, provider=provider, data=data, timestamp=0)


def test_what_an_event_asks():  # §5.4
    assert [domain.effect_of(_event(t, {})) for t in (
        "payment.completed", "refund.succeeded", "payment_method.detached", "dispute.created",
        "subscription.canceled", "invoice.paid", "customer.subscription.paused",
        "payout.paid", "charge.succeeded")] == [
        "payment", "refund", "method", "dispute", "forward", "forward", "forward", "payout",
        None]
    assert domain.forwarded_type(_event("subscription.updated", {})) == (
        "provider.subscription.updated")
    charge = {"object": "charge", "refunds": {"data": [{"id": "re_1", "status": "succeeded"},
                                                       {"id": "re_2", "status": "pending"}]}}
    assert domain.refund_news(_event("refund.succeeded", charge)) == [("re_1", "succeeded")]
    assert domain.refund_news(_event("refund.updated", {"id": "R", "status": "REJECTED"},
                                     "square")) == [("R", "failed")]
    completed = domain.payment_news(_event("payment.updated", {
        "id": "P1", "status": "COMPLETED", "amount_money": {"amount": 100}}, "square"))
    assert (completed.ref, completed.outcome, completed.amount) == ("P1", "succeeded", 100)


@pytest.mark.parametrize(("type", "data", "reason"), [
    ("payment.updated", {"id": "pi_1", "status": "processing"},
     "no final payment status in payment.updated"),
    ("refund.updated", {"id": "re_1", "status": "pending"}, "no pending refund for refund.updated"),
    ("payment_method.updated", {}, "no payment method for payment_method.updated"),
    ("dispute.created", {"id": "dp_1"}, "no dispute to read in dispute.created"),
    ("payout.paid", {"id": "po_1", "status": "paid"}, "no payout of ours in payout.paid"),
    ("payment.completed", {"id": "pi_1"}, ""),  # only our intents can tell
    ("refund.succeeded", {"id": "re_1", "status": "succeeded"}, ""),
    ("payout.paid", {"id": "po_1", "status": "paid", "metadata": {"payoutId": "po_x"}}, ""),
])
def test_what_changes_nothing_is_known_from_the_event(type, data, reason):
    event = _event(type, data)
    assert domain.changes_nothing(event, domain.effect_of(event)) == reason


@pytest.mark.parametrize(("state", "status"), [  # §4.5 DO
    ("INQUIRY_EVIDENCE_REQUIRED", "needs_response"), ("EVIDENCE_REQUIRED", "needs_response"),
    ("PROCESSING", "under_review"), ("INQUIRY_PROCESSING", "under_review"), ("WON", "won"),
    ("LOST", "lost"), ("ACCEPTED", "lost"), ("INQUIRY_CLOSED", "warning_closed"),
])
def test_square_dispute_states(state, status):
    square = square_fixture("webhook_events")["dispute.state.changed"]["data"]["object"][
        "dispute"]
    news = domain.dispute_news(_event("dispute.updated", {**square, "state": state}, "square"))
    assert (news.ref, news.payment_ref, news.amount, news.currency, news.status) == (
        "ORSEVtZAJxb37RA1EiGw", "fbmsaEOpoARDKxiSGH1fqPuqoqFZY", 8801, "usd", status)


# ---- through the gateway ------------------------------------------------------------------


@asynccontextmanager
async def fake_providers(platform, settings) -> AsyncIterator[tuple[FakeStripe, FakeSquare]]:
    """The fake Stripe and Square every organization's settings lead to while the block
    runs, and the platform's webhook secrets in payments' environment."""
    stripe_api, square_api = FakeStripe(), FakeSquare()
    await stripe_api.start()
    await square_api.start()
    env = {**settings.env, "STRIPE_API_BASE": stripe_api.url, "SQUARE_BASE_URL": square_api.url,
           "STRIPE_WEBHOOK_SECRET": PLATFORM_SECRET,
           "SQUARE_WEBHOOK_SIGNATURE_KEY": PLATFORM_SQUARE_KEY}
    async with service_with(platform, "payments", Settings.from_env(env)):
        yield stripe_api, square_api
    await stripe_api.stop()
    await square_api.stop()
    assert stripe_api.violations == [] and square_api.problems == []


@pytest.fixture(scope="module")
async def providers(platform, settings):
    async with fake_providers(platform, settings) as fakes:
        yield fakes


@pytest.fixture
def stripe_api(providers) -> FakeStripe:
    return providers[0]


@pytest.fixture
def square_api(providers) -> FakeSquare:
    return providers[1]


async def stripe_org(http, make_org, secret: str | None = ORG_SECRET):
    """An organization whose test mode has its own Stripe account (and webhook secret)."""
    org = await make_org()
    stripe = {"secretKey": API_KEY} | ({"webhookSecret": secret} if secret else {})
    status, body, _ = await post(http, "/provider-settings", {"stripe": stripe}, org.auth())
    assert status == 200, body
    return org


async def deliver(http, org, body: bytes, headers: dict, provider: str = "stripe"):
    return await post(http, f"/webhooks/{provider}/{org.name}", None, headers, raw=body)


async def stored_events(pool, org_id: str) -> list:
    return await pool.fetch(
        "select event_id, livemode, type, status, reason, body from payments.webhook_events_in"
        " where org_id = $1 order by received_at", org_id)


async def processing_intent(http, org, stripe_api, amount: int = 2500) -> dict:
    """A payment intent Stripe answered `processing` (it settles by webhook)."""
    user = new_user()
    method = await add_payment_method(http, org, user, "pm_card_visa")
    status, intent, _ = await post(http, "/payment-intents", {
        "customerId": user, "amount": amount, "paymentMethodId": method["id"]}, org.auth())
    assert status == 201, intent
    pi = fixture("payment_intent")
    pi.update(id=stripe_api.new_id("pi"), amount=amount, status="processing")
    stripe_api.script.append((200, pi))
    status, confirmed, _ = await post(http, f"/payment-intents/{intent['id']}/confirm", {},
                                      org.auth())
    assert (status, confirmed["status"]) == (200, "processing"), confirmed
    return confirmed


async def intent(http, org, intent_id: str) -> dict:
    status, body, _ = await get(http, f"/payment-intents/{intent_id}", org.auth())
    assert status == 200, body
    return body


async def test_the_stripe_example_is_received_once(http, make_org, platform, pool, stripe_api):
    # §9 84, 85: 200 with the reference's body; a redelivery is a duplicate, one row.
    org = await stripe_org(http, make_org)
    org_id = await org_id_of(platform, org)
    headers = stripe_header(SPEC_STRIPE)
    status, body, _ = await deliver(http, org, SPEC_STRIPE, headers)
    assert (status, body) == (200, {"received": True, "type": "payment.completed",
                                    "id": "evt_123"})
    status, body, _ = await deliver(http, org, SPEC_STRIPE, headers)
    assert (status, body) == (200, {"received": True, "type": "payment.completed",
                                    "id": "evt_123", "duplicate": True})
    [row] = await stored_events(pool, org_id)
    assert (row["event_id"], row["livemode"], row["type"], row["body"]) == (
        "evt_123", False, "payment.completed", SPEC_STRIPE)
    assert (row["status"], row["reason"]) == (
        "ignored", "no payment intent for stripe payment pi_123")
    # Read before it was stored: final at once, no effect was attempted.
    assert await pool.fetchval("select attempts from payments.webhook_events_in"
                               " where org_id = $1", org_id) == 0


async def test_deliveries_arriving_together_are_each_answered_as_alone(http, make_org,
                                                                        platform, pool,
                                                                        stripe_api):
    # The gateway sends them to payments in one request; each has its own answer.
    org, other = await stripe_org(http, make_org), await stripe_org(http, make_org)
    events = [stripe_event("charge.succeeded", {"id": f"ch_{n}"}) for n in range(6)]
    sent = [(org, body, stripe_header(body)) for body in events]
    sent += [(org, events[0], stripe_header(events[0])),  # the same event again
             (org, events[1], stripe_header(events[1], "whsec_forged")),
             (org, events[2], {}),
             (other, events[3], stripe_header(events[3]))]  # another organization's own
    answers = await asyncio.gather(*(deliver(http, o, body, headers)
                                     for o, body, headers in sent))
    statuses = [status for status, _, _ in answers]
    assert statuses == [200] * 6 + [200, 401, 400, 200]
    ids = [json.loads(body)["id"] for body in events]
    assert [b["id"] for _, b, _ in answers[:6]] == ids
    duplicates = [b.get("duplicate", False) for _, b, _ in answers[:7]]
    assert sorted(duplicates) == [False] * 6 + [True]  # whichever came second
    assert answers[7][1]["error"]["message"] == "invalid webhook signature"
    assert answers[8][1]["error"]["message"] == "missing webhook signature header"
    stored = await stored_events(pool, await org_id_of(platform, org))
    assert sorted(r["event_id"] for r in stored) == sorted(ids)
    assert [r["event_id"] for r in await stored_events(
        pool, await org_id_of(platform, other))] == [ids[3]]


async def test_forged_missing_and_stale_signatures_change_nothing(http, make_org, platform,
                                                                  pool, stripe_api):
    org = await stripe_org(http, make_org)
    t = int(time.time())
    cases = [
        ({}, 400, "missing webhook signature header"),  # §9 83
        ({"Stripe-Signature": "t=12345,v1=invalidsig"}, 401, "invalid webhook signature"),
        (stripe_header(SPEC_STRIPE, "whsec_forged"), 401, "invalid webhook signature"),
        (stripe_header(SPEC_STRIPE, t=t - 600), 401, "invalid webhook signature"),  # stale
        (stripe_header(SPEC_STRIPE, t=t + 600), 401, "invalid webhook signature"),  # ahead
        (stripe_header(SPEC_STRIPE + b" "), 401, "invalid webhook signature"),  # tampered
    ]
    for headers, expected, message in cases:
        status, body, _ = await deliver(http, org, SPEC_STRIPE, headers)
        assert (status, body["error"]["message"]) == (expected, message), headers
        assert body["error"]["type"] == "api-error"
    status, body, _ = await deliver(http, org, SPEC_STRIPE, stripe_header(SPEC_STRIPE),
                                    provider="paypal")
    assert (status, body["error"]["message"]) == (404, "unknown provider")
    status, body, _ = await post(http, "/webhooks/stripe/no-such-org-x", None,
                                 stripe_header(SPEC_STRIPE), raw=SPEC_STRIPE)
    assert (status, body["error"]["message"]) == (404, "unknown organization")
    big = b"{" + b" " * (256 * 1024) + b"}"
    status, body, _ = await deliver(http, org, big, stripe_header(big))
    assert (status, body["error"]["message"]) == (413, "request body too large")
    assert await stored_events(pool, await org_id_of(platform, org)) == []


async def test_concurrent_first_deliveries_for_an_organization_are_each_answered(
        http, make_org, platform, pool, stripe_api):
    """Deliveries arriving together for an organization the gateway has not looked up yet
    (they share its one read) are each verified and stored; for an unknown one, each is
    refused alike."""
    org = await stripe_org(http, make_org)
    bodies = [stripe_event("charge.succeeded", {"id": f"ch_{n}"}, livemode=False)
              for n in range(12)]
    answers = await asyncio.gather(*(deliver(http, org, body, stripe_header(body))
                                     for body in bodies))
    assert [status for status, _, _ in answers] == [200] * 12
    stored = await stored_events(pool, await org_id_of(platform, org))
    assert sorted(r["event_id"] for r in stored) == sorted(
        json.loads(body)["id"] for body in bodies)
    refused = await asyncio.gather(*(
        post(http, "/webhooks/stripe/no-such-org-y", None, stripe_header(body), raw=body)
        for body in bodies))
    assert {(status, body["error"]["message"]) for status, body, _ in refused} == {
        (404, "unknown organization")}


async def test_the_platform_secret_serves_a_mode_the_organization_has_none_for(
        http, make_org, platform, pool, stripe_api):
    with_own = await stripe_org(http, make_org)
    without = await make_org()
    test_event = stripe_event("charge.succeeded", {"id": "ch_1"}, livemode=False)
    # Its own test-mode secret, not the platform's, serves the organization's test mode.
    status, _, _ = await deliver(http, with_own, test_event,
                                 stripe_header(test_event, PLATFORM_SECRET))
    assert status == 401
    status, _, _ = await deliver(http, with_own, test_event, stripe_header(test_event))
    assert status == 200
    # An organization with no secret of its own: the platform's, in either mode.
    live_event = stripe_event("charge.succeeded", {"id": "ch_2"}, livemode=True)
    for event_body in (test_event, live_event):
        status, _, _ = await deliver(http, without, event_body,
                                     stripe_header(event_body, PLATFORM_SECRET))
        assert status == 200
    status, _, _ = await deliver(http, without, test_event, stripe_header(test_event))
    assert status == 401
    rows = await stored_events(pool, await org_id_of(platform, without))
    assert [(r["livemode"], r["status"]) for r in rows] == [(False, "ignored"),
                                                            (True, "ignored")]


async def square_org(http, make_org, square_api, key: str = "sqkey_test"):
    """An organization whose test mode has its own Square account (a Square sandbox)."""
    org = await make_org()
    status, body, _ = await post(http, "/provider-settings", {"square": {
        "accessToken": square_api.token, "locationId": square_api.location_id,
        "webhookSignatureKey": key}}, org.auth())
    assert status == 200, body
    return org


def square_url(http, org) -> str:
    """The URL Square notified: the one the gateway was reached at (no SQUARE_WEBHOOK_URL)."""
    return f"{http._base_url}/api/v1/billing/webhooks/square/{org.name}"


async def test_square_is_verified_over_the_url_it_notified(http, make_org, platform, pool,
                                                           square_api):
    # §9 91: the organization's own key, over the URL and the body.
    org = await square_org(http, make_org, square_api)
    url = square_url(http, org)
    status, body, _ = await deliver(http, org, SPEC_SQUARE,
                                    square_header(SPEC_SQUARE, "sqkey_test", url), "square")
    assert (status, body) == (200, {"received": True, "type": "payment.updated", "id": "e-1"})
    body_only = {"x-square-hmacsha256-signature": base64.b64encode(hmac.new(
        b"sqkey_test", SPEC_SQUARE, hashlib.sha256).digest()).decode()}
    status, _, _ = await deliver(http, org, SPEC_SQUARE, body_only, "square")
    assert status == 401
    # Square's retries keep their first `created_at`: never refused for age.
    old = SPEC_SQUARE.replace(b"e-1", b"e-2").replace(b"2026-04-19", b"2020-01-01")
    status, _, _ = await deliver(http, org, old, square_header(old, "sqkey_test", url),
                                 "square")
    assert status == 200
    rows = await stored_events(pool, await org_id_of(platform, org))
    assert [(r["event_id"], r["livemode"]) for r in rows] == [("e-1", False), ("e-2", False)]


async def test_a_completed_square_payment_settles_its_intent_once(http, make_org, platform,
                                                                  nc, pool, square_api):
    # §9 91: `payment.updated` with the payment COMPLETED (here: a hold captured at Square).
    org = await square_org(http, make_org, square_api)
    user = new_user()
    method = await add_payment_method(http, org, user, "cnon:card-nonce-ok")
    status, created, _ = await post(http, "/payment-intents", {
        "customerId": user, "amount": 1200, "paymentMethodId": method["id"],
        "captureMethod": "manual"}, org.auth())
    status, held, _ = await post(http, f"/payment-intents/{created['id']}/confirm", {},
                                 org.auth())
    assert held["status"] == "requires_capture", held
    body = json.dumps({
        "merchant_id": "M1", "type": "payment.updated", "event_id": secrets.token_hex(8),
        "created_at": "2026-04-19T10:00:00Z", "data": {"type": "payment", "object": {
            "payment": {"id": held["providerRef"], "status": "COMPLETED",
                        "amount_money": {"amount": 1200, "currency": "USD"}}}}}).encode()
    headers = square_header(body, "sqkey_test", square_url(http, org))
    for _ in range(2):
        status, _, _ = await deliver(http, org, body, headers, "square")
        assert status == 200
    settled = await intent(http, org, held["id"])
    assert (settled["status"], settled["amountReceived"]) == ("succeeded", 1200)
    assert (await events_of(pool, held["id"])).count("payment_intent.succeeded") == 1
    entries = await eventually(
        lambda: journal_entries(platform, nc, org, paymentIntentId=held["id"]),
        lambda found: len(found) == 1)
    assert len(entries) == 1


async def test_a_payment_settles_once_however_often_it_is_delivered(http, make_org, platform,
                                                                    nc, pool, stripe_api):
    org = await stripe_org(http, make_org)
    pending = await processing_intent(http, org, stripe_api, 2500)
    body = stripe_event("payment_intent.succeeded", {
        "id": pending["providerRef"], "object": "payment_intent", "status": "succeeded",
        "amount_received": 2500})
    headers = stripe_header(body)
    replies = await asyncio.gather(*(deliver(http, org, body, headers) for _ in range(5)))
    assert sorted(r[1].get("duplicate", False) for r in replies) == [False] + [True] * 4
    settled = await intent(http, org, pending["id"])
    assert (settled["status"], settled["amountReceived"]) == ("succeeded", 2500)
    assert (await events_of(pool, pending["id"])).count("payment_intent.succeeded") == 1
    entries = await eventually(
        lambda: journal_entries(platform, nc, org, paymentIntentId=pending["id"]),
        lambda found: len(found) == 1)
    assert len(entries) == 1


async def test_a_failed_payment_goes_back_to_waiting_for_a_method(http, make_org, stripe_api):
    org = await stripe_org(http, make_org)
    pending = await processing_intent(http, org, stripe_api)
    body = stripe_event("payment_intent.payment_failed", {
        "id": pending["providerRef"], "status": "requires_payment_method",
        "last_payment_error": {"message": "Your card was declined."}})
    status, _, _ = await deliver(http, org, body, stripe_header(body))
    assert status == 200
    failed = await intent(http, org, pending["id"])
    assert (failed["status"], failed["lastError"]) == ("requires_payment_method",
                                                       "Your card was declined.")


async def test_another_organizations_object_changes_nothing(http, make_org, platform, pool,
                                                            stripe_api):
    mine = await stripe_org(http, make_org)
    pending = await processing_intent(http, mine, stripe_api)
    other = await stripe_org(http, make_org, "whsec_other_org")
    body = stripe_event("payment_intent.succeeded", {"id": pending["providerRef"],
                                                     "status": "succeeded"})
    status, _, _ = await deliver(http, other, body, stripe_header(body, "whsec_other_org"))
    assert status == 200
    assert (await intent(http, mine, pending["id"]))["status"] == "processing"
    [row] = await stored_events(pool, await org_id_of(platform, other))
    assert row["status"] == "ignored" and row["reason"].startswith("no payment intent")


async def test_a_pending_refund_is_settled_by_its_webhook(http, make_org, platform, nc,
                                                          stripe_api):
    org = await stripe_org(http, make_org)
    user = new_user()
    method = await add_payment_method(http, org, user, "pm_card_visa")
    status, created, _ = await post(http, "/payment-intents", {
        "customerId": user, "amount": 4000, "paymentMethodId": method["id"]}, org.auth())
    status, paid, _ = await post(http, f"/payment-intents/{created['id']}/confirm", {},
                                 org.auth())
    assert paid["status"] == "succeeded", paid
    refund = fixture("refund")
    refund.update(id=stripe_api.new_id("re"), status="pending", amount=1500)
    stripe_api.script.append((200, refund))
    status, pending, _ = await post(http, "/refunds", {"paymentIntentId": paid["id"],
                                                       "amount": 1500}, org.auth())
    assert (status, pending["status"]) == (201, "pending"), pending
    body = stripe_event("charge.refund.updated", {"id": refund["id"], "object": "refund",
                                                  "status": "succeeded"})
    for _ in range(2):
        status, _, _ = await deliver(http, org, body, stripe_header(body))
        assert status == 200
    status, done, _ = await get(http, f"/refunds/{pending['id']}", org.auth())
    assert done["status"] == "succeeded"
    assert (await intent(http, org, paid["id"]))["amountRefunded"] == 1500
    entries = await eventually(
        lambda: journal_entries(platform, nc, org, refundId=pending["id"]),
        lambda found: len(found) == 1)
    assert len(entries) == 1


async def test_a_method_the_provider_detached_is_detached(http, make_org, pool, stripe_api):
    org = await stripe_org(http, make_org)
    method = await add_payment_method(http, org, new_user(), "pm_card_visa")
    updated = stripe_event("payment_method.automatically_updated", {
        "id": "pm_card_visa", "card": {"brand": "visa", "last4": "4242", "exp_month": 1,
                                       "exp_year": 2031}})
    status, _, _ = await deliver(http, org, updated, stripe_header(updated))
    status, body, _ = await get(http, f"/payment-methods/{method['id']}", org.auth())
    assert (body["card"]["expMonth"], body["card"]["expYear"]) == (1, 2031)
    detached = stripe_event("payment_method.detached", {"id": "pm_card_visa"})
    status, _, _ = await deliver(http, org, detached, stripe_header(detached))
    assert status == 200
    status, _, _ = await get(http, f"/payment-methods/{method['id']}", org.auth())
    assert status == 404
    assert await events_of(pool, method["id"]) == [
        "payment_method.attached", "payment_method.updated", "payment_method.detached"]


async def test_subscription_events_are_forwarded_and_payouts_recorded(http, make_org, platform,
                                                                       pool, stripe_api):
    org = await stripe_org(http, make_org)
    org_id = await org_id_of(platform, org)
    sub = stripe_event("customer.subscription.deleted", {"id": "sub_1", "status": "canceled"})
    payout = stripe_event("payout.paid", {"id": "po_1", "amount": 100})
    for body in (sub, payout, sub):
        status, _, _ = await deliver(http, org, body, stripe_header(body))
        assert status == 200
    # Every delivery is a billing event once (the replay is not), `provider.<type>`, in the
    # event log as soon as it is answered, by the provider's event id as the reference's.
    status, logged, _ = await get(http, "/events", org.auth(), type="provider.payout.paid")
    assert (status, [e["objectId"] for e in logged]) == (200, [json.loads(payout)["id"]])
    status, logged, _ = await get(http, "/events", org.auth(),
                                  type="provider.subscription.canceled")
    assert (status, len(logged)) == (200, 1)
    # Only the one another service reads (subscriptions) is published for it.
    announced = {r["type"]: r["p"] for r in await pool.fetch(
        "select type, convert_from(payload, 'utf8')::jsonb as p from payments.outbox"
        " where org_id = $1 and type like 'provider.%'", org_id)}
    assert sorted(announced) == ["provider.subscription.canceled"]
    forwarded = announced["provider.subscription.canceled"]
    assert (forwarded["id"], forwarded["objectType"], forwarded["data"]["object"],
            forwarded["data"]["source"]) == (
        logged[0]["id"], "stripe", {"id": "sub_1", "status": "canceled"}, "provider")
    rows = {r["type"]: r for r in await stored_events(pool, org_id)}
    assert rows["subscription.canceled"]["status"] == "processed"
    assert (rows["payout.paid"]["status"], rows["payout.paid"]["reason"]) == (
        "ignored", "no payout of ours in payout.paid")  # Stripe's own payout to the bank
    # Known from the event alone: final when stored, no effect was attempted.
    assert await pool.fetchval(
        "select attempts from payments.webhook_events_in where org_id = $1 and event_id = $2",
        org_id, json.loads(payout)["id"]) == 0


async def test_an_organizations_endpoint_is_told_of_each_provider_event_once(
        http, make_org, stripe_api):
    # Logged at intake, a forwarded event also comes back from the stream: still one
    # delivery each, the replay none.
    org = await stripe_org(http, make_org)
    receiver = Receiver()
    await receiver.start()
    try:
        status, hook, _ = await post(http, "/webhook-endpoints", {
            "url": receiver.url("hook")}, org.auth())  # every event
        assert status == 201, hook
        receiver.paths["hook"].secret = hook["secret"]
        sub = stripe_event("customer.subscription.updated", {"id": "sub_2", "status": "active"})
        charge = stripe_event("charge.succeeded", {"id": "ch_1", "object": "charge"})
        for body in (sub, charge, sub, charge):
            status, _, _ = await deliver(http, org, body, stripe_header(body))
            assert status == 200
        status, logged, _ = await get(http, "/events", org.auth())
        logged = [e for e in logged if e["type"].startswith("provider.")]
        assert sorted(e["type"] for e in logged) == [
            "provider.charge.succeeded", "provider.subscription.updated"]
        await eventually(lambda: _told(receiver), lambda ids: len(ids) >= 2)
        await asyncio.sleep(0.5)  # the forwarded one back from the stream meanwhile
        assert sorted(await _told(receiver)) == sorted(e["id"] for e in logged)
    finally:
        await receiver.stop()


async def _told(receiver: Receiver) -> list[str]:
    return [e["id"] for e in receiver.paths["hook"].received
            if e["type"].startswith("provider.")]


async def test_the_bank_reports_our_payouts_through_the_provider(http, make_org, platform,
                                                                 pool, nc):
    org = await make_org()
    await funded(http, platform, nc, org, 9000)  # offline, before Stripe is set up
    dest = await destination(http, org)
    made = []
    for amount in (1000, 2000):
        status, body, _ = await post(http, "/payouts", {
            "amount": amount, "destinationType": "bank_account", "destinationId": dest},
            org.auth())
        assert status == 201, body
        made.append(body["id"])
    status, body, _ = await post(http, "/provider-settings", {"stripe": {
        "secretKey": API_KEY, "webhookSecret": ORG_SECRET}}, org.auth())
    assert status == 200, body
    paid = stripe_event("payout.paid", {"id": "po_paid", "status": "paid",
                                        "metadata": {"payoutId": made[0]}})
    failed = stripe_event("payout.failed", {
        "id": "po_failed", "status": "failed", "failure_code": "account_closed",
        "failure_message": "The bank account has been closed",
        "metadata": {"payoutId": made[1]}})
    for body in (paid, failed, failed):  # the failure delivered twice
        status, _, _ = await deliver(http, org, body, stripe_header(body))
        assert status == 200
    payouts = {}
    for payout_id in made:
        status, payouts[payout_id], _ = await get(http, f"/payouts/{payout_id}", org.auth())
    assert payouts[made[0]]["status"] == "paid"
    assert {k: payouts[made[1]][k] for k in ("status", "failureCode")} == {
        "status": "failed", "failureCode": "account_closed"}
    # The failed payout's money came back to the journal once.
    reversed_ = await eventually(
        lambda: journal_entries(platform, nc, org, payoutId=made[1]), lambda e: len(e) == 2)
    assert len(reversed_) == 2
