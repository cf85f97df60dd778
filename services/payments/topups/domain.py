"""Top-ups, pure (payments.md §4.3, §8.6): what a request asks, its bounds, whose balance it
credits, and what a stored top-up means for a request that arrives again. No I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from contracts import Scope
from contracts.errors import invalid
from contracts.payments import TopupParams, TopupTokenParams
from contracts.rules import user_id
from services.payments.common import currency
from services.runtime.idempotency import mismatch

MIN_CENTS, MAX_CENTS = 100, 500_000  # §8.6 defaults
STARTED, CHARGED, COMPLETED, FAILED = "started", "charged", "completed", "failed"
IN_PROGRESS = "top-up already in progress"
CREDIT_FAILED = "charge succeeded but balance credit failed; contact support"


def description(topup: Topup) -> str:
    return f"Top-up {topup.amount} {topup.currency} for user {topup.customer_id}"


def intent_id(topup_id: str) -> str:
    """A top-up's payment intent: one id, whichever worker charges it (the ledger's journal
    records the payment under it before payments records the intent)."""
    return "pi_" + topup_id.removeprefix("tu_")


@dataclass(frozen=True, slots=True)
class Topup:
    customer_id: str  # whose balance is credited
    amount: int
    currency: str
    payment_method_id: str = ""  # a saved method (`token` is then its provider reference)
    token: str = ""  # what is charged: a one-time token, or a saved method's reference


def bounds(env: Mapping[str, str]) -> tuple[int, int]:
    """`COMMERCE_TOPUP_MIN_CENTS` / `_MAX_CENTS`; anything but a positive integer keeps the
    default."""
    def positive(name: str, default: int) -> int:
        raw = env.get(name, "").strip()
        return int(raw) if raw.isdigit() and int(raw) > 0 else default
    return positive("COMMERCE_TOPUP_MIN_CENTS", MIN_CENTS), positive("COMMERCE_TOPUP_MAX_CENTS",
                                                                     MAX_CENTS)


def _amount(cents: int, limits: tuple[int, int]) -> int:
    if cents <= 0:
        raise invalid("amountCents must be positive", "amountCents")
    low, high = limits
    if not low <= cents <= high:
        raise invalid(f"amountCents must be between {low} and {high}", "amountCents")
    return cents


def saved_method_topup(p: TopupParams, limits: tuple[int, int]) -> Topup:
    """Checked in the reference's order: the user, the method, the amount."""
    customer = user_id(p.userId)
    if not customer:
        raise invalid("userId is required", "userId")
    if not p.paymentMethodId.strip():
        raise invalid("paymentMethodId is required", "paymentMethodId")
    return Topup(customer, _amount(p.amountCents, limits), currency(p.currency),
                 payment_method_id=p.paymentMethodId.strip())


def token_topup(p: TopupTokenParams, scope: Scope, limits: tuple[int, int]) -> Topup:
    """An end user credits their own balance, whatever `userId` says (§4.3 DO 2: never a
    client-chosen destination); admins and the platform name the user."""
    token = p.sourceId.strip()
    if not token:
        raise invalid("sourceId is required", "sourceId")
    actor = scope.actor
    customer = user_id(actor.user_id or "") if actor.role == "user" else user_id(p.userId)
    if not customer:
        raise invalid("userId is required", "userId")
    return Topup(customer, _amount(p.amountCents, limits), currency(p.currency), token=token)


def require_payer(scope: Scope, customer_id: str, method_owner: str) -> None:
    """A saved method credits its owner's balance; only the platform may credit another."""
    if scope.actor.role != "platform" and method_owner != customer_id:
        raise invalid("payment method does not belong to userId", "paymentMethodId")


def again(status: str, fingerprint: str, stored_fingerprint: str, stale: bool) -> str:
    """What a request whose key already has a top-up does: `replay` its answer, `resume` one
    whose worker is gone or gave up (charging again is safe: the provider key is the
    top-up's; so is crediting again), or, while a worker has it, `wait` for its answer if
    this process is writing it, else be refused."""
    if stored_fingerprint and fingerprint and fingerprint != stored_fingerprint:
        raise mismatch()
    if status == COMPLETED:
        return "replay"
    return "resume" if stale else "wait"
