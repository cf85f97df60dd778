"""The Stripe adapter (payments.md §1.7): PaymentIntents, SetupIntents, PaymentMethods, Refunds
and Customers through the official `stripe` SDK's async methods on an aiohttp transport, so a
call never blocks the event loop.

Our reference of a Stripe payment is the PaymentIntent id (`pi_…`), never the charge (§1.7.1
DO): refunds go to `payment_intent=pi_…`. `requires_action` is not a success (the client secret
goes back to the customer's browser, nothing is credited) and `processing` is not a decline (it
settles on the `payment_intent.succeeded` webhook).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import msgspec
import stripe

from services.payments.providers import declines
from services.payments.providers.base import (
    CardDetails,
    PaymentRequest,
    PaymentResult,
    ProviderError,
    ProviderName,
    RefundRequest,
    RefundResult,
    SavedMethod,
    SetupResult,
    WebhookEvent,
)

API_BASE = "https://api.stripe.com"
# The API version the adapter speaks (payments.md §1.7), pinned so that a Stripe account's
# default version can never change the shapes we read.
API_VERSION = "2024-12-18.acacia"
WEBHOOK_TOLERANCE = 300  # seconds, both into the past and into the future (§1.7.2 DO)

# §1.7.3
_EVENT_TYPES = {
    "payment_intent.succeeded": "payment.completed",
    "payment_intent.payment_failed": "payment.failed",
    "charge.refunded": "refund.succeeded",
    "charge.refund.updated": "refund.updated",
    "charge.dispute.created": "dispute.created",
    "charge.dispute.closed": "dispute.resolved",
    "customer.subscription.created": "subscription.created",
    "customer.subscription.updated": "subscription.updated",
    "customer.subscription.deleted": "subscription.canceled",
}


def key_livemode(secret_key: str) -> bool:
    """The mode a Stripe key belongs to: `sk_test_…` and `rk_test_…` are test mode."""
    return not secret_key.startswith(("sk_test_", "rk_test_"))


def normalize_event_type(stripe_type: str) -> str:
    """§1.7.3: Stripe's event type in our words; anything not listed passes unchanged."""
    return _EVENT_TYPES.get(stripe_type, stripe_type)


def verify_webhook(payload: bytes, headers: Mapping[str, str], secret: str, now: float,
                   ) -> WebhookEvent:
    """§1.7.2 DO: the event, if `Stripe-Signature` signs the raw body with `secret` within
    `WEBHOOK_TOLERANCE` of `now`; else `ProviderError(kind="invalid")`.

    Stripe's scheme, checked as its SDK checks it (`WebhookSignature.verify_header`: the
    HMAC-SHA256 of `{t}.{body}`, any of several `v1` values for secret rotation, a body
    that is UTF-8) but on the bytes as received, without decoding the body to text and
    encoding it back, and reading the header once. The clock check is ours, so that it
    also bounds the future (§1.7.2 DO)."""
    header = next((v for k, v in headers.items() if k.lower() == "stripe-signature"), "")
    timestamp, signatures = _signature_parts(header)
    if not signatures or not secret.strip(" \t\r\n\f\v") or not _utf8(payload):
        raise ProviderError("stripe", "invalid", "signature", "invalid signature")
    expected = hmac.digest(secret.encode(), b"%d." % timestamp + payload, "sha256").hex()
    if not any(hmac.compare_digest(expected.encode(), s.encode()) for s in signatures):
        raise ProviderError("stripe", "invalid", "signature", "invalid signature")
    if abs(now - timestamp) > WEBHOOK_TOLERANCE:
        raise ProviderError("stripe", "invalid", "timestamp",
                            "signature timestamp outside the tolerance")
    return parse_webhook(payload, timestamp)


def _signature_parts(header: str) -> tuple[int, list[str]]:
    """(t, the `v1` signatures) of a `Stripe-Signature` header, read as the SDK reads it
    (the first `t`; `key=value` items, a value ending at a second `=`); no signatures for a
    header it refuses to read."""
    items = [item.split("=", 2) for item in header.split(",")]
    try:
        timestamp = int([item[1] for item in items if item[0] == "t"][0])
        return timestamp, [item[1] for item in items if item[0] == "v1"]
    except (IndexError, ValueError):
        return 0, []


def _utf8(payload: bytes) -> bool:
    try:
        payload.decode()
    except UnicodeDecodeError:
        return False
    return True


class _EventData(msgspec.Struct):
    object: dict[str, Any]


