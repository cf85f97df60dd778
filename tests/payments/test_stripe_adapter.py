"""The Stripe adapter against a local server speaking Stripe's wire format: form-encoded
bodies, `Authorization: Bearer sk_…`, `Stripe-Version` and `Idempotency-Key` headers, JSON
answers shaped like the API reference's objects (tests/payments/fixtures/stripe, trimmed from
Stripe's published OpenAPI fixtures), Stripe's idempotent replay, its error envelope."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import itertools
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from aiohttp import web

from services.payments.providers import declines
from services.payments.providers import stripe as adapter
from services.payments.providers.base import (
    PaymentRequest,
    ProviderError,
    RefundRequest,
    provider_key,
)

FIXTURES = Path(__file__).parent / "fixtures" / "stripe"
API_KEY = "sk_test_51Pgaf0B7WZ01zgkWadapter"
API_ACCOUNT = "acct_1Pgaf0B7WZ01zgkW"  # the account API_KEY belongs to


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


class Recorded:
    def __init__(self, method: str, path: str, headers: dict[str, str], form: dict[str, str]):
        self.method, self.path, self.headers, self.form = method, path, headers, form

    @property
    def key(self) -> str:
        return self.headers.get("Idempotency-Key", "")

    @property
    def api_key(self) -> str:
        return self.headers.get("Authorization", "").removeprefix("Bearer ")


Reply = tuple[int, dict[str, Any]]


class FakeStripe:
    """Routes of the Stripe API the adapter uses. Every request is checked (auth, version,
    encoding, an idempotency key on every POST) and recorded; a POST with a key seen before
    is replayed as Stripe does. `script` queues answers (a status and body, or a coroutine
    function: a slow or failing server) ahead of the default ones.

    It knows the account each secret key belongs to (`keys`) and the accounts connected to a
    Connect platform's (`connected`); `new_key` adds to both. A key it does not know is
    refused 401, an account neither the key's nor connected to it 403 `account_invalid`."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {API_KEY: API_ACCOUNT}
        self.connected: dict[str, set[str]] = {}
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        self.script: list[Reply | Callable[[], Any]] = []
        self.replays: dict[str, Reply] = {}
        self.objects_created = 0
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_3PtEst{next(self._ids):012d}"

    def new_key(self, account: str, livemode: bool = False, *, platform: str = "") -> str:
        """A secret key of the account in that mode (Stripe's keys carry their account's id
        after `sk_…_51`); the account connected to `platform`'s when given."""
        key = (f"sk_{'live' if livemode else 'test'}_51{account.removeprefix('acct_')}"
               f"{secrets.token_hex(8)}")
        self.keys[key] = account
        if platform:
            self.connected.setdefault(platform, set()).add(account)
        return key

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        form = dict(parse_qsl(body, keep_blank_values=True))
        headers = dict(request.headers)
        rec = Recorded(request.method, request.path, headers, form)
        self.requests.append(rec)
        self._check(rec)
        if rec.api_key not in self.keys:
            return web.json_response(fixture("authentication_error"), status=401)
        if rec.method == "POST" and rec.key in self.replays:
            status, payload = self.replays[rec.key]
            return web.json_response(payload, status=status,
                                     headers={"Idempotent-Replayed": "true"})
        if self.script:
            step = self.script.pop(0)
            if callable(step):
                step = await step()
            status, payload = step
        else:
            status, payload = self.answer(rec)
        # Stripe stores the outcome of a keyed request, errors included, except 5xx.
        if rec.method == "POST" and status < 500:
            self.replays[rec.key] = (status, payload)
        return web.json_response(payload, status=status, headers={"Request-Id": "req_test"})

    def _check(self, rec: Recorded) -> None:
        h = rec.headers
        if not h.get("Authorization", "").startswith("Bearer sk_"):
            self.violations.append(f"{rec.path}: authorization {h.get('Authorization')!r}")
        if h.get("Stripe-Version") != adapter.API_VERSION:
            self.violations.append(f"{rec.path}: version {h.get('Stripe-Version')!r}")
        if rec.method == "POST":
            if not h.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                self.violations.append(f"{rec.path}: content type {h.get('Content-Type')!r}")
            if not rec.key:
                self.violations.append(f"{rec.path}: POST without Idempotency-Key")

    def answer(self, rec: Recorded) -> Reply:
        f, path = rec.form, rec.path
        if path == "/v1/payment_intents":
            self.objects_created += 1
            pi = fixture("payment_intent")
            pi.update(id=self.new_id("pi"), amount=int(f["amount"]), currency=f["currency"],
                      payment_method=f.get("payment_method"), customer=f.get("customer"),
                      description=f.get("description"),
                      capture_method=f.get("capture_method", "automatic_async"),
                      metadata={k[9:-1]: v for k, v in f.items() if k.startswith("metadata[")})
            pi["client_secret"] = f"{pi['id']}_secret_x"
            if pi["capture_method"] == "manual":
                pi.update(status="requires_capture", amount_capturable=pi["amount"])
            else:
                pi.update(status="succeeded", amount_received=pi["amount"],
                          latest_charge=self.new_id("ch"))
            return 200, pi
        if path.startswith("/v1/payment_intents/") and path.endswith("/capture"):
            pi = fixture("payment_intent")
            amount = int(f.get("amount_to_capture", pi["amount"]))
            pi.update(id=path.split("/")[3], status="succeeded", amount_received=amount,
                      capture_method="manual", latest_charge=self.new_id("ch"))
            return 200, pi
        if path.startswith("/v1/payment_intents/") and path.endswith("/cancel"):
            pi = fixture("payment_intent")
            pi.update(id=path.split("/")[3], status="canceled", capture_method="manual",
                      cancellation_reason=None, canceled_at=int(time.time()))
            return 200, pi
        if path == "/v1/refunds":
            refund = fixture("refund")
            refund.update(id=self.new_id("re"), payment_intent=f["payment_intent"],
                          amount=int(f.get("amount", 1099)), reason=f.get("reason"))
            return 200, refund
        if path == "/v1/customers":
            customer = fixture("customer")
            customer.update(id=self.new_id("cus"), email=f.get("email"), name=f.get("name"))
            return 200, customer
        if path == "/v1/payment_methods":
            pm = fixture("payment_method")
            pm.update(id=self.new_id("pm"), type=f["type"])
            return 200, pm
        if path.endswith("/attach"):
            pm = fixture("payment_method")
            pm.update(id=path.split("/")[3], customer=f["customer"])
            return 200, pm
        if path.endswith("/detach"):
            pm = fixture("payment_method")
            pm.update(id=path.split("/")[3], customer=None)
            return 200, pm
        if path == "/v1/setup_intents":
            si = fixture("setup_intent")
            pm = fixture("payment_method")
            pm.update(id=f.get("payment_method") or self.new_id("pm"), customer=f["customer"])
            si.update(id=self.new_id("seti"), customer=f["customer"], status="succeeded",
                      payment_method=pm if f.get("expand[0]") == "payment_method"
                      else pm["id"])
            return 200, si
        if path == "/v1/account":
            return 200, self.account(self.keys[rec.api_key])
        if path.startswith("/v1/accounts/"):
            wanted, own = path.split("/")[3], self.keys[rec.api_key]
            if wanted == own or wanted in self.connected.get(own, ()):
                return 200, self.account(wanted)
            return 403, fixture("account_invalid")
        if path.startswith("/v1/disputes/"):  # evidence submitted, or closed (accepted)
            closing = path.endswith("/close")
            return 200, {"id": path.split("/")[3], "object": "dispute",
                         "status": "lost" if closing else "under_review"}
        return 404, fixture("invalid_request_error")


    @staticmethod
    def account(account_id: str) -> dict[str, Any]:
        account = fixture("account")
        account["id"] = account_id
        account["external_accounts"]["url"] = f"/v1/accounts/{account_id}/external_accounts"
        return account


