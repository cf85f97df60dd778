"""Pricing rules and prices, free of I/O (metering-invoicing.md §2.3, §4, §9.2–§9.4): what a
rule may say, what a quantity costs under it, which rule prices a meter, the usage lines of
an invoice, the bounds of a preview's period and what credits leave due.

Prices are held as integers of 10⁻¹² cent (the finest decimal price), so integer and
decimal prices follow one path and a line is rounded once, half up, to whole cents."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from msgspec import UNSET, UnsetType

from contracts.common import INT64_MAX, INT64_MIN
from contracts.errors import invalid
from contracts.invoicing import PricingRule, PricingRuleCreateParams, PricingTier
from contracts.meter_events import parse_rfc3339
from contracts.metering import MeterUsage
from contracts.rules import currency_of

PER_UNIT, TIERED, VOLUME, PACKAGE = "per_unit", "tiered", "volume", "package"
MODELS = frozenset({PER_UNIT, TIERED, VOLUME, PACKAGE})
SCALE = 10**12  # 10⁻¹² cent per unit: `unitPriceDecimal` and `priceDecimal` have 12 places
_DECIMAL = re.compile(r"^\d{1,18}(\.\d{1,12})?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

NOT_FOUND = "pricing rule not found"


# ---- creating a rule -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewRule:
    meter_id: str
    plan_id: str
    model: str
    currency: str
    unit_price: int
    unit_price_decimal: str | None
    package_size: int | None
    tiers: list[PricingTier] | None


def new_rule(p: PricingRuleCreateParams) -> NewRule:
    """The rule as stored, or the first thing wrong with it (§2.3 Δ, §4.1)."""
    meter_id = p.meterId.strip()
    if not meter_id:
        raise invalid("meterId is required", "meterId")
    model = p.model.strip().lower() or PER_UNIT
    if model not in MODELS:
        raise invalid("invalid model", "model")
    currency = currency_of(p.currency)
    if p.unitPrice < 0:
        raise invalid("unitPrice must be non-negative", "unitPrice")
    unit_price_decimal = _decimal_price(p.unitPriceDecimal, "unitPriceDecimal")
    tiers = _tiers(model, p.tiers)
    if model == PACKAGE and p.packageSize <= 0:
        raise invalid("packageSize must be positive for the package model", "packageSize")
    if model != PACKAGE and p.packageSize:
        raise invalid("packageSize applies only to the package model", "packageSize")
    return NewRule(meter_id, p.planId.strip(), model, currency, p.unitPrice,
                   unit_price_decimal, p.packageSize if model == PACKAGE else None, tiers)


def _tiers(model: str, tiers: list[PricingTier] | None) -> list[PricingTier] | None:
    if model not in (TIERED, VOLUME):
        if tiers:  # a forgotten `model` would otherwise price tiers as per_unit, silently
            raise invalid("tiers apply only to tiered and volume models", "tiers")
        return None
    if not tiers:
        raise invalid("tiers are required for tiered and volume models", "tiers")
    stored = []
    for i, t in enumerate(tiers):
        if t.upTo < 0 or t.price < 0 or t.flat < 0:
            raise invalid("tier values must be non-negative", "tiers")
        if t.upTo == 0 and i < len(tiers) - 1:
            raise invalid("only the last tier may have upTo 0", "tiers")
        decimal = _decimal_price(t.priceDecimal or "", "priceDecimal")
        stored.append(PricingTier(t.upTo, t.price, t.flat,
                                  UNSET if decimal is None else decimal))
    ceilings = [t.upTo for t in tiers if t.upTo > 0]
    if model == VOLUME and any(a >= b for a, b in zip(ceilings, ceilings[1:], strict=False)):
        raise invalid("volume tiers must have increasing upTo", "tiers")
    return stored


def _decimal_price(raw: str, field: str) -> str | None:
    """A decimal price as sent (cents, at most 12 places), None when absent."""
    if not raw:
        return None
    if not _DECIMAL.match(raw):
        raise invalid(f"invalid {field}", field)
    return raw


# ---- pricing a quantity (§9.2) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Band:
    up_to: int  # units; 0 = no end
    price: int  # 10⁻¹² cent per unit
    flat: int  # cents


@dataclass(frozen=True, slots=True)
class Price:
    """How a rule prices a quantity."""

    model: str
    unit_price: int  # 10⁻¹² cent per unit, or per package
    bands: tuple[Band, ...] = ()
    package_size: int = 0


def price_of(rule: PricingRule) -> Price:
    return Price(
        rule.model, _scaled(rule.unitPrice, rule.unitPriceDecimal),
        tuple(Band(t.upTo, _scaled(t.price, t.priceDecimal), t.flat) for t in rule.tiers or ()),
        rule.packageSize or 0)


def _scaled(cents: int, decimal: str | UnsetType) -> int:
    """A price in 10⁻¹² cent: the decimal one when the rule has it."""
    if not decimal:
        return cents * SCALE
    whole, _, fraction = decimal.partition(".")
    return int(whole) * SCALE + int(fraction.ljust(12, "0"))


def cost(price: Price, quantity: int) -> int:
    """Cents for `quantity` units. A negative quantity (a sum meter's corrections) costs
    what no usage does: usage never earns the customer money."""
    q = max(quantity, 0)
    if price.model == TIERED:
        exact = _graduated(price.bands, q)
    elif price.model == VOLUME:
        exact = _volume(price.bands, q)
    elif price.model == PACKAGE and price.package_size > 0:
        exact = -(-q // price.package_size) * price.unit_price  # every started package
    else:  # per_unit, and any model the reference stored that we no longer accept
        exact = q * price.unit_price
    return in_range((exact + SCALE // 2) // SCALE)


def _graduated(bands: Sequence[Band], q: int) -> int:
    """Each band in the order given takes up to `up_to` units (its width, not a ceiling:
    the reference's meaning, kept), with its flat fee; units past the last finite band are
    free; no units, no flat fee."""
    total, left = 0, q
    for band in bands:
        if left <= 0:
            break
        units = left if band.up_to == 0 or left <= band.up_to else band.up_to
        total += band.flat * SCALE + units * band.price
        left -= units
    return total


def _volume(bands: Sequence[Band], q: int) -> int:
    """The first band whose ceiling holds `q` (or the last one) prices every unit."""
    if not bands:
        return 0
    band = next((b for b in bands if b.up_to == 0 or q <= b.up_to), bands[-1])
    return band.flat * SCALE + q * band.price


def in_range(amount: int) -> int:
    """An amount as the API carries it (int64), never wrapped (§1.6, M14)."""
    if not INT64_MIN <= amount <= INT64_MAX:
        raise invalid("amount out of range")
    return amount


# ---- usage → lines (§9.3) ---------------------------------------------------------------


def choose(rules: Sequence[PricingRule], plan_id: str = "") -> PricingRule | None:
    """The rule that prices a meter, of its rules newest first: the plan's own, else one
    for no plan, else the newest (M15: the reference took whichever it stored last)."""
    if plan_id:
        for r in rules:
            if r.planId == plan_id:
                return r
    return next((r for r in rules if not r.planId), rules[0] if rules else None)


@dataclass(frozen=True, slots=True)
class PricedUsage:
    usage: MeterUsage
    rule: PricingRule | None  # None: the meter has no rule, the line costs nothing
    amount: int  # cents


def priced(usages: Iterable[MeterUsage], rules: Mapping[str, Sequence[PricingRule]],
           plan_id: str = "") -> list[PricedUsage]:
    """A line per meter with usage, in the order given; a line that neither counts a unit
    nor costs anything is left out."""
    lines = []
    for u in usages:
        rule = choose(rules.get(u.meterId, ()), plan_id)
        amount = cost(price_of(rule), u.quantity) if rule is not None else 0
        if amount > 0 or u.quantity > 0:
            lines.append(PricedUsage(u, rule, amount))
    return lines


def subtotal(lines: Iterable[PricedUsage]) -> int:
    return in_range(sum(line.amount for line in lines))


def due(subtotal: int, not_covered: int) -> tuple[int, int]:
    """(credit applied, amount due) when credits leave `not_covered` of the subtotal."""
    applied = max(subtotal - not_covered, 0) if subtotal > 0 else 0
    return applied, max(subtotal - applied, 0)


# ---- a preview's period (§4.4) ----------------------------------------------------------


def period_bound(raw: str, field: str) -> datetime | None:
    """RFC 3339, or a date alone meaning 00:00 UTC of that day (for either end, so a
    date-only end leaves that whole day out); empty = unbounded."""
    raw = raw.strip()
    if not raw:
        return None
    if _DATE.match(raw):
        try:
            return datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise invalid(f"invalid {field} format", field) from None
    ts = parse_rfc3339(raw)
    if ts is None:
        raise invalid(f"invalid {field} format", field)
    return ts


def period(start_raw: str, end_raw: str) -> tuple[datetime | None, datetime | None]:
    start = period_bound(start_raw, "periodStart")
    end = period_bound(end_raw, "periodEnd")
    if start is not None and end is not None and end < start:
        raise invalid("periodEnd is before periodStart", "periodEnd")
    return start, end
