"""The Square adapter (payments.md §1.8) over the official `squareup` SDK's async client.

Payments, Cards, Refunds and Customers of Square's v2 API. What differs from the reference
(§1.8.1 DO, §11.19): idempotency keys come from the caller (`base.provider_key`, ≤ 45
characters, deterministic), a refund is in the payment's currency, and a partial capture
lowers the approved amount with `payments.update` before `payments.complete` (or is refused
when Square does not allow it on that payment). A saved card is vaulted with the Cards API
(`cards.create`), never kept as a single-use nonce.

Errors: Square answers a refusal with `errors[]` (`category`, `code`, `detail`). A
`PAYMENT_METHOD_ERROR` or `REFUND_ERROR` is a decline (final; the message comes from the
code, §1.10), a 5xx, a rate limit, a timeout or a broken connection is `unavailable` (the
outcome is unknown or transient: retry with the same key), anything else is `invalid`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx
from square import AsyncSquare
from square.core.api_error import ApiError
from square.environment import SquareEnvironment

from services.payments.providers import declines
from services.payments.providers.base import (
    CardDetails,
    PaymentRequest,
    PaymentResult,
    ProviderError,
    RefundRequest,
    RefundResult,
    SavedMethod,
    SetupResult,
    WebhookEvent,
)

SIGNATURE_HEADER = "x-square-hmacsha256-signature"
MAX_KEY = 45  # Square's limit on idempotency keys
CURRENCIES = ("usd", "cad", "gbp", "eur", "aud", "jpy")  # §1.2

# §1.10, matched on Square's `errors[].code` instead of free text (same outputs).
DECLINE_MESSAGES: dict[str, str] = {code.lower(): message for code, message in {
    "INSUFFICIENT_FUNDS": declines.INSUFFICIENT,
    "CHIP_INSUFFICIENT_FUNDS": declines.INSUFFICIENT,
    "TRANSACTION_LIMIT": declines.LIMIT,
    "ADDRESS_VERIFICATION_FAILURE": declines.ADDRESS,
    "VERIFY_AVS_FAILURE": declines.ADDRESS,
    "INVALID_POSTAL_CODE": declines.ADDRESS,
    "CVV_FAILURE": declines.CVC,
    "VERIFY_CVV_FAILURE": declines.CVC,
    "CARD_EXPIRED": declines.EXPIRED,
    "INVALID_CARD": declines.INVALID_NUMBER,
    "INVALID_ACCOUNT": declines.INVALID_NUMBER,
    "PAN_FAILURE": declines.INVALID_NUMBER,
    "GENERIC_DECLINE": declines.BANK,
    "CARD_DECLINED_CALL_ISSUER": declines.BANK,
}.items()}

# Square's card brands as the names the platform uses for every provider (Stripe's).
BRANDS = {
    "VISA": "visa", "MASTERCARD": "mastercard", "AMERICAN_EXPRESS": "amex",
    "DISCOVER": "discover", "DISCOVER_DINERS": "diners", "JCB": "jcb",
    "CHINA_UNIONPAY": "unionpay", "EFTPOS": "eftpos_au", "INTERAC": "interac",
}

# §1.8.3: the Square types the platform renames; every other type passes unchanged.
EVENT_TYPES = {
    "invoice.payment_made": "invoice.paid",
    "dispute.state.changed": "dispute.updated",
}

PAYMENT_STATUS = {
    "COMPLETED": "succeeded", "APPROVED": "requires_capture", "PENDING": "processing",
}
REFUND_STATUS = {
    "COMPLETED": "succeeded", "PENDING": "pending", "REJECTED": "failed", "FAILED": "failed",
}


def decline_message(code: str) -> str:
    """The §1.10 message for a Square decline code."""
    return declines.decline_message((code,), DECLINE_MESSAGES)


def environment(value: str) -> SquareEnvironment:
    """`SQUARE_ENVIRONMENT`: `sandbox` or `test` ⇒ sandbox, anything else ⇒ production (§1.2)."""
    return (SquareEnvironment.SANDBOX if value.strip().lower() in ("sandbox", "test")
            else SquareEnvironment.PRODUCTION)


def normalize_event_type(square_type: str) -> str:
    return EVENT_TYPES.get(square_type, square_type)


class SquareProvider:
    name = "square"

    def __init__(self, access_token: str, location_id: str = "", *,
                 environment: SquareEnvironment = SquareEnvironment.PRODUCTION,
                 base_url: str | None = None, timeout: float = 30.0, max_retries: int = 2):
        # Our own httpx client, so `close` can release its connections.
        self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self._client = AsyncSquare(token=access_token, environment=environment,
                                   base_url=base_url, timeout=timeout, httpx_client=self._http)
        self.location_id = location_id
        # The SDK retries 5xx and 429 itself; safe because every call that changes something
        # carries the same idempotency key on each attempt.
        self._options = {"max_retries": max_retries}

    @classmethod
    def from_env(cls, env: Mapping[str, str], **kw: Any) -> SquareProvider | None:
        """The platform's Square account from `SQUARE_*` (§1.2): None unless configured."""
        sandbox = environment(env.get("SQUARE_ENVIRONMENT", "")) is SquareEnvironment.SANDBOX
        token = env.get("SQUARE_ACCESS_TOKEN", "")
        location = env.get("SQUARE_LOCATION_ID", "")
        if sandbox:
            token = env.get("SQUARE_SANDBOX_ACCESS_TOKEN") or token
            location = env.get("SQUARE_SANDBOX_LOCATION_ID") or location
        if not token or not location:
            return None
        return cls(token, location, environment=(
            SquareEnvironment.SANDBOX if sandbox else SquareEnvironment.PRODUCTION), **kw)

    async def close(self) -> None:
        await self._http.aclose()

    def supported_currencies(self) -> tuple[str, ...]:
        return CURRENCIES

    # -- payments ------------------------------------------------------------------------

    async def charge(self, req: PaymentRequest) -> PaymentResult:
        return await self._create_payment(req, autocomplete=True)

    async def authorize(self, req: PaymentRequest) -> PaymentResult:
        return await self._create_payment(req, autocomplete=False)

    async def _create_payment(self, req: PaymentRequest, *, autocomplete: bool,
                              ) -> PaymentResult:
        _check_amount(req.amount, req.currency)
        if not req.token:
            raise ProviderError("square", "invalid", "MISSING_REQUIRED_PARAMETER",
                                "a Square payment needs a card nonce or card id")
        optional = {k: v for k, v in (
            ("customer_id", req.customer_id),
            ("location_id", self.location_id),
            ("note", req.description[:500]),
            ("reference_id", req.order_id[:40]),
        ) if v}
        resp = await self._call(self._client.payments.create(
            source_id=req.token, idempotency_key=_key(req.idempotency_key),
            amount_money=_money(req.amount, req.currency), autocomplete=autocomplete,
            request_options=self._options, **optional))
        return _payment_result(resp.payment)

    async def capture(self, transaction_id: str, amount: int, idempotency_key: str,
                      ) -> PaymentResult:
        payment = (await self._call(self._client.payments.get(
            transaction_id, request_options=self._options))).payment
        if payment is None:
            raise ProviderError("square", "unavailable", "EMPTY_RESPONSE",
                                "square returned no payment")
        if payment.status == "COMPLETED":
            return _payment_result(payment)  # a retried capture: already done
        if payment.status != "APPROVED":
            raise ProviderError("square", "invalid", "BAD_STATUS",
                                f"square payment {transaction_id} is {payment.status}, "
                                "not capturable")
        authorized = payment.amount_money.amount if payment.amount_money else 0
        if amount < 0 or amount > authorized:
            raise ProviderError("square", "invalid", "VALUE_TOO_HIGH",
                                f"capture amount {amount} exceeds the {authorized} authorized")
        if 0 < amount < authorized:
            # Square captures the whole approved amount: lower it first, when this payment
            # allows it (its `capabilities`), else refuse clearly instead of over-capturing.
            if "EDIT_AMOUNT_DOWN" not in (payment.capabilities or []):
                raise ProviderError("square", "invalid", "PARTIAL_CAPTURE_UNSUPPORTED",
                                    "partial capture not supported by square")
            await self._call(self._client.payments.update(
                transaction_id, idempotency_key=_key(idempotency_key),
                payment={"amount_money": {"amount": amount,
                                          "currency": payment.amount_money.currency}},
                request_options=self._options))
        resp = await self._call(self._client.payments.complete(
            transaction_id, request_options=self._options))
        return _payment_result(resp.payment)

    async def cancel(self, transaction_id: str, idempotency_key: str) -> None:
        # CancelPayment takes no idempotency key; cancelling twice is harmless at Square.
        try:
            await self._call(self._client.payments.cancel(
                transaction_id, request_options=self._options))
        except ProviderError as err:
            if err.kind != "invalid":
                raise
            # A retry after a cancel that went through: Square refuses to cancel again.
            payment = (await self._call(self._client.payments.get(
                transaction_id, request_options=self._options))).payment
            if payment is None or payment.status != "CANCELED":
                raise

    async def refund(self, req: RefundRequest) -> RefundResult:
        _check_amount(req.amount, req.currency)
        optional = {"reason": req.reason[:192]} if req.reason else {}
        resp = await self._call(self._client.refunds.refund_payment(
            idempotency_key=_key(req.idempotency_key), payment_id=req.transaction_id,
            amount_money=_money(req.amount, req.currency), request_options=self._options,
            **optional))
        refund = resp.refund
        if refund is None:
            raise ProviderError("square", "unavailable", "EMPTY_RESPONSE",
                                "square returned no refund")
        return _refund_result(refund)

    async def retrieve_payment(self, transaction_id: str) -> PaymentResult:
        return _payment_result((await self._call(self._client.payments.get(
            transaction_id, request_options=self._options))).payment)

    async def retrieve_refund(self, refund_id: str) -> RefundResult:
        refund = (await self._call(self._client.refunds.get(
            refund_id, request_options=self._options))).refund
        if refund is None:
            raise ProviderError("square", "unavailable", "EMPTY_RESPONSE",
                                "square returned no refund")
        return _refund_result(refund)

    # -- customers and cards -------------------------------------------------------------

    async def create_customer(self, email: str, name: str, idempotency_key: str) -> str:
        given, _, family = name.strip().partition(" ")
        fields = {k: v for k, v in (("email_address", email), ("given_name", given),
                                    ("family_name", family.strip())) if v}
        if not fields:
            raise ProviderError("square", "invalid", "MISSING_REQUIRED_PARAMETER",
                                "a Square customer needs an email or a name")
        resp = await self._call(self._client.customers.create(
            idempotency_key=_key(idempotency_key), request_options=self._options, **fields))
        if resp.customer is None or not resp.customer.id:
            raise ProviderError("square", "unavailable", "EMPTY_RESPONSE",
                                "square create customer: empty response")
        return resp.customer.id

    async def attach_method(self, customer_ref: str, token: str, idempotency_key: str,
                            ) -> SavedMethod:
        """Vault the nonce as a card on file (Square verifies the card doing so)."""
        if not customer_ref or not token:
            raise ProviderError("square", "invalid", "MISSING_REQUIRED_PARAMETER",
                                "a Square card needs a customer and a card nonce")
        resp = await self._call(self._client.cards.create(
            idempotency_key=_key(idempotency_key), source_id=token,
            card={"customer_id": customer_ref}, request_options=self._options))
        card = resp.card
        if card is None or not card.id:
            raise ProviderError("square", "unavailable", "EMPTY_RESPONSE",
                                "square returned no card")
        return SavedMethod(
            provider_ref=card.id, customer_ref=card.customer_id or customer_ref, type="card",
            card=CardDetails(brand=BRANDS.get(card.card_brand or "", "unknown"),
                             last4=card.last4 or "", exp_month=card.exp_month or 0,
                             exp_year=card.exp_year or 0))

    async def detach_method(self, method_ref: str, idempotency_key: str) -> None:
        # DisableCard takes no key; disabling a disabled card "is allowed but has no effect".
        await self._call(self._client.cards.disable(method_ref, request_options=self._options))

    async def setup(self, customer_ref: str, token: str, idempotency_key: str,
                    ) -> SetupResult:
        """Square has no setup intents: saving the card on file is the setup."""
        method = await self.attach_method(customer_ref, token, idempotency_key)
        return SetupResult(status="succeeded", setup_id=method.provider_ref, method=method)

    # -- the account ---------------------------------------------------------------------

    async def speaks_for(self, merchant_id: str) -> bool:
        """Whether this access token is the Square merchant's (`GET /v2/merchants/me`: the
        merchant a token belongs to). Square refusing the token is a no."""
        try:
            merchant = (await self._call(self._client.merchants.get(
                "me", request_options=self._options))).merchant
        except ProviderError as err:
            if err.kind != "invalid":
                raise
            return False
        return merchant is not None and merchant.id == merchant_id

    # -- webhooks ------------------------------------------------------------------------

    def verify_webhook(self, payload: bytes, headers: dict[str, str], secret: str,
                       url: str = "") -> WebhookEvent:
        return verify_webhook(payload, headers, secret, url)

    # -- disputes ------------------------------------------------------------------------

    async def submit_dispute_evidence(self, dispute_ref: str, evidence: dict[str, str],
                                      idempotency_key: str) -> None:
        """One text per field (its own key, derived from the call's), then submitted."""
        for kind, text in evidence.items():
            await self._call(self._client.disputes.create_evidence_text(
                dispute_ref, idempotency_key=_key(f"{idempotency_key[:36]}-{kind[:8]}"),
                evidence_text=text, evidence_type="GENERIC_EVIDENCE",
                request_options=self._options))
        await self._call(self._client.disputes.submit_evidence(
            dispute_ref, request_options=self._options))

    async def accept_dispute(self, dispute_ref: str, idempotency_key: str) -> None:
        await self._call(self._client.disputes.accept(dispute_ref,
                                                       request_options=self._options))

    # -- transport -----------------------------------------------------------------------

    async def _call(self, call: Any) -> Any:
        try:
            return await call
        except ApiError as err:
            raise _mapped(err) from err
        except httpx.TimeoutException as err:
            raise ProviderError("square", "unavailable", "timeout",
                                "square request timeout") from err
        except httpx.HTTPError as err:
            raise ProviderError("square", "unavailable", "connection",
                                f"square unreachable: {type(err).__name__}") from err