@pytest.fixture
async def stripe_api() -> AsyncIterator[tuple[FakeStripe, str]]:
    fake = FakeStripe()
    await fake.start()
    yield fake, fake.url
    await fake.stop()
    assert fake.violations == []


@pytest.fixture
async def provider(stripe_api) -> AsyncIterator[adapter.StripeProvider]:
    _, base = stripe_api
    # Long enough for the local server on a loaded machine; the slow answers below wait
    # longer on purpose.
    p = adapter.StripeProvider(API_KEY, api_base=base, timeout=1.5, max_network_retries=0)
    yield p
    await p.close()


@pytest.fixture
def fake(stripe_api) -> FakeStripe:
    return stripe_api[0]


def key(op: str, obj: str = "pi_obj_1") -> str:
    return provider_key("org_1", False, op, obj)


def pay(amount: int = 1500, **kw: Any) -> PaymentRequest:
    kw.setdefault("token", "pm_card_visa")
    kw.setdefault("idempotency_key", key("charge"))
    return PaymentRequest(amount=amount, currency=kw.pop("currency", "USD"), **kw)


def card_error(decline_code: str | None, code: str = "card_declined") -> Reply:
    body = fixture("card_error")
    body["error"].update(code=code, decline_code=decline_code)
    if decline_code is None:
        del body["error"]["decline_code"]
    return 402, body


