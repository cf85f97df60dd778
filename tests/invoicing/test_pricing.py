"""Pricing without I/O (metering-invoicing.md §2.3, §9.2–§9.4, §11.4): what a rule may say,
what a quantity costs under each model (the spec's worked examples, then properties over
random rules), which rule prices a meter, which usage makes a line, a preview's period
bounds, and a full page of rules fitting in one bus message."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.common import INT64_MAX
from contracts.errors import Failure
from contracts.invoicing import (
    PricingRule,
    PricingRuleCreateParams,
    PricingRuleList,
    PricingTier,
)
from contracts.limits import PRICING_RULES_PAGE, TIERS
from contracts.metering import MeterUsage
from services.invoicing.pricing import domain
from tests.support import refused


def rule(model: str = "per_unit", unit_price: int = 0, tiers=None, *, plan: str = "",
         rule_id: str = "prr_1", decimal: str | None = None, package: int | None = None
         ) -> PricingRule:
    """A stored rule; `tiers` as (upTo, price, flat) or (upTo, price, flat, priceDecimal)."""
    extra = {}
    if decimal is not None:
        extra["unitPriceDecimal"] = decimal
    if package is not None:
        extra["packageSize"] = package
    return PricingRule(
        id=rule_id, meterId="mtr_1", planId=plan, model=model, currency="usd",
        unitPrice=unit_price, tiers=None if tiers is None else [PricingTier(*t) for t in tiers],
        createdAt="2026-12-01T00:00:00Z", **extra)


def cost(r: PricingRule, q: int) -> int:
    return domain.cost(domain.price_of(r), q)


# ---- the spec's examples (§9.2, §11.4 26–34) ------------------------------------------------

GRADUATED = [(100, 10, 0), (500, 5, 0), (0, 1, 100)]
VOLUME = [(100, 10, 0), (1000, 5, 0), (0, 1, 500)]


@pytest.mark.parametrize(("r", "q", "cents"), [
    *[(rule("per_unit", 2), q, c) for q, c in [(0, 0), (1, 2), (100, 200),
                                               (1_000_000, 2_000_000)]],  # 26
    *[(rule("tiered", tiers=GRADUATED), q, c) for q, c in [
        (0, 0), (50, 500), (100, 1000), (200, 1500), (600, 3500), (700, 3700),
        (1600, 4600)]],  # 27: `upTo` is a band's width, so 700 is 1000 + 2500 + 100 + 100
    *[(rule("tiered", tiers=[(10, 0, 500), (0, 2, 1000)]), q, c)
      for q, c in [(5, 500), (10, 500), (15, 1510)]],  # 28: each band entered charges its flat
    *[(rule("volume", tiers=VOLUME), q, c) for q, c in [
        (0, 0), (50, 500), (100, 1000), (200, 1000), (1500, 2000)]],  # 29
    (rule("tiered", tiers=[]), 100, 0), (rule("volume", tiers=[]), 100, 0),  # 30
    (rule("unknown", 3), 10, 30),  # 31: a model the reference stored prices per unit
    (rule("tiered", tiers=[(0, 7, 100)]), 50, 450),  # 32
    (rule("tiered", tiers=[(100, 10, 0), (100, 5, 0)]), 250, 1500),  # 33: 50 units free
    (rule("volume", tiers=[(100, 10, 0), (100, 5, 0)]), 250, 1250),  # 33: the last tier
    (rule(decimal="0.0015"), 1_234_567, 1852),  # 34: 1851.8505, rounded once, half up
    (rule(decimal="0.0015"), 333, 0),  # 34: 0.4995
    (rule(decimal="0.25"), 6, 2),  # §9.2: 1.5 → 2
    (rule(decimal="0.25", unit_price=9), 6, 2),  # the decimal price wins
    (rule("tiered", tiers=[(10, 0, 0, "0.5"), (0, 1, 0)]), 13, 8),  # 5 + 3, one rounding
])
def test_the_worked_examples(r, q, cents):
    assert cost(r, q) == cents


@pytest.mark.parametrize(("q", "cents"), [(0, 0), (1, 500), (100, 500), (101, 1000),
                                          (250, 1500), (-5, 0)])
def test_a_package_is_paid_for_every_started_block(q, cents):
    assert cost(rule("package", 500, package=100), q) == cents


def test_negative_usage_costs_what_no_usage_costs():
    # The reference let a negative sum go negative per unit (and through volume's price).
    assert cost(rule("per_unit", 2), -10) == 0
    assert cost(rule("tiered", tiers=GRADUATED), -10) == 0
    assert cost(rule("volume", tiers=[(100, 10, 500)]), -10) == 500  # as q = 0: the flat fee


def test_an_amount_past_int64_is_refused_not_wrapped():  # M14
    assert refused(cost, rule("per_unit", INT64_MAX), 2) == (400, "amount out of range")
    line = domain.PricedUsage(MeterUsage("m", "M", "usd", "sum", 1, 1), None, INT64_MAX)
    assert refused(domain.subtotal, [line, line]) == (400, "amount out of range")


# ---- properties over random rules --------------------------------------------------------

bands = st.lists(st.tuples(st.integers(1, 1000), st.integers(0, 1000), st.integers(0, 1000)),
                 min_size=1, max_size=6)
quantities = st.integers(0, 10_000)


@given(bands=bands, last=st.none() | st.tuples(st.integers(0, 1000), st.integers(0, 1000)),
       q=quantities)
def test_tiered_is_the_sum_of_its_bands(bands, last, q):
    """Band i covers the units between the widths before it and those plus its own; a band
    that covers any unit charges its flat fee once."""
    tiers = bands + ([(0, *last)] if last else [])
    expected, start = 0, 0
    for width, price, flat in tiers:
        units = max(q - start, 0) if width == 0 else min(max(q - start, 0), width)
        expected += (flat + units * price) if units > 0 else 0
        start += width
    assert cost(rule("tiered", tiers=tiers), q) == expected


@given(bands=bands, data=st.data())
def test_volume_prices_every_unit_in_the_one_band_holding_the_quantity(bands, data):
    ceilings = sorted({width for width, _, _ in bands})
    tiers = [(c, price, flat) for c, (_, price, flat) in zip(ceilings, bands, strict=False)]
    k = data.draw(st.integers(0, len(tiers) - 1))
    low = ceilings[k - 1] + 1 if k else 0
    q = data.draw(st.integers(low, ceilings[k]))
    _, price, flat = tiers[k]
    assert cost(rule("volume", tiers=tiers), q) == flat + q * price
    # Past the last ceiling, the last band prices it all.
    beyond = ceilings[-1] + data.draw(st.integers(1, 1000))
    assert cost(rule("volume", tiers=tiers), beyond) == tiers[-1][2] + beyond * tiers[-1][1]


@given(size=st.integers(1, 1000), price=st.integers(0, 10_000), q=quantities)
def test_a_package_rounds_the_quantity_up_to_whole_packages(size, price, q):
    packages = -(-q // size)
    assert cost(rule("package", price, package=size), q) == packages * price
    assert (packages - 1) * size < q <= packages * size or q == 0


@given(price=st.from_regex(r"\A\d{1,6}(\.\d{1,12})?\Z"), q=st.integers(0, 10**9))
def test_a_decimal_price_is_rounded_once_half_up(price, q):
    with localcontext() as exact:
        exact.prec = 60
        expected = (Decimal(price) * q).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    assert cost(rule(decimal=price), q) == int(expected)


decimals = st.from_regex(r"\A\d{1,3}(\.\d{1,12})?\Z")


@st.composite
def creatable(draw) -> PricingRuleCreateParams:
    """A rule of any model that creation accepts."""
    model = draw(st.sampled_from(sorted(domain.MODELS)))
    tiers = None
    if model in (domain.TIERED, domain.VOLUME):
        ups = draw(st.lists(st.integers(1, 10**6), min_size=1, max_size=TIERS,
                            unique=model == domain.VOLUME))
        ups = sorted(ups) if model == domain.VOLUME else ups
        if draw(st.booleans()):
            ups[-1] = 0  # the last tier may be open-ended
        tiers = [PricingTier(up, draw(st.integers(0, 10**4)), draw(st.integers(0, 10**6)),
                             draw(st.just(msgspec.UNSET) | decimals)) for up in ups]
    return PricingRuleCreateParams(
        meterId="mtr_1", model=model, unitPrice=draw(st.integers(0, 10**6)),
        unitPriceDecimal=draw(st.just("") | decimals), tiers=tiers,
        packageSize=draw(st.integers(1, 1000)) if model == domain.PACKAGE else 0)


@given(p=creatable(), q=st.integers(-(2**63), 2**63 - 1))
def test_no_rule_that_can_be_created_costs_less_than_nothing(p, q):
    new = domain.new_rule(p)
    stored = PricingRule("prr_1", new.meter_id, new.plan_id, new.model, new.currency,
                         new.unit_price, new.tiers, "", unitPriceDecimal=(
                             new.unit_price_decimal or msgspec.UNSET),
                         packageSize=new.package_size or msgspec.UNSET)
    try:
        assert cost(stored, q) >= 0
    except Failure as e:  # a cost past int64 is refused, never wrapped
        assert e.error.message == "amount out of range"


# ---- creating a rule (§2.3, §4.1, §11.5) ---------------------------------------------------


def test_defaults():  # 35
    new = domain.new_rule(PricingRuleCreateParams(meterId=" mtr_1 ", model="TIERED",
                                                  currency=" EUR ", tiers=[PricingTier()]))
    assert (new.meter_id, new.model, new.currency, new.plan_id) == ("mtr_1", "tiered", "eur", "")
    new = domain.new_rule(PricingRuleCreateParams(meterId="mtr_1"))
    assert (new.model, new.currency, new.unit_price, new.tiers, new.package_size) == (
        "per_unit", "usd", 0, None, None)


T = PricingTier


@pytest.mark.parametrize(("params", "message"), [
    ({"meterId": ""}, "meterId is required"),  # 36
    ({"meterId": "  "}, "meterId is required"),
    ({"model": "graduated"}, "invalid model"),  # 39
    ({"model": "tiered"}, "tiers are required for tiered and volume models"),  # 39
    ({"model": "volume", "tiers": []}, "tiers are required for tiered and volume models"),
    ({"tiers": [T(10, 1)]}, "tiers apply only to tiered and volume models"),
    ({"model": "tiered", "tiers": [T(10, -1)]}, "tier values must be non-negative"),
    ({"model": "tiered", "tiers": [T(-1, 1)]}, "tier values must be non-negative"),
    ({"model": "volume", "tiers": [T(10, 1, -5)]}, "tier values must be non-negative"),
    ({"model": "tiered", "tiers": [T(0, 1), T(10, 1)]}, "only the last tier may have upTo 0"),
    ({"model": "volume", "tiers": [T(100, 2), T(100, 1)]},
     "volume tiers must have increasing upTo"),
    ({"model": "volume", "tiers": [T(100, 2), T(50, 1), T(0, 1)]},
     "volume tiers must have increasing upTo"),
    ({"model": "tiered", "tiers": [T(10, 1, 0, "-1")]}, "invalid priceDecimal"),
    ({"unitPriceDecimal": "1e-3"}, "invalid unitPriceDecimal"),
    ({"unitPriceDecimal": "0.0000000000001"}, "invalid unitPriceDecimal"),  # 13 places
    ({"unitPrice": -1}, "unitPrice must be non-negative"),
    ({"model": "package"}, "packageSize must be positive for the package model"),
    ({"model": "package", "packageSize": -3},
     "packageSize must be positive for the package model"),
    ({"packageSize": 10}, "packageSize applies only to the package model"),
    ({"currency": "€"}, "invalid currency"),
])
def test_what_a_rule_may_not_say(params, message):
    p = PricingRuleCreateParams(**{"meterId": "mtr_1", **params})
    assert refused(domain.new_rule, p) == (400, message)


def test_graduated_tiers_need_not_increase():
    # Widths, not ceilings: a narrower band after a wider one is fine.
    assert domain.new_rule(PricingRuleCreateParams(
        meterId="m", model="tiered", tiers=[T(100, 2), T(50, 1), T(0, 1)])).tiers is not None


# ---- which rule, which lines (§9.3) --------------------------------------------------------


def test_the_plans_rule_then_one_for_no_plan_then_the_newest():  # M15
    newest_pro = rule(plan="pro", rule_id="r3")
    no_plan = rule(rule_id="r2")
    older_pro = rule(plan="pro", rule_id="r1")
    rules = [newest_pro, no_plan, older_pro]  # newest first
    assert domain.choose(rules, "pro") is newest_pro
    assert domain.choose(rules, "team") is no_plan
    assert domain.choose(rules) is no_plan
    assert domain.choose([newest_pro, older_pro]) is newest_pro
    assert domain.choose([]) is None


def usage(meter: str, q: int) -> MeterUsage:
    return MeterUsage(meter, f"Meter {meter}", "usd", "sum", q, 1)


def test_lines_for_usage_or_cost_only():
    rules = {"a": [rule("per_unit", 2)], "v": [rule("volume", tiers=[(0, 1, 300)])]}
    lines = domain.priced([usage("a", 1200), usage("b", 40), usage("c", 0), usage("a2", -3),
                           usage("v", 0)], rules)
    # 41: a meter without a rule still shows its units, at no cost; nothing, and nothing
    # costing, is left out; a volume flat fee shows with no units.
    assert [(line.usage.meterId, line.amount, line.rule is not None) for line in lines] == [
        ("a", 2400, True), ("b", 0, False), ("v", 300, True)]
    assert domain.subtotal(lines) == 2700


def test_what_credits_leave_due():
    assert domain.due(2400, 1400) == (1000, 1400)  # 40
    assert domain.due(2400, 0) == (2400, 0)
    assert domain.due(0, 0) == (0, 0)


# ---- a preview's period (§4.4) -------------------------------------------------------------


def test_period_bounds():
    assert domain.period_bound("2025-01-31", "periodEnd") == datetime(2025, 1, 31, tzinfo=UTC)
    assert domain.period_bound("2025-01-15T10:00:00+02:00", "periodStart") == datetime(
        2025, 1, 15, 8, tzinfo=UTC)
    assert domain.period_bound("", "periodStart") is None
    for bad in ("01/02/2025", "2025-02-30", "2025-01-15T10:00:00", "yesterday"):  # 42
        assert refused(domain.period_bound, bad, "periodStart") == (
            400, "invalid periodStart format")
    assert refused(domain.period, "2025-02-01", "2025-01-01") == (
        400, "periodEnd is before periodStart")


# ---- a page of rules fits a bus message ----------------------------------------------------


def test_a_full_page_of_rules_at_every_limit_fits_in_one_bus_message():
    w, big = "\x01", 2**63 - 1  # a control character is 6 bytes in JSON
    tier = PricingTier(big, big, big, "9" * 18 + "." + "9" * 12)
    row = PricingRule("prr_" + "x" * 22, w * 255, w * 255, "per_unit", "abcdefghij", big,
                      [tier] * TIERS, "2026-12-06T21:00:00.123456Z",
                      "2026-12-06T21:00:00.123456Z", "9" * 18 + "." + "9" * 12, big)
    n = PRICING_RULES_PAGE.maximum
    size = len(msgspec.json.encode({"result": PricingRuleList([row] * n, n), "status": 200}))
    assert size < 1024 * 1024 * 0.9
