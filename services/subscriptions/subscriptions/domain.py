"""Subscriptions: the rules, pure (subscriptions.md §1.3, §2.1–§2.4, §3.1). Period
arithmetic anchored to the first period's start, starting a subscription (trial or not),
the plan or quantity change with its proration, cancel and reactivate. No I/O: handlers
load the row, call these and save what they return."""

from __future__ import annotations

import calendar
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from msgspec import UNSET

from contracts.errors import forbidden, invalid
from contracts.subscriptions import MAX_QUANTITY, MAX_TRIAL_DAYS, SubscriptionCreateParams

TRIALING, ACTIVE, PAST_DUE, CANCELED, UNPAID = "trialing", "active", "past_due", "canceled", "unpaid"
# Subscriptions this API starts, and the grant CLI's gifts: reactivated locally. A provider's
# subscription canceled at the provider is gone there (§7 B12).
LOCAL_PROVIDERS = frozenset({"internal", "manual_gift"})

MONTH, YEAR = "month", "year"
_INTERVALS = {"": MONTH, "month": MONTH, "monthly": MONTH,
              "year": YEAR, "yearly": YEAR, "annual": YEAR}

MINT_REQUIRED = ("creating a paid-tier subscription requires platform-administrator or"
                 " internal-service credentials")


# ---- period arithmetic (§2.1 OURS: anchored month-end clamping) ----------------------------


def requested_interval(raw: str) -> str:
    """An interval a client names: `month` or `year` (the catalog's `monthly` and the usual
    spellings accepted); anything else is 400 `invalid interval`."""
    interval = _INTERVALS.get(raw.strip().lower())
    if interval is None:
        raise invalid("invalid interval", "interval")
    return interval


def interval_months(interval: str, count: int) -> int:
    """Months in one period. A stored interval other than a year (`monthly`, `week`, `day`,
    …) means months, as in the reference; a count ≤ 0 means 1."""
    n = count if count > 0 else 1
    return 12 * n if _INTERVALS.get(interval) == YEAR else n


def add_months(anchor: datetime, months: int) -> datetime:
    """`anchor` moved by whole months, keeping its day of month and time, clamped to the
    target month's last day (Jan 31 + 1 → Feb 28/29; + 2 → Mar 31)."""
    years, month0 = divmod(anchor.month - 1 + months, 12)
    year, month = anchor.year + years, month0 + 1
    return anchor.replace(year=year, month=month,
                          day=min(anchor.day, calendar.monthrange(year, month)[1]))


def period_end(anchor: datetime, k: int, interval: str, count: int) -> datetime:
    """The end of the k-th period (k ≥ 1) of a subscription whose first period starts at
    `anchor`: depends on the anchor and k only, so periods never drift."""
    return add_months(anchor, k * interval_months(interval, count))


def months_between(anchor: datetime, end: datetime) -> int:
    """Whole calendar months from the anchor's month to `end`'s (`end` being a period end)."""
    return (end.year - anchor.year) * 12 + end.month - anchor.month


@dataclass(frozen=True, slots=True)
class PlanTerms:
    """What a subscription bills from: the snapshot taken at create and at each plan change.
    `price` is per period (per seat when `per_user`; the yearly price for annual plans)."""

    id: str
    name: str
    price: int
    currency: str
    interval: str  # `monthly` (catalog, billed monthly), `month`, `year`
    interval_count: int = 1
    category: str = ""
    per_user: bool = False
    trial_period_days: int = 0


@dataclass(frozen=True, slots=True)
class Sub:
    """A subscription's state as the rules see it."""

    plan: PlanTerms
    status: str
    quantity: int
    period_start: datetime
    period_end: datetime
    billing_anchor: datetime  # the first period's start: every period end derives from it
    start_at: datetime
    cancel_at_period_end: bool = False
    canceled: bool = False
    canceled_at: datetime | None = None
    ended_at: datetime | None = None
    trial_start: datetime | None = None
    trial_end: datetime | None = None
    provider_type: str = "internal"

    @property
    def amount(self) -> int:
        """What one period costs: the plan's price, times the seats of a per-seat plan."""
        return self.plan.price * (self.quantity if self.plan.per_user else 1)


def billed_every(plan: PlanTerms) -> str:
    """`year` for a plan billed yearly, else `month`."""
    return YEAR if _INTERVALS.get(plan.interval) == YEAR else MONTH


def next_period(sub: Sub) -> tuple[datetime, datetime]:
    """The period after the current one: it starts at the current end and ends one interval
    of the plan *now* snapshotted later, counted from the anchor (a plan change's new
    interval takes effect here). The cycle advances with it."""
    months = months_between(sub.billing_anchor, sub.period_end)
    step = interval_months(sub.plan.interval, sub.plan.interval_count)
    return sub.period_end, add_months(sub.billing_anchor, months + step)


# ---- creating (§2.2, §3.1.1) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A create's own inputs after their format checks (the plan not yet resolved)."""

    user_id: str
    plan_ref: str
    interval: str
    quantity: int | None  # None: not given
    trial_days: int | None  # None: the plan's


def create_request(p: SubscriptionCreateParams, user: str) -> CreateRequest:
    """§3.1.1 steps 2–3, then the OURS inputs' formats (before any lookup)."""
    if not user:
        raise invalid("userId is required", "userId")
    if not p.planId.strip():
        raise invalid("planId is required", "planId")
    quantity = None if p.quantity is UNSET else p.quantity
    if quantity is not None:
        require_quantity(quantity)
    trial = None if p.trialPeriodDays is UNSET else p.trialPeriodDays
    if trial is not None and not 0 <= trial <= MAX_TRIAL_DAYS:
        raise invalid(f"trialPeriodDays must be between 0 and {MAX_TRIAL_DAYS}",
                      "trialPeriodDays")
    return CreateRequest(user, p.planId.strip(), requested_interval(p.interval), quantity,
                         trial)