# ---- payments


async def test_charge_sends_stripe_parameters_and_maps_success(provider, fake):
    req = pay(1500, customer_id="cus_1", description="Top-up", order_id="ord_9",
              metadata={"invoice": "in_1"})
    result = await provider.charge(req)
    assert result.status == "succeeded" and result.amount == 1500
    assert result.transaction_id.startswith("pi_")  # the PaymentIntent, not the charge
    (rec,) = fake.requests
    assert (rec.method, rec.path, rec.key) == ("POST", "/v1/payment_intents", req.idempotency_key)
    assert rec.form == {
        "amount": "1500", "currency": "usd", "confirm": "true",
        "automatic_payment_methods[enabled]": "true",
        "automatic_payment_methods[allow_redirects]": "never",
        "payment_method": "pm_card_visa", "customer": "cus_1", "description": "Top-up",
        "metadata[invoice]": "in_1", "metadata[order_id]": "ord_9",
    }


async def test_authorize_holds_and_capture_takes_part(provider, fake):
    held = await provider.authorize(pay(2000, idempotency_key=key("authorize")))
    assert (held.status, held.amount) == ("requires_capture", 2000)
    assert fake.requests[0].form["capture_method"] == "manual"

    captured = await provider.capture(held.transaction_id, 1200, key("capture"))
    assert (captured.status, captured.amount) == ("succeeded", 1200)
    rec = fake.requests[1]
    assert rec.path == f"/v1/payment_intents/{held.transaction_id}/capture"
    assert rec.form == {"amount_to_capture": "1200"} and rec.key == key("capture")


async def test_capture_of_everything_sends_no_amount(provider, fake):
    await provider.capture("pi_held", 0, key("capture"))
    assert fake.requests[0].form == {}


async def test_cancel_releases_the_hold(provider, fake):
    await provider.cancel("pi_held", key("cancel"))
    (rec,) = fake.requests
    assert (rec.method, rec.path, rec.key) == ("POST", "/v1/payment_intents/pi_held/cancel",
                                               key("cancel"))


async def test_requires_action_returns_the_client_secret(provider, fake):
    pi = fixture("payment_intent")
    pi.update(status="requires_action", next_action={"type": "use_stripe_sdk"})
    fake.script.append((200, pi))
    result = await provider.charge(pay())
    assert result.status == "requires_action" and result.amount == 0
    assert result.client_secret == pi["client_secret"]
    assert result.transaction_id == pi["id"]


async def test_processing_stays_processing(provider, fake):
    pi = fixture("payment_intent")
    pi.update(status="processing")
    fake.script.append((200, pi))
    result = await provider.charge(pay())
    assert (result.status, result.amount) == ("processing", 0)


async def test_failed_confirmation_without_an_error_answer_is_a_decline(provider, fake):
    pi = fixture("payment_intent")
    pi.update(status="requires_payment_method", last_payment_error={
        "type": "card_error", "code": "card_declined", "decline_code": "expired_card"})
    fake.script.append((200, pi))
    with pytest.raises(ProviderError) as e:
        await provider.charge(pay())
    assert (e.value.kind, e.value.code, e.value.message) == (
        "declined", "expired_card", "Card declined — card is expired.")


async def test_refund_goes_to_the_payment_intent_with_a_mapped_reason(provider, fake):
    req = RefundRequest(transaction_id="pi_paid", amount=500, currency="usd",
                        idempotency_key=key("refund", "re_obj_1"), reason="Fraud")
    result = await provider.refund(req)
    assert result.status == "succeeded" and result.refund_id.startswith("re_")
    (rec,) = fake.requests
    assert rec.path == "/v1/refunds" and rec.key == req.idempotency_key
    assert rec.form == {"payment_intent": "pi_paid", "amount": "500", "reason": "fraudulent"}


