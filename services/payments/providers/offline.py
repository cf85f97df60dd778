"""The offline provider (payments.md §1.6 DO): no network, deterministic, the observable
results of a real provider. Payments use it in test mode when the organization has no
provider, and everywhere with `PAYMENTS_OFFLINE=1`.

Stripe's test cards decide the outcome: a token or card number ending in one of
`DECLINES`' numbers is declined with that decline code (attaching it fails too, as Stripe
verifies a card when it is attached), except `…0341`, which attaches and then fails to
charge. Everything else succeeds. A payment's reference is `internal` (the reference's
internal path), so holds, captures and refunds need no state here: the payments service
keeps the amounts and checks them before it calls."""

from __future__ import annotations

import hashlib
import re

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

INTERNAL_REF = "internal"

# Stripe's test card numbers (by their last four digits) and test tokens → decline code.
DECLINES = {
    "0002": "generic_decline",
    "9995": "insufficient_funds",
    "9987": "lost_card",
    "9979": "stolen_card",
    "0069": "expired_card",
    "0127": "incorrect_cvc",
    "0119": "processing_error",
}
DECLINED_ON_CHARGE_ONLY = {"0341": "generic_decline"}
TOKENS = {
    "tok_chargedeclined": "generic_decline",
    "tok_chargedeclinedinsufficientfunds": "insufficient_funds",
    "tok_chargedeclinedlostcard": "lost_card",
    "tok_chargedeclinedstolencard": "stolen_card",
    "tok_chargedeclinedexpiredcard": "expired_card",
    "tok_chargedeclinedincorrectcvc": "incorrect_cvc",
}
_TAIL = re.compile(r"(\d{4})$")
_NUMBER = re.compile(r"(\d{12,19})$")


def _tail(token: str) -> str:
    m = _TAIL.search(token)
    return m.group(1) if m else ""


def _decline(token: str, *, charging: bool) -> str:
    """The decline code a token gets ("" = accepted)."""
    code = TOKENS.get(token.lower())
    if code:
        return code
    tail = _tail(token)
    return DECLINES.get(tail) or (DECLINED_ON_CHARGE_ONLY.get(tail, "") if charging else "")


def _refuse(code: str) -> ProviderError:
    return ProviderError("offline", "declined", code, declines.decline_message((code,), {}))


def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def _card_of(token: str) -> CardDetails | None:
    """A card number's brand and last four digits (never the number itself)."""
    m = _NUMBER.search(token)
    if not m:
        return None
    number = m.group(1)
    brand = {"4": "visa", "5": "mastercard", "3": "amex", "6": "discover"}.get(number[0], "")
    return CardDetails(brand=brand, last4=number[-4:])


class OfflineProvider:
    name: ProviderName = "offline"

    async def charge(self, req: PaymentRequest) -> PaymentResult:
        self._check(req)
        return PaymentResult(status="succeeded", transaction_id=INTERNAL_REF, amount=req.amount)

    async def authorize(self, req: PaymentRequest) -> PaymentResult:
        self._check(req)
        return PaymentResult(status="requires_capture", transaction_id=INTERNAL_REF,
                             amount=req.amount)

    async def capture(self, transaction_id: str, amount: int, idempotency_key: str,
                      ) -> PaymentResult:
        return PaymentResult(status="succeeded", transaction_id=transaction_id, amount=amount)

    async def cancel(self, transaction_id: str, idempotency_key: str) -> None:
        return None

    async def refund(self, req: RefundRequest) -> RefundResult:
        return RefundResult(refund_id=INTERNAL_REF, status="succeeded")

    async def retrieve_payment(self, transaction_id: str) -> PaymentResult:
        # Its payments are answered at once and kept nowhere: none is ever left to retrieve
        # (a confirm that died before the answer is asked again under its key instead).
        raise ProviderError("offline", "invalid", "not_found",
                            "the offline provider keeps no payments")

    async def retrieve_refund(self, refund_id: str) -> RefundResult:
        return RefundResult(refund_id=refund_id, status="succeeded")  # its refunds all are

    async def create_customer(self, email: str, name: str, idempotency_key: str) -> str:
        return "cus_offline_" + _digest(idempotency_key)

    async def attach_method(self, customer_ref: str, token: str, idempotency_key: str,
                            ) -> SavedMethod:
        code = _decline(token, charging=False)
        if code:
            raise _refuse(code)
        # The reference keeps the number's last digits, so a saved card charges (or is
        # declined) as its number would be.
        tail = _tail(token)
        ref = "pm_offline_" + _digest(customer_ref, token) + (f"_{tail}" if tail else "")
        return SavedMethod(provider_ref=ref, customer_ref=customer_ref, card=_card_of(token))

    async def detach_method(self, method_ref: str, idempotency_key: str) -> None:
        return None

    async def setup(self, customer_ref: str, token: str, idempotency_key: str,
                    ) -> SetupResult:
        if not token.startswith("pm_offline_"):
            method = await self.attach_method(customer_ref, token, idempotency_key)
        elif code := _decline(token, charging=False):
            raise _refuse(code)
        else:  # saved here already: it stays what it is
            method = SavedMethod(provider_ref=token, customer_ref=customer_ref)
        return SetupResult(status="succeeded", setup_id=INTERNAL_REF, method=method)

    async def submit_dispute_evidence(self, dispute_ref: str, evidence: dict[str, str],
                                      idempotency_key: str) -> None:
        return None  # no provider: nothing to tell

    async def accept_dispute(self, dispute_ref: str, idempotency_key: str) -> None:
        return None

    def verify_webhook(self, payload: bytes, headers: dict[str, str], secret: str,
                       url: str = "") -> WebhookEvent:
        # No provider, no signatures: every webhook fails (§1.6).
        raise ProviderError("offline", "invalid", "no_signature", "signature verification failed")

    async def close(self) -> None:
        return None

    @staticmethod
    def _check(req: PaymentRequest) -> None:
        if req.amount <= 0 or not req.currency:
            raise ProviderError("offline", "invalid", "invalid_request", "invalid payment request")
        code = _decline(req.token, charging=True)
        if code:
            raise _refuse(code)