def require_quantity(quantity: int) -> None:
    if not 1 <= quantity <= MAX_QUANTITY:
        raise invalid(f"quantity must be between 1 and {MAX_QUANTITY}", "quantity")


def seats(plan: PlanTerms, quantity: int | None) -> int:
    """The quantity of a new subscription: seats for a per-seat plan (default 1); a flat
    plan takes none but 1."""
    if quantity is None:
        return 1
    if not plan.per_user and quantity != 1:
        raise invalid("quantity is only for per-seat plans", "quantity")
    return quantity


def plan_terms(plan: Mapping[str, Any], interval: str) -> PlanTerms:
    """The snapshot of a plan row (`subscriptions.plans`) sold at `interval`: annual sales
    bill the catalog's yearly price once a year. A plan without a list price is sold by
    contract only."""
    if plan["contact_sales"] or plan["price"] is None:
        raise invalid("plan requires a sales contract", "planId")
    price, sold_as = plan["price"], plan["interval"]
    if interval == YEAR and _INTERVALS.get(sold_as) != YEAR:
        if plan["price_annual_total"] is None:
            raise invalid("plan has no annual price", "interval")
        price, sold_as = plan["price_annual_total"], YEAR
    return PlanTerms(id=plan["id"], name=plan["name"], price=price, currency=plan["currency"],
                     interval=sold_as, interval_count=plan["interval_count"],
                     category=plan["category"], per_user=plan["per_user"],
                     trial_period_days=plan["trial_period_days"])


def require_mint(amount: int, may_mint: bool) -> None:
    """§3.1.1 step 5: a paid subscription is money owed on the customer's behalf; only
    callers that may mint start (or raise) one."""
    if amount > 0 and not may_mint:
        raise forbidden(MINT_REQUIRED)


def start(plan: PlanTerms, quantity: int, trial_days: int | None, now: datetime) -> Sub:
    """§2.2: trialing for the trial's calendar days, then periods from the trial's end;
    otherwise active from now. Nothing is charged: periods are billed in arrears."""
    days = plan.trial_period_days if trial_days is None else trial_days
    if days > 0:
        trial_end = now + timedelta(days=days)
        return Sub(plan=plan, status=TRIALING, quantity=quantity, period_start=trial_end,
                   period_end=period_end(trial_end, 1, plan.interval, plan.interval_count),
                   billing_anchor=trial_end, start_at=now, trial_start=now,
                   trial_end=trial_end)
    return Sub(plan=plan, status=ACTIVE, quantity=quantity, period_start=now,
               period_end=period_end(now, 1, plan.interval, plan.interval_count),
               billing_anchor=now, start_at=now)


# ---- changing plan or quantity (§2.3, §3.1.4) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Proration:
    description: str
    plan_id: str
    plan_name: str
    amount: int  # cents: positive charges, negative credits
    currency: str
    period_start: datetime
    period_end: datetime


def half_away_from_zero(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))  # HALF_UP is away from zero


def change(sub: Sub, plan: PlanTerms, quantity: int | None, prorate: bool, now: datetime,
           ) -> tuple[Sub, Proration | None]:
    """The subscription on `plan` with `quantity` seats (None: unchanged), and with
    `prorate`, the pending item for the rest of the period: the new amount's share charged,
    the old one's credited, each rounded half away from zero, the share clamped to [0, 1].
    Period, status and trial are untouched; a new interval applies from the next period."""
    if sub.status == CANCELED:
        raise invalid("cannot change a canceled subscription")
    if quantity is not None:
        require_quantity(quantity)
        if not plan.per_user and quantity != 1:
            raise invalid("quantity is only for per-seat plans", "quantity")
    elif not plan.per_user:
        quantity = 1  # a flat plan has one
    changed = replace(sub, plan=plan, quantity=sub.quantity if quantity is None else quantity)
    total = (sub.period_end - sub.period_start).total_seconds()
    if not prorate or total <= 0:
        return changed, None
    fraction = (sub.period_end - now).total_seconds() / total
    if not math.isfinite(fraction):
        return changed, None
    share = Decimal(min(max(fraction, 0.0), 1.0))
    amount = half_away_from_zero(changed.amount * share) - half_away_from_zero(sub.amount * share)
    return changed, Proration(
        description=f"Proration: {sub.plan.name} -> {plan.name}", plan_id=plan.id,
        plan_name=plan.name, amount=amount, currency=plan.currency, period_start=now,
        period_end=sub.period_end)


# ---- cancel and reactivate (§2.4) ----------------------------------------------------------


def cancel(sub: Sub, at_period_end: bool, now: datetime) -> Sub:
    if sub.status == CANCELED:
        raise invalid("subscription is already canceled")
    if at_period_end:  # the cycle ends it at the period's end (§1.3.3)
        return replace(sub, cancel_at_period_end=True, canceled_at=now)
    return replace(sub, status=CANCELED, canceled=True, canceled_at=now, ended_at=now,
                   cancel_at_period_end=False)


def reactivate(sub: Sub) -> Sub:
    if sub.status == CANCELED and (sub.ended_at is not None
                                   or sub.provider_type not in LOCAL_PROVIDERS):
        raise invalid("cannot reactivate a fully ended subscription")
    return replace(sub, cancel_at_period_end=False, canceled=False, canceled_at=None,
                   status=ACTIVE if sub.status == CANCELED else sub.status)
