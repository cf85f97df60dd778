"""Credit-grant rules, free of I/O: validation, the active predicate, meter eligibility,
burn order and the burn-down plan (ledger.md §2.3, §5, §6.3, §9.5).

A grant is a prioritised allocation of credit in one currency and one mode, separate from the
transaction balance. Burning credit applies grants to an amount due, lowest priority first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from contracts import Actor, ErrorCode
from contracts.credits import CreditGrantCreateParams
from contracts.errors import Failure, forbidden, invalid, not_found
from contracts.rules import currency_of, require_user

OTHER_TAG = "other"  # the breakdown's group for untagged grants
GRANT_NOT_FOUND = "credit grant not found"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Grant:
    id: str
    remaining: int
    currency: str = "usd"
    priority: int = 0
    effective_at: datetime = _EPOCH
    expires_at: datetime | None = None
    created_at: datetime = _EPOCH
    eligibility: tuple[str, ...] = ()  # meter ids; empty = every meter
    voided: bool = False
    user_id: str = ""
    name: str = ""
    amount: int = 0
    tags: str = ""


@dataclass(frozen=True, slots=True)
class BurnPlan:
    remaining: int  # what the grants did not cover
    burned: tuple[tuple[str, int], ...] = ()  # (grant id, amount), in burn order

    @property
    def total(self) -> int:
        return sum(amount for _, amount in self.burned)


# ---- validation -----------------------------------------------------------------------


def new_grant(p: CreditGrantCreateParams, now: datetime) -> Grant:
    """The grant a create request describes, without its id. Checks in the reference's
    order: userId, amountCents, expiresIn; then the currency (ours)."""
    user_id = require_user(p.userId, "userId is required", "userId")
    if p.amountCents <= 0:
        raise invalid("amountCents must be positive", "amountCents")
    expires_at = None
    if p.expiresIn:
        try:
            # Zero and negative durations are accepted: the grant is born expired.
            expires_at = now + go_duration(p.expiresIn)
        except (ValueError, OverflowError):
            raise invalid("invalid expiresIn duration", "expiresIn") from None
    return Grant(
        id="", user_id=user_id, name=p.name, amount=p.amountCents, remaining=p.amountCents,
        currency=currency_of(p.currency), priority=p.priority,
        eligibility=tuple(p.eligibility or ()), tags=p.tags,
        effective_at=now, expires_at=expires_at, created_at=now,
    )


def require_grant_id(grant_id: str) -> str:
    # Any id we did not issue, malformed or empty, is simply not found.
    if not grant_id:
        raise not_found(GRANT_NOT_FOUND)
    return grant_id


def require_voidable(voided: bool | None) -> None:
    """`voided` is the stored flag, None when the grant does not exist (in this org/mode)."""
    if voided is None:
        raise not_found(GRANT_NOT_FOUND)
    if voided:
        raise Failure(ErrorCode.INVALID_STATE, 400, "grant is already voided")


def require_burner(actor: Actor, user_id: str) -> None:
    """Burns have no HTTP route; this is the sink's own fence. An end user's scope may only
    spend that user's credit; publishable keys never move money."""
    if actor.role == "publishable":
        raise forbidden()
    if actor.role == "user" and user_id != actor.user_id:
        raise forbidden("cannot access another user's account")


# ---- the grant model ------------------------------------------------------------------


def is_active(g: Grant, now: datetime) -> bool:
    """Not voided, something left, already effective and not yet expired (both ends
    inclusive: effective exactly now and expiring exactly now are active)."""
    return (not g.voided and g.remaining > 0 and now >= g.effective_at
            and (g.expires_at is None or now <= g.expires_at))


def eligible(g: Grant, meter_id: str) -> bool:
    """A grant with no eligibility list serves every meter; otherwise only the meters it
    names, so a meter-scoped grant does not serve an empty meter id."""
    return not g.eligibility or meter_id in g.eligibility


def usable_for(g: Grant, meter_id: str) -> bool:
    """The burn filter, shared by burn and preview (§9.5: the reference's preview ignored
    eligibility). An empty meter id means "no meter filter", as in the reference: the
    invoice-level burn may spend meter-scoped grants too."""
    return meter_id == "" or eligible(g, meter_id)


def burn_order(g: Grant) -> tuple:
    """Lower priority first; then the soonest expiry (grants that never expire last); then
    effective, created and id ascending so equal grants always burn in the same order."""
    never = g.expires_at is None
    expiry = _EPOCH if never else g.expires_at  # unused among never-expiring grants
    return (g.priority, never, expiry, g.effective_at, g.created_at, g.id)


def burnable(grants: Iterable[Grant], currency: str, meter_id: str, now: datetime
             ) -> list[Grant]:
    """The grants a burn may spend, in burn order: active, of this currency (mode is the
    store's partition) and usable for the meter."""
    return sorted((g for g in grants
                   if g.currency == currency and is_active(g, now) and usable_for(g, meter_id)),
                  key=burn_order)