class _Event(msgspec.Struct):
    """What we read of an event body; anything else in it is Stripe's."""

    id: Any
    type: Any
    data: _EventData
    account: Any = None
    livemode: Any = None


_decode_event = msgspec.json.Decoder(_Event).decode


def parse_webhook(payload: bytes, timestamp: int) -> WebhookEvent:
    """The event in a (verified) body: `{id, type, data: {object}}`."""
    try:
        body = _decode_event(payload)
    except msgspec.DecodeError as e:
        raise ProviderError("stripe", "invalid", "payload", "malformed event") from e
    return WebhookEvent(
        id=str(body.id), type=normalize_event_type(str(body.type)), provider="stripe",
        data=body.data.object, timestamp=timestamp, provider_type=str(body.type),
        account=str(body.account or ""),
        livemode=body.livemode if isinstance(body.livemode, bool) else None)


# §1.10, matched on Stripe's codes (DO): `decline_code` first, then `code`.
_DECLINE_CODES = {
    "insufficient_funds": declines.INSUFFICIENT,
    "card_velocity_exceeded": declines.LIMIT,
    "withdrawal_count_limit_exceeded": declines.LIMIT,
    "incorrect_zip": declines.ADDRESS,
    "incorrect_address": declines.ADDRESS,
    "incorrect_cvc": declines.CVC,
    "invalid_cvc": declines.CVC,
    "expired_card": declines.EXPIRED,
    "incorrect_number": declines.INVALID_NUMBER,
    "invalid_number": declines.INVALID_NUMBER,
    "invalid_account": declines.INVALID_NUMBER,
    "stolen_card": declines.CONTACT_BANK,
    "lost_card": declines.CONTACT_BANK,
    "pickup_card": declines.CONTACT_BANK,
    "do_not_honor": declines.BANK,
    "generic_decline": declines.BANK,
}


def decline_message(decline_code: str | None, code: str | None) -> str:
    """The customer-facing text of a decline (§1.10) from Stripe's `decline_code` and `code`."""
    return declines.decline_message((decline_code, code), _DECLINE_CODES)


def _refund_reason(reason: str) -> str:
    r = reason.lower()
    if r == "duplicate":
        return "duplicate"
    if r in ("fraudulent", "fraud"):
        return "fraudulent"
    return "requested_by_customer"