@pytest.mark.parametrize("reason, sent", [
    ("", None), ("duplicate", "duplicate"), ("fraudulent", "fraudulent"),
    ("changed my mind", "requested_by_customer"),
])
async def test_refund_reasons(provider, fake, reason, sent):
    await provider.refund(RefundRequest(transaction_id="pi_paid", amount=0, currency="usd",
                                        idempotency_key=key("refund", reason), reason=reason))
    form = fake.requests[0].form
    assert form.get("reason") == sent and "amount" not in form


@pytest.mark.parametrize("stripe_status, ours", [
    ("pending", "pending"), ("requires_action", "pending"), ("failed", "failed"),
    ("canceled", "failed"),
])
async def test_refund_statuses(provider, fake, stripe_status, ours):
    refund = fixture("refund")
    refund["status"] = stripe_status
    fake.script.append((200, refund))
    result = await provider.refund(RefundRequest(
        transaction_id="pi_paid", amount=100, currency="usd", idempotency_key=key("refund")))
    assert result == adapter.RefundResult(refund_id=refund["id"], status=ours)


async def test_a_card_token_becomes_the_payments_method(provider, fake):
    await provider.charge(pay(token="tok_visa"))
    form = fake.requests[0].form
    assert "payment_method" not in form
    assert form["payment_method_data[type]"] == "card"
    assert form["payment_method_data[card][token]"] == "tok_visa"


# ---- customers, payment methods, setup


async def test_create_customer(provider, fake):
    ref = await provider.create_customer("ada@example.com", "Ada", key("customer", "u1"))
    assert ref.startswith("cus_")
    (rec,) = fake.requests
    assert rec.path == "/v1/customers" and rec.key == key("customer", "u1")
    assert rec.form == {"email": "ada@example.com", "name": "Ada"}


async def test_attach_keeps_card_details_only(provider, fake):
    saved = await provider.attach_method("cus_1", "pm_1Pgc75B7WZ01zgkWlHVgdEGJ",
                                         key("attach", "pm_obj"))
    assert saved.provider_ref == "pm_1Pgc75B7WZ01zgkWlHVgdEGJ"
    assert saved.customer_ref == "cus_1" and saved.type == "card"
    assert saved.card == adapter.CardDetails(brand="visa", last4="4242", exp_month=8,
                                             exp_year=2030)
    (rec,) = fake.requests
    assert rec.path == "/v1/payment_methods/pm_1Pgc75B7WZ01zgkWlHVgdEGJ/attach"
    assert rec.form == {"customer": "cus_1"} and rec.key == key("attach", "pm_obj")


async def test_attach_of_a_card_token_creates_the_method_first(provider, fake):
    saved = await provider.attach_method("cus_1", "tok_visa", key("attach", "pm_obj"))
    create, attach = fake.requests
    assert (create.path, create.form) == ("/v1/payment_methods",
                                          {"type": "card", "card[token]": "tok_visa"})
    assert create.key == key("attach", "pm_obj") + "-pm"
    assert attach.path == f"/v1/payment_methods/{saved.provider_ref}/attach"
    assert saved.provider_ref.startswith("pm_") and attach.key == key("attach", "pm_obj")
    assert saved.card.last4 == "4242"


async def test_setup_with_a_card_token(provider, fake):
    result = await provider.setup("cus_1", "tok_visa", key("setup"))
    assert result.status == "succeeded" and result.method.provider_ref.startswith("pm_")
    form = fake.requests[0].form
    assert "payment_method" not in form
    assert form["payment_method_data[card][token]"] == "tok_visa"


async def test_attach_of_a_refused_card_is_a_decline(provider, fake):
    fake.script.append(card_error(None, code="incorrect_cvc"))
    with pytest.raises(ProviderError) as e:
        await provider.attach_method("cus_1", "pm_bad", key("attach"))
    assert (e.value.kind, e.value.code) == ("declined", "incorrect_cvc")
    assert e.value.message == "Card declined — incorrect security code (CVV)."