def plan_burn(ordered: Iterable[Grant], amount: int) -> BurnPlan:
    """Take from each grant in turn until `amount` is covered. An amount ≤ 0 burns nothing
    and is returned untouched, as the reference does."""
    if amount <= 0:
        return BurnPlan(amount)
    remaining = amount
    burned = []
    for g in ordered:
        if remaining <= 0:
            break
        take = min(g.remaining, remaining)
        if take > 0:
            burned.append((g.id, take))
            remaining -= take
    return BurnPlan(remaining, tuple(burned))


def burn_down(grants: Iterable[Grant], amount: int, currency: str, meter_id: str,
              now: datetime) -> BurnPlan:
    """The whole burn-down: what a burn writes and what a preview reports."""
    return plan_burn(burnable(grants, currency, meter_id, now), amount)


def apply_burn(grants: Iterable[Grant], plan: BurnPlan) -> list[Grant]:
    """The grants after `plan`: the pure twin of `store.burn`, for tests."""
    taken = dict(plan.burned)
    return [replace(g, remaining=g.remaining - taken[g.id]) if g.id in taken else g
            for g in grants]


# ---- read views -----------------------------------------------------------------------


def balances(grants: Iterable[Grant], now: datetime) -> list[tuple[str, int]]:
    """Σ remaining of active grants per currency, sorted by currency."""
    sums: dict[str, int] = {}
    for g in grants:
        if is_active(g, now):
            sums[g.currency] = sums.get(g.currency, 0) + g.remaining
    return sorted(sums.items())


@dataclass(slots=True)
class TagGroup:
    cents: int = 0
    expires_at: datetime | None = None  # the earliest expiry in the group


def breakdown(grants: Iterable[Grant], currency: str, now: datetime) -> dict[str, TagGroup]:
    """Active grants of one currency grouped by their exact tags (`other` when untagged).

    The reference added every currency into one number; we sum one currency per call (the
    endpoint's `currency`, default usd), so the cents mean something."""
    groups: dict[str, TagGroup] = {}
    for g in grants:
        if g.currency != currency or not is_active(g, now):
            continue
        group = groups.setdefault(g.tags or OTHER_TAG, TagGroup())
        group.cents += g.remaining
        if g.expires_at is not None and (group.expires_at is None
                                         or g.expires_at < group.expires_at):
            group.expires_at = g.expires_at
    return groups


# ---- Go durations (§6.7) --------------------------------------------------------------

_UNITS_NS = {
    "ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
    "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
}
_MAX_NS = 2**63  # Go durations are int64 nanoseconds
_DIGITS = "0123456789"
_MAX_TEXT = 256  # far beyond any real duration; keeps the parser's work bounded


def go_duration_ns(text: str) -> int:
    """Nanoseconds of a Go duration string, exactly as Go's `time.ParseDuration` reads it:
    `[-+]?([0-9]*(\\.[0-9]*)?[a-z]+)+` or a bare `0`. Raises ValueError otherwise."""
    if len(text) > _MAX_TEXT:
        raise ValueError("duration too long")
    s = text
    negative = False
    if s and s[0] in "+-":
        negative = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = 0
    while s:
        if s[0] != "." and s[0] not in _DIGITS:
            raise ValueError(f"invalid duration {text!r}")
        i = _leading_digits(s)
        whole, s = (int(s[:i]) if i else 0), s[i:]
        has_whole = i > 0
        fraction, scale, has_fraction = 0, 1, False
        if s.startswith("."):
            s = s[1:]
            i = _leading_digits(s)
            digits, s = s[:i], s[i:]
            has_fraction = i > 0
            # Go keeps the fraction's digits while they fit in an int64 and ignores the rest.
            for c in digits:
                if fraction > (_MAX_NS - 1) // 10 or fraction * 10 + int(c) > _MAX_NS:
                    break
                fraction, scale = fraction * 10 + int(c), scale * 10
        if not (has_whole or has_fraction):
            raise ValueError(f"invalid duration {text!r}")
        i = 0
        while i < len(s) and s[i] != "." and s[i] not in _DIGITS:
            i += 1
        unit = _UNITS_NS.get(s[:i])
        if unit is None:
            raise ValueError(f"unknown unit in duration {text!r}")
        s = s[i:]
        if whole > _MAX_NS // unit:
            raise OverflowError(f"invalid duration {text!r}")
        value = whole * unit
        if fraction:
            value += int(fraction * (unit / scale))  # Go computes this part in float64
        total += value
        if value > _MAX_NS or total > _MAX_NS:
            raise OverflowError(f"invalid duration {text!r}")
    if not negative and total > _MAX_NS - 1:
        raise OverflowError(f"invalid duration {text!r}")
    return -total if negative else total


def go_duration(text: str) -> timedelta:
    """A Go duration as a timedelta (microsecond precision; nanoseconds truncated)."""
    ns = go_duration_ns(text)
    micros = abs(ns) // 1_000
    return timedelta(microseconds=-micros if ns < 0 else micros)


def _leading_digits(s: str) -> int:
    i = 0
    while i < len(s) and s[i] in _DIGITS:
        i += 1
    return i