class StripeProvider:
    """One Stripe account (one secret key, one mode). `max_network_retries`: the SDK's own
    retries of a failed connection or 5xx, with the same idempotency key."""

    name: ProviderName = "stripe"

    def __init__(self, api_key: str, *, api_base: str = API_BASE,
                 api_version: str = API_VERSION, timeout: float = 30.0,
                 max_network_retries: int = 1,
                 clock: Callable[[], float] = time.time):
        self._http = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=timeout))
        self._client = stripe.StripeClient(
            api_key, stripe_version=api_version, base_addresses={"api": api_base},
            max_network_retries=max_network_retries, http_client=self._http)
        self._v1 = self._client.v1
        self._clock = clock

    async def close(self) -> None:
        await self._http.close_async()

    # ---- payments

    async def charge(self, req: PaymentRequest) -> PaymentResult:
        return await self._create_intent(req, manual=False)

    async def authorize(self, req: PaymentRequest) -> PaymentResult:
        return await self._create_intent(req, manual=True)

    async def _create_intent(self, req: PaymentRequest, manual: bool) -> PaymentResult:
        params: dict[str, Any] = {
            "amount": req.amount,
            "currency": req.currency.lower(),
            "confirm": True,
            # Card payments only, confirmed server-side: no redirect the server could follow.
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
        }
        if manual:
            params["capture_method"] = "manual"
        if req.token:
            params.update(_method_params(req.token))
        if req.customer_id:
            params["customer"] = req.customer_id
        if req.description:
            params["description"] = req.description
        metadata = {k: str(v) for k, v in req.metadata.items()}
        if req.order_id:
            metadata["order_id"] = req.order_id
        if metadata:
            params["metadata"] = metadata
        pi = await self._call(self._v1.payment_intents.create_async(
            params, {"idempotency_key": req.idempotency_key}))
        return _payment_result(pi)

    async def capture(self, transaction_id: str, amount: int, idempotency_key: str,
                      ) -> PaymentResult:
        params = {"amount_to_capture": amount} if amount > 0 else {}
        pi = await self._call(self._v1.payment_intents.capture_async(
            transaction_id, params, {"idempotency_key": idempotency_key}))
        return _payment_result(pi)

    async def cancel(self, transaction_id: str, idempotency_key: str) -> None:
        await self._call(self._v1.payment_intents.cancel_async(
            transaction_id, {}, {"idempotency_key": idempotency_key}))

    async def refund(self, req: RefundRequest) -> RefundResult:
        params: dict[str, Any] = {"payment_intent": req.transaction_id}
        if req.amount > 0:
            params["amount"] = req.amount
        if req.reason:
            params["reason"] = _refund_reason(req.reason)
        refund = await self._call(self._v1.refunds.create_async(
            params, {"idempotency_key": req.idempotency_key}))
        return _refund_result(refund)

    async def retrieve_payment(self, transaction_id: str) -> PaymentResult:
        return _payment_result(await self._call(
            self._v1.payment_intents.retrieve_async(transaction_id)))

    async def retrieve_refund(self, refund_id: str) -> RefundResult:
        return _refund_result(await self._call(self._v1.refunds.retrieve_async(refund_id)))

    # ---- customers and payment methods

    async def create_customer(self, email: str, name: str, idempotency_key: str) -> str:
        params = {"email": email}
        if name:
            params["name"] = name
        customer = await self._call(self._v1.customers.create_async(
            params, {"idempotency_key": idempotency_key}))
        return customer["id"]

    async def attach_method(self, customer_ref: str, token: str, idempotency_key: str,
                            ) -> SavedMethod:
        if token.startswith("tok_"):
            # A card token cannot be attached: it becomes a PaymentMethod first.
            created = await self._call(self._v1.payment_methods.create_async(
                {"type": "card", "card": {"token": token}},
                {"idempotency_key": idempotency_key + "-pm"}))
            token = created["id"]
        pm = await self._call(self._v1.payment_methods.attach_async(
            token, {"customer": customer_ref}, {"idempotency_key": idempotency_key}))
        return _saved_method(pm)

    async def detach_method(self, method_ref: str, idempotency_key: str) -> None:
        await self._call(self._v1.payment_methods.detach_async(
            method_ref, {}, {"idempotency_key": idempotency_key}))

    async def setup(self, customer_ref: str, token: str, idempotency_key: str,
                    ) -> SetupResult:
        params: dict[str, Any] = {
            "customer": customer_ref,
            **_method_params(token),
            "confirm": True,
            "usage": "off_session",
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            # The method's card details come back in the same answer.
            "expand": ["payment_method"],
        }
        si = await self._call(self._v1.setup_intents.create_async(
            params, {"idempotency_key": idempotency_key}))
        status = si.get("status")
        if status == "succeeded":
            pm = si.get("payment_method")
            method = _saved_method(pm) if isinstance(pm, Mapping) else (
                SavedMethod(provider_ref=pm, customer_ref=customer_ref) if pm else None)
            return SetupResult(status="succeeded", setup_id=si["id"], method=method)
        if status in ("requires_action", "processing"):
            return SetupResult(status=status, setup_id=si["id"],
                               client_secret=si.get("client_secret") or "")
        raise _refusal(si.get("last_setup_error"), status)

    # ---- disputes

    async def submit_dispute_evidence(self, dispute_ref: str, evidence: dict[str, str],
                                      idempotency_key: str) -> None:
        await self._call(self._v1.disputes.update_async(
            dispute_ref, {"evidence": evidence, "submit": True},
            {"idempotency_key": idempotency_key}))

    async def accept_dispute(self, dispute_ref: str, idempotency_key: str) -> None:
        await self._call(self._v1.disputes.close_async(
            dispute_ref, {}, {"idempotency_key": idempotency_key}))

    # ---- the account

    async def speaks_for(self, account_id: str) -> bool:
        """Whether this key may act for the Stripe account: the account it belongs to
        (`GET /v1/account`), or one connected to it, the key a Connect platform's
        (`GET /v1/accounts/{id}`). Stripe refusing the key, or the account to it, is a no."""
        own = await self._account(self._v1.accounts.retrieve_current_async())
        if own is None:
            return False
        if own["id"] == account_id:
            return True
        return await self._account(self._v1.accounts.retrieve_async(account_id)) is not None

    async def _account(self, call: Awaitable[Any]) -> dict[str, Any] | None:
        try:
            return await self._call(call)
        except ProviderError as e:
            # 401 a key Stripe does not know, 403 `account_invalid` an account not the
            # key's, 404 none such; anything else is Stripe not answering.
            if isinstance(e.__cause__, (stripe.AuthenticationError, stripe.PermissionError,
                                        stripe.InvalidRequestError)):
                return None
            raise

    # ---- webhooks

    def verify_webhook(self, payload: bytes, headers: dict[str, str], secret: str,
                       url: str = "") -> WebhookEvent:
        return verify_webhook(payload, headers, secret, self._clock())

    # ---- errors

    async def _call(self, call: Awaitable[Any]) -> dict[str, Any]:
        """The answer as plain data, or the failure as a `ProviderError`."""
        try:
            return (await call).to_dict()
        except stripe.CardError as e:
            err = e.error
            raise ProviderError("stripe", "declined",
                                (err and (err.decline_code or err.code)) or "card_declined",
                                decline_message(err and err.decline_code,
                                                err and err.code)) from e
        except (stripe.InvalidRequestError, stripe.IdempotencyError) as e:
            raise ProviderError("stripe", "invalid", e.code or "invalid_request",
                                e.user_message or "invalid request") from e
        except stripe.APIConnectionError as e:
            timed_out = isinstance(e.__cause__, TimeoutError)
            raise ProviderError("stripe", "unavailable",
                                "timeout" if timed_out else "connection_error",
                                "stripe timed out" if timed_out else "stripe unreachable") from e
        except stripe.StripeError as e:
            # 5xx, rate limits, a key Stripe refuses, a lock timeout: nothing was decided for
            # this payment; the caller keeps it retryable.
            raise ProviderError("stripe", "unavailable", e.code or "api_error",
                                f"stripe unavailable (HTTP {e.http_status})") from e
        except (TimeoutError, aiohttp.ClientError) as e:
            # The SDK reads the body outside its own error handling.
            raise ProviderError("stripe", "unavailable", "timeout"
                                if isinstance(e, TimeoutError) else "connection_error",
                                "stripe unreachable") from e