async def test_detach(provider, fake):
    await provider.detach_method("pm_1", key("detach", "pm_obj"))
    (rec,) = fake.requests
    assert (rec.path, rec.key) == ("/v1/payment_methods/pm_1/detach", key("detach", "pm_obj"))


async def test_setup_saves_the_method(provider, fake):
    result = await provider.setup("cus_1", "pm_card_visa", key("setup", "seti_obj"))
    assert result.status == "succeeded" and result.setup_id.startswith("seti_")
    assert result.method.provider_ref == "pm_card_visa"
    assert result.method.card.last4 == "4242"
    (rec,) = fake.requests
    assert rec.path == "/v1/setup_intents" and rec.key == key("setup", "seti_obj")
    assert rec.form == {
        "customer": "cus_1", "payment_method": "pm_card_visa", "confirm": "true",
        "usage": "off_session", "automatic_payment_methods[enabled]": "true",
        "automatic_payment_methods[allow_redirects]": "never", "expand[0]": "payment_method",
    }


async def test_setup_requiring_action(provider, fake):
    si = fixture("setup_intent")
    si.update(status="requires_action", next_action={"type": "use_stripe_sdk"})
    fake.script.append((200, si))
    result = await provider.setup("cus_1", "pm_3ds", key("setup"))
    assert (result.status, result.client_secret) == ("requires_action", si["client_secret"])
    assert result.method is None


async def test_setup_refused(provider, fake):
    fake.script.append(card_error("stolen_card"))
    with pytest.raises(ProviderError) as e:
        await provider.setup("cus_1", "pm_stolen", key("setup"))
    assert e.value.kind == "declined"
    assert e.value.message == "Card declined — please contact your bank."


# ---- errors


@pytest.mark.parametrize("decline_code, code, message", [
    ("insufficient_funds", "card_declined", "Card declined — insufficient funds."),
    ("card_velocity_exceeded", "card_declined",
     "Card declined — transaction limit reached. Please try a different card."),
    ("incorrect_zip", "card_declined", "Card declined — billing address does not match. "
     "Please check your address and try again."),
    (None, "incorrect_cvc", "Card declined — incorrect security code (CVV)."),
    (None, "expired_card", "Card declined — card is expired."),
    (None, "incorrect_number", "Card declined — invalid card number."),
    ("lost_card", "card_declined", "Card declined — please contact your bank."),
    ("generic_decline", "card_declined",
     "Card declined by your bank. Please try a different card or contact your bank."),
    ("do_not_honor", "card_declined",
     "Card declined by your bank. Please try a different card or contact your bank."),
    ("fraudulent", "card_declined", "Card declined. Please try a different card."),
    (None, "card_declined", "Card declined. Please try a different card."),
])
async def test_402_card_errors_are_declines_with_the_spec_message(provider, fake, decline_code,
                                                                  code, message):
    fake.script.append(card_error(decline_code, code))
    with pytest.raises(ProviderError) as e:
        await provider.charge(pay())
    assert e.value.provider == "stripe" and e.value.kind == "declined"
    assert e.value.code == (decline_code or code)
    assert e.value.message == message


def test_decline_messages_follow_the_spec_rules_for_unknown_codes():
    # §1.10's own examples, on codes Stripe's table does not name.
    assert adapter.decline_message(None, "CARD_DECLINED") == declines.DECLINED
    assert adapter.decline_message(None, "INSUFFICIENT_FUNDS") == declines.INSUFFICIENT
    assert adapter.decline_message(None, "CVV_FAILURE") == declines.CVC
    assert adapter.decline_message(None, "CARD_EXPIRED") == declines.EXPIRED
    assert adapter.decline_message("address_verification_failure", None) == declines.ADDRESS
    assert adapter.decline_message(None, None) == declines.UNVERIFIED


async def test_400_is_invalid(provider, fake):
    fake.script.append((404, fixture("invalid_request_error")))
    with pytest.raises(ProviderError) as e:
        await provider.capture("pi_missing", 0, key("capture"))
    assert (e.value.kind, e.value.code) == ("invalid", "resource_missing")


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_unavailable(provider, fake, status):
    fake.script.append((status, fixture("api_error")))
    with pytest.raises(ProviderError) as e:
        await provider.charge(pay())
    assert e.value.kind == "unavailable"