def verify_webhook(payload: bytes, headers: Mapping[str, str], secret: str, url: str,
                   ) -> WebhookEvent:
    """§1.8.2: base64(HMAC-SHA256(signature key, notification URL + raw body)). No age
    limit: Square redelivers for 72 h with the original `created_at` (§5.5)."""
    signature = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER), "")
    if not secret or not url or not signature or not payload:
        raise _bad_signature()
    expected = base64.b64encode(hmac.new(
        secret.encode(), url.encode() + payload, hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature.strip().encode("utf-8", "replace")):
        raise _bad_signature()
    return parse_webhook(payload)


def parse_webhook(payload: bytes) -> WebhookEvent:
    """The event in a (verified) body: `{merchant_id, type, event_id, created_at, data}`."""
    try:
        body = json.loads(payload)
        event_id, kind = body["event_id"], body["type"]
        data = body.get("data") or {}
        obj = data.get("object") or {}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ProviderError("square", "invalid", "BAD_PAYLOAD",
                            "square webhook body is not an event") from err
    if not isinstance(event_id, str) or not isinstance(kind, str) or not isinstance(obj, dict):
        raise ProviderError("square", "invalid", "BAD_PAYLOAD",
                            "square webhook body is not an event")
    # Square wraps the resource (`{"payment": {...}}`); hand on the resource itself, as
    # Stripe's `data.object` is (§11.3).
    inner = obj.get(data.get("type", ""))
    return WebhookEvent(id=event_id, type=normalize_event_type(kind), provider="square",
                        data=inner if isinstance(inner, dict) else obj,
                        timestamp=_unix(body.get("created_at")), provider_type=kind,
                        account=str(body.get("merchant_id") or ""))


def _mapped(err: ApiError) -> ProviderError:
    status = err.status_code or 0
    errors = _errors(err.body)
    decline = next((e for e in errors if e.get("category") in
                    ("PAYMENT_METHOD_ERROR", "REFUND_ERROR")), None)
    first = errors[0] if errors else {}
    code = str(first.get("code") or f"HTTP_{status}")
    if status >= 500 or status == 429 or status < 400 or code == "TEMPORARY_ERROR":
        # < 400: a success status with a body the SDK could not read; the outcome is unknown.
        return ProviderError("square", "unavailable", code,
                             f"square unavailable (HTTP {status}): {code}")
    if decline is not None:
        code = str(decline.get("code") or "")
        if decline.get("category") == "REFUND_ERROR":
            return ProviderError("square", "declined", code, f"refund declined by square: {code}")
        return ProviderError("square", "declined", code, decline_message(code))
    detail = str(first.get("detail") or "")
    return ProviderError("square", "invalid", code,
                         f"square refused the request: {code}" + (f" ({detail})" if detail else ""))


def _errors(body: Any) -> list[dict]:
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return []
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return [e for e in body["errors"] if isinstance(e, dict)]
    return []


def _payment_result(payment: Any) -> PaymentResult:
    if payment is None or not payment.id:
        raise ProviderError("square", "unavailable", "EMPTY_RESPONSE", "square returned no payment")
    if payment.status not in PAYMENT_STATUS:
        # FAILED or CANCELED with a success status: Square did not take the money.
        raise ProviderError("square", "declined", "CARD_DECLINED", declines.DECLINED)
    amount = payment.amount_money.amount if payment.amount_money else 0
    fee = sum(f.amount_money.amount for f in payment.processing_fee or []
              if f.amount_money and f.amount_money.amount)
    return PaymentResult(status=PAYMENT_STATUS[payment.status], transaction_id=payment.id,
                         amount=amount or 0, fee=fee)


def _refund_result(refund: Any) -> RefundResult:
    return RefundResult(refund_id=refund.id or "",
                        status=REFUND_STATUS.get(refund.status or "", "pending"))


def _money(amount: int, currency: str) -> dict:
    return {"amount": amount, "currency": currency.upper()}


def _check_amount(amount: int, currency: str) -> None:
    if amount <= 0 or len(currency) != 3 or not currency.isalpha():
        raise ProviderError("square", "invalid", "INVALID_VALUE", "invalid payment request")


def _key(key: str) -> str:
    # Keys come from base.provider_key (42 characters); a longer one would be refused by
    # Square after the money question was asked, so refuse it before.
    if not key or len(key) > MAX_KEY:
        raise ProviderError("square", "invalid", "IDEMPOTENCY_KEY",
                            f"square idempotency keys are 1 to {MAX_KEY} characters")
    return key


def _bad_signature() -> ProviderError:
    return ProviderError("square", "invalid", "SIGNATURE", "invalid webhook signature")


def _unix(created_at: Any) -> int:
    if isinstance(created_at, str) and created_at:
        try:
            return int(datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp())
        except ValueError:
            pass
    return int(time.time())