def _method_params(token: str) -> dict[str, Any]:
    """A PaymentMethod id (`pm_…`, what Stripe.js gives) is used as is; a card token
    (`tok_…`, from older Stripe.js or Apple/Google Pay) becomes the payment's method."""
    if token.startswith("tok_"):
        return {"payment_method_data": {"type": "card", "card": {"token": token}}}
    return {"payment_method": token}


def _payment_result(pi: Any) -> PaymentResult:
    status = pi.get("status")
    if status == "succeeded":
        return PaymentResult(status="succeeded", transaction_id=pi["id"],
                             amount=pi.get("amount_received") or 0)
    if status == "requires_capture":
        return PaymentResult(status="requires_capture", transaction_id=pi["id"],
                             amount=pi.get("amount_capturable") or 0)
    if status == "requires_action":
        return PaymentResult(status="requires_action", transaction_id=pi["id"], amount=0,
                             client_secret=pi.get("client_secret") or "")
    if status == "processing":
        return PaymentResult(status="processing", transaction_id=pi["id"], amount=0)
    if status == "canceled":  # released, or abandoned by Stripe: no money was taken
        raise ProviderError("stripe", "declined", "canceled",
                            pi.get("cancellation_reason") or "payment canceled")
    # requires_payment_method after a confirm: the attempt failed without an error answer.
    raise _refusal(pi.get("last_payment_error"), status)


def _refund_result(refund: Any) -> RefundResult:
    status = refund.get("status")
    if status == "succeeded":
        mapped = "succeeded"
    elif status in ("pending", "requires_action"):
        mapped = "pending"  # settles on `charge.refund.updated`
    else:
        mapped = "failed"
    return RefundResult(refund_id=refund["id"], status=mapped)


def _refusal(error: Any, status: str | None) -> ProviderError:
    if error and error.get("type") == "card_error":
        decline, code = error.get("decline_code"), error.get("code")
        return ProviderError("stripe", "declined", decline or code or "card_declined",
                             decline_message(decline, code))
    if status == "requires_payment_method":
        return ProviderError("stripe", "declined", "card_declined", declines.DECLINED)
    return ProviderError("stripe", "invalid", f"status_{status}",
                         f"unexpected stripe status {status}")


def _saved_method(pm: Any) -> SavedMethod:
    card = pm.get("card")
    customer = pm.get("customer")
    return SavedMethod(
        provider_ref=pm["id"],
        customer_ref=(customer if isinstance(customer, str) else
                      (customer or {}).get("id", "")) or "",
        type=pm.get("type") or "card",
        card=CardDetails(brand=card.get("brand") or "", last4=card.get("last4") or "",
                         exp_month=card.get("exp_month") or 0,
                         exp_year=card.get("exp_year") or 0) if card else None)