async def test_429_and_a_refused_key_are_unavailable(provider, fake):
    fake.script.append((429, {"error": {"type": "invalid_request_error", "code": "rate_limit",
                                        "message": "Too many requests"}}))
    fake.script.append((401, {"error": {"type": "invalid_request_error",
                                        "message": "Invalid API Key provided: sk_test_****"}}))
    for _ in range(2):
        with pytest.raises(ProviderError) as e:
            await provider.charge(pay(idempotency_key=key("charge", str(_))))
        assert e.value.kind == "unavailable"


async def test_timeout_is_unavailable(provider, fake):
    async def slow():
        await asyncio.sleep(4)
        return 200, fixture("payment_intent")

    fake.script.append(slow)
    with pytest.raises(ProviderError) as e:
        await provider.charge(pay())
    assert (e.value.kind, e.value.code) == ("unavailable", "timeout")


async def test_unreachable_is_unavailable():
    p = adapter.StripeProvider(API_KEY, api_base="http://127.0.0.1:9", timeout=1,
                               max_network_retries=0)
    try:
        with pytest.raises(ProviderError) as e:
            await p.charge(pay())
        assert (e.value.kind, e.value.code) == ("unavailable", "connection_error")
    finally:
        await p.close()


# ---- idempotency


async def test_a_retry_after_a_timeout_charges_once(provider, fake):
    """The charge went through but the answer was lost: the retried call carries the same
    key and Stripe replays the first outcome instead of charging again."""
    async def charged_then_slow():
        reply = fake.answer(fake.requests[-1])
        fake.replays[fake.requests[-1].key] = reply
        await asyncio.sleep(4)
        return reply

    fake.script.append(charged_then_slow)
    req = pay(1500)
    with pytest.raises(ProviderError):
        await provider.charge(req)
    result = await provider.charge(req)
    assert result.status == "succeeded"
    assert [r.key for r in fake.requests] == [req.idempotency_key] * 2
    assert fake.objects_created == 1


async def test_the_sdk_retries_a_5xx_with_the_same_key(stripe_api):
    fake, base = stripe_api
    p = adapter.StripeProvider(API_KEY, api_base=base, max_network_retries=1)
    try:
        fake.script.append((503, fixture("api_error")))
        result = await p.charge(pay(700))
    finally:
        await p.close()
    assert result.status == "succeeded"
    keys = [r.key for r in fake.requests]
    assert len(keys) == 2 and keys[0] == keys[1] == pay().idempotency_key


async def test_a_repeated_decline_is_replayed_not_retried(provider, fake):
    fake.script.append(card_error("insufficient_funds"))
    for _ in range(2):
        with pytest.raises(ProviderError) as e:
            await provider.charge(pay())
        assert e.value.kind == "declined"
    assert len({r.key for r in fake.requests}) == 1


async def test_calls_do_not_block_the_event_loop(provider, fake):
    async def slow():
        await asyncio.sleep(0.2)
        return 200, fixture("customer")

    fake.script.append(slow)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    t = asyncio.create_task(ticker())
    await provider.create_customer("a@example.com", "", key("customer"))
    t.cancel()
    assert ticks >= 10


# ---- webhooks

SECRET = "whsec_test_secret"
EXAMPLE = (b'{"id":"evt_123","type":"payment_intent.succeeded",'
           b'"data":{"object":{"id":"pi_123","amount":1000}}}')


def sign(payload: bytes, t: int, secret: str = SECRET) -> str:
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256)
    return mac.hexdigest()


def verifier(now: float) -> adapter.StripeProvider:
    return adapter.StripeProvider(API_KEY, clock=lambda: now)


def test_webhook_worked_example():
    v1 = "eae116cb6f5cd28291c28b8f3cbb92be4b986066fd6aaf1e27332058da35e6c6"
    assert sign(EXAMPLE, 1700000000) == v1
    event = verifier(1700000100).verify_webhook(
        EXAMPLE, {"stripe-signature": f"t=1700000000,v1={v1}"}, SECRET)
    assert (event.id, event.type, event.provider) == ("evt_123", "payment.completed", "stripe")
    assert event.data == {"id": "pi_123", "amount": 1000}
    assert event.timestamp == 1700000000


