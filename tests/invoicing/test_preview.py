"""Pricing rules, the invoice preview and the upcoming invoice through the gateway, with real
meter events and credit grants (metering-invoicing.md §4, §11.5–§11.6): each model priced
from recorded usage, credits shown and never consumed, date-only bounds, the rule a meter is
priced by, refusals that store nothing, idempotent creation, and organizations and modes
apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support import (
    API,
    ev,
    get,
    make_meter,
    new_user,
    post,
    record,
    request,
    service_down,
    zulu,
)

# Meter events may be up to 35 days old: the previewed "month" is ten days, 20 days ago.
START = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=20)
END = START + timedelta(days=10)
UNSET_TIME = "0001-01-01T00:00:00Z"
SCOPE_REFUSED = "Token doesn't support this scope"


def day(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d")


def at(ts: datetime) -> str:
    return zulu(ts)


async def use(http, org, meter_id: str, user: str, *values: int, when: datetime | None = None,
              key: str = "sk_test") -> None:
    """Record `values` for `user` on the meter, an hour apart from `when` (default: the
    second day of the period)."""
    when = when or START + timedelta(days=1)
    status, body, _ = await record(http, org, [
        ev(meter_id, v, user, timestamp=at(when + timedelta(hours=i)))
        for i, v in enumerate(values)], key=key)
    assert status == 201, body


async def make_rule(http, org, key: str = "sk_test", **body) -> dict:
    status, created, _ = await post(http, "/pricing-rules", body, org.auth(key))
    assert status == 201, created
    return created


async def preview(http, org, key: str = "sk_test", **body) -> dict:
    status, answer, _ = await post(http, "/invoice-preview", body, org.auth(key))
    assert status == 200, answer
    return answer


async def upcoming(http, org, user: str, key: str = "sk_test") -> dict:
    status, answer, _ = await get(http, "/invoices/upcoming", org.auth(key), userId=user)
    assert status == 200, answer
    return answer


async def grant(http, org, user: str, cents: int, currency: str = "usd") -> str:
    status, created, _ = await post(http, "/credit-grants", {
        "userId": user, "name": "Promo", "amountCents": cents, "currency": currency},
        org.auth())
    assert status == 201, created
    return created["id"]


async def remaining(http, org, user: str) -> list[int]:
    status, listed, _ = await get(http, "/credit-grants", org.auth(), userId=user)
    assert status == 200, listed
    return [g["remainingCents"] for g in listed["grants"]]


async def rules(http, org, key: str = "sk_test", **query) -> dict:
    status, listed, _ = await get(http, "/pricing-rules", org.auth(key), **query)
    assert status == 200, listed
    return listed


def refusal(reply) -> tuple[int, str]:
    status, body, _ = reply
    assert body["error"]["type"] == "api-error" and body["error"]["requestId"], body
    return status, body["error"]["message"]


# ---- preview (§11.6 40–43) ------------------------------------------------------------------


async def test_a_months_usage_priced_with_credits_shown_and_never_consumed(http, org):  # 40
    user = new_user()
    meter = await make_meter(http, org, "api_calls", name="API Calls")
    await make_rule(http, org, meterId=meter, unitPrice=2)
    await use(http, org, meter, user, 500, 400, 300)
    await use(http, org, meter, user, 999, when=END + timedelta(days=2))  # after the period
    await use(http, org, meter, new_user(), 77)  # someone else's
    await grant(http, org, user, 1000)
    period = {"userId": user, "periodStart": day(START), "periodEnd": day(END)}
    first = await preview(http, org, **period)
    assert first == {
        "userId": user, "periodStart": day(START), "periodEnd": day(END),
        "lineItems": [{"meterId": meter, "meterName": "API Calls", "quantity": 1200,
                       "unitCost": 2, "totalCost": 2400, "model": "per_unit"}],
        "subtotal": 2400, "creditApplied": 1000, "amountDue": 1400, "currency": "usd"}
    # Previewing again finds the same credit: nothing was burnt (M1).
    assert await preview(http, org, **period) == first
    assert await remaining(http, org, user) == [1000]
    # Without bounds: everything so far.
    whole = await preview(http, org, userId=user)
    assert (whole["lineItems"][0]["quantity"], whole["subtotal"], whole["amountDue"]) == (
        2199, 4398, 3398)
    assert (whole["periodStart"], whole["periodEnd"]) == ("", "")


async def test_a_meter_without_a_rule_shows_its_units_at_no_cost(http, org):  # 41
    user = new_user()
    priced = await make_meter(http, org, "priced")
    unpriced = await make_meter(http, org, "unpriced")
    await make_rule(http, org, meterId=priced, unitPrice=3)
    await use(http, org, priced, user, 10)
    await use(http, org, unpriced, user, *[1] * 40)
    answer = await preview(http, org, userId=user)
    assert answer["lineItems"] == [
        {"meterId": priced, "meterName": "Priced", "quantity": 10, "unitCost": 3,
         "totalCost": 30, "model": "per_unit"},
        {"meterId": unpriced, "meterName": "Unpriced", "quantity": 40, "unitCost": 0,
         "totalCost": 0, "model": ""}]
    assert (answer["subtotal"], answer["creditApplied"], answer["amountDue"]) == (30, 0, 30)


async def test_a_date_alone_means_midnight_utc_at_both_ends(http, org):  # 43
    user = new_user()
    meter = await make_meter(http, org)
    await make_rule(http, org, meterId=meter, unitPrice=1)
    await use(http, org, meter, user, 1, when=START - timedelta(seconds=1))  # before
    await use(http, org, meter, user, 2, when=START)  # at the start: in
    await use(http, org, meter, user, 4, when=END - timedelta(hours=1))
    await use(http, org, meter, user, 8, when=END)  # exactly midnight of the end date: in
    await use(http, org, meter, user, 16, when=END + timedelta(hours=12))  # that day: out
    dates = await preview(http, org, userId=user, periodStart=day(START), periodEnd=day(END))
    assert dates["subtotal"] == 2 + 4 + 8
    times = await preview(http, org, userId=user, periodStart=at(START + timedelta(hours=1)),
                          periodEnd=at(END + timedelta(hours=12)))
    assert times["subtotal"] == 4 + 8 + 16  # an instant is inclusive
    offset = await preview(http, org, userId=user,
                           periodEnd=(END + timedelta(hours=12)).astimezone().isoformat())
    assert offset["subtotal"] == 1 + 2 + 4 + 8 + 16


async def test_every_model_priced_from_recorded_usage(http, org):
    user = new_user()
    meters = {name: await make_meter(http, org, name) for name in (
        "graduated", "volume_tokens", "seats_blocks", "decimal_calls", "maximum", "counted")}
    await make_rule(http, org, meterId=meters["graduated"], model="tiered", tiers=[
        {"upTo": 100, "price": 10}, {"upTo": 500, "price": 5}, {"upTo": 0, "price": 1,
                                                                 "flat": 100}])
    await make_rule(http, org, meterId=meters["volume_tokens"], model="volume", tiers=[
        {"upTo": 100, "price": 10}, {"upTo": 1000, "price": 5}, {"price": 1, "flat": 500}])
    package = await make_rule(http, org, meterId=meters["seats_blocks"], model="package",
                              unitPrice=500, packageSize=100)
    decimal = await make_rule(http, org, meterId=meters["decimal_calls"],
                              unitPriceDecimal="0.0015")
    await use(http, org, meters["graduated"], user, 300, 400)  # 700 → 3700 (band widths)
    await use(http, org, meters["volume_tokens"], user, 150, 50)  # 200 → 1000
    await use(http, org, meters["seats_blocks"], user, 101)  # two blocks started → 1000
    await use(http, org, meters["decimal_calls"], user, 1_234_567)  # 1851.8505 → 1852
    answer = await preview(http, org, userId=user)
    assert [(line["meterId"], line["quantity"], line["totalCost"], line["model"],
             line["unitCost"]) for line in answer["lineItems"]] == [
        (meters["graduated"], 700, 3700, "tiered", 0),
        (meters["volume_tokens"], 200, 1000, "volume", 0),
        (meters["seats_blocks"], 101, 1000, "package", 500),
        (meters["decimal_calls"], 1_234_567, 1852, "per_unit", 0)]
    assert answer["subtotal"] == 3700 + 1000 + 1000 + 1852
    assert (package["packageSize"], package["tiers"]) == (100, None)
    assert (decimal["unitPriceDecimal"], decimal["unitPrice"]) == ("0.0015", 0)


async def test_meters_aggregate_as_they_say(http, org):
    user = new_user()
    peak = await make_meter(http, org, "peak", aggregation="max")
    calls = await make_meter(http, org, "calls", aggregation="count")
    for meter in (peak, calls):
        await make_rule(http, org, meterId=meter, unitPrice=10)
        await use(http, org, meter, user, 3, 9, 4)
    answer = await preview(http, org, userId=user)
    assert [(line["quantity"], line["totalCost"]) for line in answer["lineItems"]] == [
        (9, 90), (3, 30)]


async def test_credits_in_another_currency_do_not_pay_a_usd_preview(http, org):  # M4
    user = new_user()
    meter = await make_meter(http, org)
    await make_rule(http, org, meterId=meter, unitPrice=5)
    await use(http, org, meter, user, 100)
    await grant(http, org, user, 300, "eur")
    await grant(http, org, user, 200)
    answer = await preview(http, org, userId=user)
    assert (answer["subtotal"], answer["creditApplied"], answer["amountDue"]) == (500, 200, 300)
    await grant(http, org, user, 1000)
    answer = await preview(http, org, userId=user)
    assert (answer["creditApplied"], answer["amountDue"]) == (500, 0)  # never below zero
    assert sorted(await remaining(http, org, user)) == [200, 300, 1000]


async def test_a_preview_while_the_ledger_is_down_shows_no_credits(http, org, platform):
    user = new_user()
    meter = await make_meter(http, org)
    await make_rule(http, org, meterId=meter, unitPrice=5)
    await use(http, org, meter, user, 100)
    await grant(http, org, user, 200)
    async with service_down(platform, "ledger"):
        answer = await preview(http, org, userId=user)
    assert (answer["subtotal"], answer["creditApplied"], answer["amountDue"]) == (500, 0, 500)


async def test_the_api_usage_meter_is_never_invoiced(http, org):  # Q4, M16
    user = new_user()
    prepaid = await make_meter(http, org, "api-usage", name="API usage")
    await use(http, org, prepaid, user, 1234)
    status, body, _ = await post(http, "/pricing-rules", {"meterId": prepaid, "unitPrice": 1},
                                 org.auth())
    assert (status, body["error"]["message"]) == (400, "the api-usage meter is never invoiced")
    assert (await preview(http, org, userId=user))["lineItems"] == []
    assert (await upcoming(http, org, user))["lineItems"] == []


# ---- upcoming (§11.6 44–46) -----------------------------------------------------------------


async def test_the_upcoming_invoice_is_all_usage_so_far_as_invoice_lines(http, org):  # 45
    user = new_user()
    meter = await make_meter(http, org, "api_calls", name="API Calls")
    await make_rule(http, org, meterId=meter, unitPrice=2)
    await use(http, org, meter, user, 500, when=START - timedelta(days=5))
    await use(http, org, meter, user, 700)
    await grant(http, org, user, 1000)
    answer = await upcoming(http, org, user)
    assert answer == {
        "userId": user,
        "lineItems": [{"id": f"li_usage_{meter}", "type": "usage",
                       "description": "API Calls usage", "meterId": meter, "quantity": 1200,
                       "unitPrice": 2, "amount": 2400, "currency": "usd",
                       "periodStart": UNSET_TIME, "periodEnd": UNSET_TIME}],
        "subtotal": 2400, "creditApplied": 1000, "amountDue": 1400, "currency": "usd"}
    assert await upcoming(http, org, user) == answer
    assert await remaining(http, org, user) == [1000]


async def test_a_customer_without_usage_owes_nothing(http, org):  # 46
    user = new_user()
    await grant(http, org, user, 1000)
    assert await upcoming(http, org, user) == {
        "userId": user, "lineItems": [], "subtotal": 0, "creditApplied": 0, "amountDue": 0,
        "currency": "usd"}
    answer = await preview(http, org, userId=user, periodStart=day(START))
    assert (answer["lineItems"], answer["subtotal"], answer["amountDue"]) == ([], 0, 0)


async def test_a_line_without_units_is_shown_when_it_costs(http, org):
    # A volume rule's flat fee applies to a quantity of zero (§9.2): the line has no units.
    user = new_user()
    meter = await make_meter(http, org)
    await make_rule(http, org, meterId=meter, model="volume", tiers=[{"upTo": 0, "flat": 250}])
    await use(http, org, meter, user, 0)
    line, = (await upcoming(http, org, user))["lineItems"]
    assert "quantity" not in line and line["amount"] == 250


async def test_user_ids_are_canonical(http, org):
    user = new_user()
    meter = await make_meter(http, org)
    await make_rule(http, org, meterId=meter, unitPrice=1)
    await use(http, org, meter, user, 7)
    assert (await preview(http, org, userId=f"  {user.upper()} "))["subtotal"] == 7
    assert (await upcoming(http, org, user.upper()))["userId"] == user


# ---- pricing rules (§11.5 35–39) ------------------------------------------------------------


async def test_rules_are_created_listed_and_deleted(http, org):
    meter, other = await make_meter(http, org, "m_one"), await make_meter(http, org, "m_two")
    created = await make_rule(http, org, meterId=meter)  # 35
    assert set(created) == {"id", "meterId", "planId", "model", "currency", "unitPrice",
                            "tiers", "createdAt"}
    assert (created["meterId"], created["planId"], created["model"], created["currency"],
            created["unitPrice"], created["tiers"]) == (meter, "", "per_unit", "usd", 0, None)
    assert created["id"].startswith("prr_") and created["createdAt"].endswith("Z")
    tiered = await make_rule(http, org, meterId=meter, planId="pro", model="Tiered",
                             currency="EUR", tiers=[{"upTo": 10, "price": 3,
                                                     "priceDecimal": "2.5"}, {"price": 1}])
    assert (tiered["model"], tiered["currency"], tiered["tiers"]) == ("tiered", "eur", [
        {"upTo": 10, "price": 3, "flat": 0, "priceDecimal": "2.5"},
        {"upTo": 0, "price": 1, "flat": 0}])
    elsewhere = await make_rule(http, org, meterId=other, planId="pro", unitPrice=4)
    listed = await rules(http, org, meterId=meter)  # 37
    assert [r["id"] for r in listed["rules"]] == [created["id"], tiered["id"]]
    assert listed["count"] == 2
    assert listed["rules"][0] == {**created, "updatedAt": listed["rules"][0]["updatedAt"]}
    assert [r["id"] for r in (await rules(http, org, planId=" pro "))["rules"]] == [
        tiered["id"], elsewhere["id"]]
    assert [r["id"] for r in (await rules(http, org, meterId=other, planId="pro"))[
        "rules"]] == [elsewhere["id"]]
    status, body, _ = await request(http, "DELETE", f"{API}/pricing-rules/{created['id']}",
                                    org.auth())
    assert (status, body) == (200, {"id": created["id"], "deleted": True})  # 38
    status, body, _ = await request(http, "DELETE", f"{API}/pricing-rules/{created['id']}",
                                    org.auth())
    assert (status, body["error"]["message"]) == (404, "pricing rule not found")
    assert [r["id"] for r in (await rules(http, org))["rules"]] == [tiered["id"],
                                                                    elsewhere["id"]]


async def test_rules_are_paged(http, org):
    meter = await make_meter(http, org)
    for i in range(5):
        await make_rule(http, org, meterId=meter, unitPrice=i)
    status, page, headers = await get(http, "/pricing-rules", org.auth(), limit="2",
                                      offset="1")
    assert status == 200 and [r["unitPrice"] for r in page["rules"]] == [1, 2]
    assert (page["count"], headers["X-Total-Count"], headers["X-Has-More"]) == (2, "5", "true")


async def test_the_newest_rule_for_no_plan_prices_a_meter(http, org):  # M15
    user = new_user()
    meter = await make_meter(http, org)
    await use(http, org, meter, user, 10)
    await make_rule(http, org, meterId=meter, unitPrice=1)
    newest = await make_rule(http, org, meterId=meter, unitPrice=2)
    await make_rule(http, org, meterId=meter, unitPrice=50, planId="enterprise")
    assert (await preview(http, org, userId=user))["subtotal"] == 20
    await request(http, "DELETE", f"{API}/pricing-rules/{newest['id']}", org.auth())
    assert (await preview(http, org, userId=user))["subtotal"] == 10


async def test_a_rule_is_created_once_per_idempotency_key(http, org):
    meter = await make_meter(http, org)
    headers = {**org.auth(), "Idempotency-Key": "rule-1"}
    status, first, _ = await post(http, "/pricing-rules", {"meterId": meter}, headers)
    assert status == 201
    status, again, replay = await post(http, "/pricing-rules", {"meterId": meter}, headers)
    assert (status, again, replay.get("Idempotent-Replayed")) == (201, first, "true")
    status, _, _ = await post(http, "/pricing-rules", {"meterId": meter, "unitPrice": 9},
                              headers)
    assert status == 422
    assert (await rules(http, org))["count"] == 1


# ---- refusals (§4.1–§4.5, §11.5 36, 39, §11.6 42, 44): a 4xx envelope, nothing stored ----


@pytest.mark.parametrize(("body", "message"), [
    ({}, "meterId is required"),  # 36
    ({"meterId": "M", "unitPrice": 0.5}, "invalid request body"),  # 36
    ({"meterId": "M", "unitPrice": "2"}, "invalid request body"),
    ({"meterId": "M", "model": "graduated"}, "invalid model"),  # 39
    ({"meterId": "M", "model": "tiered"}, "tiers are required for tiered and volume models"),
    ({"meterId": "M", "model": "volume", "tiers": [{"upTo": 10, "price": -1}]},
     "tier values must be non-negative"),
    ({"meterId": "M", "model": "volume", "tiers": [{"upTo": 10}, {"upTo": 5}]},
     "volume tiers must have increasing upTo"),
    ({"meterId": "M", "model": "tiered", "tiers": [{"upTo": 0}, {"upTo": 5}]},
     "only the last tier may have upTo 0"),
    ({"meterId": "M", "model": "tiered", "tiers": [{}] * 26}, "tiers: at most 25 items"),
    ({"meterId": "M", "model": "package"}, "packageSize must be positive for the package model"),
    ({"meterId": "M", "unitPriceDecimal": "0,5"}, "invalid unitPriceDecimal"),
    ({"meterId": "M", "currency": "US Dollar"}, "invalid currency"),
    ({"meterId": "mtr_nope"}, "meter not found"),
    ({"meterId": "OTHER"}, "meter not found"),  # another organization's
    ({"meterId": "LIVE"}, "meter not found"),  # the live mode's
])
async def test_a_bad_rule_is_refused_and_nothing_is_stored(http, org, make_org, body, message):
    meter = await make_meter(http, org)
    other_org = await make_org()
    stand_ins = {"M": meter, "OTHER": await make_meter(http, other_org),
                 "LIVE": await make_meter(http, org, "live_calls", key="sk_live")}
    if "meterId" in body:
        body = {**body, "meterId": stand_ins.get(body["meterId"], body["meterId"])}
    reply = await post(http, "/pricing-rules", body, org.auth())
    assert refusal(reply) == (400, message)
    assert (await rules(http, org))["count"] == 0


async def test_a_bad_preview_or_upcoming_is_refused(http, org):
    user = new_user()
    raw = {**org.auth(), "Content-Type": "application/json"}
    cases = [
        (await post(http, "/invoice-preview", {}, org.auth()), "userId is required"),  # 42
        (await post(http, "/invoice-preview", {"userId": user, "periodStart": "01/02/2025"},
                    org.auth()), "invalid periodStart format"),  # 42
        (await post(http, "/invoice-preview", {"userId": user, "periodEnd": "2025-02-30"},
                    org.auth()), "invalid periodEnd format"),
        (await post(http, "/invoice-preview", {"userId": user, "periodStart": "2025-02-01",
                                               "periodEnd": "2025-01-01"}, org.auth()),
         "periodEnd is before periodStart"),
        (await post(http, "/invoice-preview", None, raw, raw=b"not json"),
         "invalid request body"),
        (await post(http, "/invoice-preview", {"userId": 5}, org.auth()),
         "invalid request body"),
        (await get(http, "/invoices/upcoming", org.auth()),
         "userId query parameter is required"),  # 44
        (await get(http, "/invoices/upcoming", org.auth(), userId="  "),
         "userId query parameter is required"),
    ]
    assert [refusal(reply) for reply, _ in cases] == [(400, message) for _, message in cases]
    status, body, _ = await request(http, "DELETE", f"{API}/pricing-rules/prr_nope",
                                    org.auth())
    assert (status, body["error"]["message"]) == (404, "pricing rule not found")


async def test_only_an_organizations_admins_reach_pricing(http, org):
    meter = await make_meter(http, org)
    created = await make_rule(http, org, meterId=meter)
    user = new_user()
    calls = [
        ("POST", "/pricing-rules", {"meterId": meter}),
        ("GET", "/pricing-rules", None),
        ("DELETE", f"/pricing-rules/{created['id']}", None),
        ("POST", "/invoice-preview", {"userId": user}),
        ("GET", f"/invoices/upcoming?userId={user}", None),
    ]
    for method, path, body in calls:
        reply = await request(http, method, API + path, org.auth("pk_test"), body)
        assert refusal(reply) == (403, SCOPE_REFUSED), path
        status, _, _ = await request(http, method, API + path, None, body)
        assert status == 401, path
    assert (await rules(http, org))["count"] == 1


# ---- organizations and modes apart ----------------------------------------------------------


async def test_another_organizations_rules_and_usage_are_invisible(http, org, make_org):
    user = new_user()
    meter = await make_meter(http, org)
    created = await make_rule(http, org, meterId=meter, unitPrice=3)
    await use(http, org, meter, user, 10)
    other = await make_org()
    assert (await rules(http, other))["count"] == 0
    status, body, _ = await request(http, "DELETE", f"{API}/pricing-rules/{created['id']}",
                                    other.auth())
    assert (status, body["error"]["message"]) == (404, "pricing rule not found")
    assert (await preview(http, other, userId=user))["lineItems"] == []
    # The other organization's own meter and rule price only its own usage.
    theirs = await make_meter(http, other)
    await make_rule(http, other, meterId=theirs, unitPrice=100)
    await use(http, other, theirs, user, 1)
    assert (await preview(http, other, userId=user))["subtotal"] == 100
    assert (await preview(http, org, userId=user))["subtotal"] == 30
    assert (await rules(http, org))["count"] == 1


async def test_test_mode_rules_and_usage_are_invisible_in_live_mode(http, org):
    user = new_user()
    meter = await make_meter(http, org)
    created = await make_rule(http, org, meterId=meter, unitPrice=3)
    await use(http, org, meter, user, 10)
    assert (await rules(http, org, key="sk_live"))["count"] == 0
    status, _, _ = await request(http, "DELETE", f"{API}/pricing-rules/{created['id']}",
                                 org.auth("sk_live"))
    assert status == 404
    assert (await preview(http, org, key="sk_live", userId=user))["lineItems"] == []
    assert (await upcoming(http, org, user, key="sk_live"))["subtotal"] == 0
    assert (await preview(http, org, userId=user))["subtotal"] == 30