@pytest.mark.parametrize("now, header", [
    (1700000301, f"t=1700000000,v1={sign(EXAMPLE, 1700000000)}"),  # too old
    (1699999000, f"t=1700000000,v1={sign(EXAMPLE, 1700000000)}"),  # too far ahead
    (1700000100, "t=12345,v1=invalidsig"),
    (1700000100, f"t=1700000000,v1={sign(EXAMPLE, 1700000000, 'whsec_other')}"),
    (1700000100, f"t=1700000001,v1={sign(EXAMPLE, 1700000000)}"),
    (1700000100, f"v1={sign(EXAMPLE, 1700000000)}"),
    (1700000100, ""),
    # Headers the SDK refuses to read, however good the signature in them.
    (1700000100, f"t=1700000000,v1={sign(EXAMPLE, 1700000000)},v1"),
    (1700000100, f"t=1700000000,t,v1={sign(EXAMPLE, 1700000000)}"),
    (1700000100, f"t=soon,v1={sign(EXAMPLE, 1700000000)}"),
    (1700000100, "t=1700000000,v1=\u00e9t\u00e9"),
])
def test_webhook_rejections(now, header):
    with pytest.raises(ProviderError) as e:
        verifier(now).verify_webhook(EXAMPLE, {"Stripe-Signature": header}, SECRET)
    assert e.value.kind == "invalid"


def test_webhook_tampered_body_is_rejected():
    header = f"t=1700000000,v1={sign(EXAMPLE, 1700000000)}"
    with pytest.raises(ProviderError):
        verifier(1700000100).verify_webhook(EXAMPLE.replace(b"1000", b"9000"),
                                            {"Stripe-Signature": header}, SECRET)


def test_webhook_any_v1_matches_during_rotation():
    t = int(time.time())
    header = f"t={t},v1={sign(EXAMPLE, t, 'whsec_old')},v1={sign(EXAMPLE, t)}"
    event = verifier(t).verify_webhook(EXAMPLE, {"Stripe-Signature": header}, SECRET)
    assert event.id == "evt_123"


def test_webhook_header_is_read_as_the_sdk_reads_it():
    """The first `t`, whatever the items around it; a value ends at a second `=`; `t`
    in any form `int` reads, signed as its number."""
    signed = sign(EXAMPLE, 1700000000)
    for header in (f"v0=x,t=1700000000,v1={signed}", f"t=1700000000=9,v1={signed}=tail",
                   f"t=1700000000,t=1,v1={signed}", f"t=01700000000,v1={signed}"):
        event = verifier(1700000100).verify_webhook(EXAMPLE, {"Stripe-Signature": header},
                                                    SECRET)
        assert (event.id, event.timestamp) == ("evt_123", 1700000000)


def test_webhook_body_that_is_not_utf8_is_rejected():
    body = b"\xff\xfe{}"
    with pytest.raises(ProviderError) as e:
        verifier(1700000000).verify_webhook(
            body, {"Stripe-Signature": f"t=1700000000,v1={sign(body, 1700000000)}"}, SECRET)
    assert e.value.kind == "invalid"


def test_webhook_without_a_secret_is_rejected():
    header = f"t=1700000000,v1={sign(EXAMPLE, 1700000000, '')}"
    with pytest.raises(ProviderError):
        verifier(1700000000).verify_webhook(EXAMPLE, {"Stripe-Signature": header}, "")


def test_webhook_malformed_body_is_rejected():
    body = b'{"id":"evt_1","type":"x"}'
    header = f"t=1700000000,v1={sign(body, 1700000000)}"
    with pytest.raises(ProviderError) as e:
        verifier(1700000000).verify_webhook(body, {"Stripe-Signature": header}, SECRET)
    assert e.value.code == "payload"


@pytest.mark.parametrize("stripe_type, ours", [
    ("payment_intent.succeeded", "payment.completed"),
    ("payment_intent.payment_failed", "payment.failed"),
    ("charge.refunded", "refund.succeeded"),
    ("charge.refund.updated", "refund.updated"),
    ("charge.dispute.created", "dispute.created"),
    ("charge.dispute.closed", "dispute.resolved"),
    ("customer.subscription.created", "subscription.created"),
    ("customer.subscription.updated", "subscription.updated"),
    ("customer.subscription.deleted", "subscription.canceled"),
    ("invoice.paid", "invoice.paid"),
    ("invoice.payment_failed", "invoice.payment_failed"),
    ("customer.created", "customer.created"),
    ("unknown.event.type", "unknown.event.type"),
])
def test_event_type_normalization(stripe_type, ours):
    body = json.dumps({"id": "evt_1", "type": stripe_type,
                       "data": {"object": copy.deepcopy(fixture("payment_intent"))}}).encode()
    t = 1700000000
    event = verifier(t).verify_webhook(body, {"Stripe-Signature": f"t={t},v1={sign(body, t)}"},
                                       SECRET)
    assert event.type == ours


# ---- the payment janitor's retrieves


@pytest.mark.parametrize(("stripe_status", "ours", "amount"), [
    ("succeeded", "succeeded", 1500), ("requires_capture", "requires_capture", 1500),
    ("processing", "processing", 0), ("requires_action", "requires_action", 0)])
async def test_retrieve_a_payment_intent(provider, fake, stripe_status, ours, amount):
    pi = fixture("payment_intent")
    pi.update(id="pi_slow", status=stripe_status, amount=1500, amount_received=1500,
              amount_capturable=1500)
    fake.script.append((200, pi))
    result = await provider.retrieve_payment("pi_slow")
    assert (result.status, result.transaction_id, result.amount) == (ours, "pi_slow", amount)
    (rec,) = fake.requests
    assert (rec.method, rec.path, rec.form) == ("GET", "/v1/payment_intents/pi_slow", {})


@pytest.mark.parametrize("stripe_status", ["canceled", "requires_payment_method"])
async def test_a_retrieved_payment_that_took_nothing_is_a_decline(provider, fake,
                                                                  stripe_status):
    pi = fixture("payment_intent")
    pi.update(id="pi_gone", status=stripe_status, cancellation_reason="abandoned")
    fake.script.append((200, pi))
    with pytest.raises(ProviderError) as e:
        await provider.retrieve_payment("pi_gone")
    assert e.value.kind == "declined"


@pytest.mark.parametrize(("stripe_status", "ours"), [
    ("succeeded", "succeeded"), ("pending", "pending"), ("failed", "failed"),
    ("canceled", "failed")])
async def test_retrieve_a_refund(provider, fake, stripe_status, ours):
    refund = fixture("refund")
    refund.update(id="re_slow", status=stripe_status)
    fake.script.append((200, refund))
    assert (await provider.retrieve_refund("re_slow")).status == ours
    (rec,) = fake.requests
    assert (rec.method, rec.path) == ("GET", "/v1/refunds/re_slow")


async def test_a_retrieve_stripe_cannot_answer_is_unavailable(provider, fake):
    fake.script.append((500, fixture("api_error")))
    with pytest.raises(ProviderError) as e:
        await provider.retrieve_refund("re_slow")
    assert e.value.kind == "unavailable"


# ---- whose account a key is (a provider account claim, payments.md §5.5) -------------------


async def test_a_key_speaks_for_its_own_account_with_one_call(provider, fake):
    assert await provider.speaks_for(API_ACCOUNT)
    (rec,) = fake.requests
    assert (rec.method, rec.path, rec.api_key) == ("GET", "/v1/account", API_KEY)


async def test_a_platform_key_speaks_for_its_connected_accounts_only(provider, fake):
    connected, elsewhere = "acct_1ConnectedHere01", "acct_1SomeoneElse001"
    fake.new_key(connected, platform=API_ACCOUNT)
    fake.new_key(elsewhere)
    assert await provider.speaks_for(connected)
    assert not await provider.speaks_for(elsewhere)
    assert [r.path for r in fake.requests] == [
        "/v1/account", f"/v1/accounts/{connected}", "/v1/account", f"/v1/accounts/{elsewhere}"]


async def test_a_key_stripe_refuses_speaks_for_no_account(fake):
    unknown = adapter.StripeProvider("sk_test_51Unknown0000000000000key", api_base=fake.url,
                                     max_network_retries=0)
    try:
        assert not await unknown.speaks_for(API_ACCOUNT)
    finally:
        await unknown.close()
    assert [r.path for r in fake.requests] == ["/v1/account"]


async def test_stripe_not_answering_is_no_answer_about_the_account(provider, fake):
    fake.script.append((503, fixture("api_error")))
    with pytest.raises(ProviderError) as e:
        await provider.speaks_for(API_ACCOUNT)
    assert e.value.kind == "unavailable"
