"""DNS usage and plans through the gateway (ledger.md §3.22–§3.24, §6.4, §8 J)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from contracts.catalog import load_catalog
from services.metering import domain
from tests import support
from tests.support import zulu

DNS = "/api/v1/dns"
post = partial(support.post, prefix=DNS)
get = partial(support.get, prefix=DNS)  # the DNS routes have their own prefix


async def usage(http, org, zone, queries, user="hanzo/alice", key="sk_test", **extra):
    return await post(http, "/usage", {"zone": zone, "user": user, "queries": queries, **extra},
                      org.auth(key))


# ---- J.1–J.4: the plans ----------------------------------------------------------------


async def test_dns_plans_from_the_catalog_publicly_cacheable(http, org):
    status, plans, headers = await get(http, "/plans", org.auth("pk_test"))
    assert status == 200
    assert [p["slug"] for p in plans] == ["dns-free", "dns-pro", "dns-enterprise"]
    free, pro, enterprise = plans
    for plan in plans:
        assert plan["category"] == "dns" and plan["currency"] == "usd"
        assert plan["name"] and plan["features"]
        assert (plan["interval"], plan["intervalCount"], plan["trialPeriodDays"]) == (
            "monthly", 1, 0)
    assert list(free) == ["slug", "name", "description", "category", "price", "priceAnnual",
                          "currency", "interval", "intervalCount", "trialPeriodDays",
                          "features", "limits"]
    assert (free["price"], free["priceAnnual"]) == (0, 0) and "popular" not in free
    assert (pro["price"], pro["priceAnnual"], pro["popular"]) == (500, 400, True)
    assert enterprise["price"] == 2500
    assert free["limits"] == {"zones": 2, "recordsPerZone": 50, "queriesPerDay": 10000}
    assert pro["limits"] == {"zones": 25, "recordsPerZone": 500, "queriesPerDay": 1000000}
    assert enterprise["limits"] == {"zones": -1, "recordsPerZone": -1, "queriesPerDay": -1}
    assert headers["Cache-Control"] == ("public, max-age=1800, s-maxage=3600, "
                                        "stale-while-revalidate=60")
    assert headers["CDN-Cache-Control"] == "max-age=3600"
    assert headers["Cache-Tag"] == "dns-plans" and headers["Vary"] == "Accept-Encoding"


async def test_dns_plans_still_need_a_credential(http):
    async with http.get(DNS + "/plans") as r:
        assert r.status == 401
        assert r.headers["Cache-Control"] == "private, no-store"


def test_catalog_lookup_and_daily_limits():
    # J.4 and §6.4: each DNS plan's daily limit, and the fallback to dns-free.
    catalog = load_catalog()
    assert catalog.get("dns-pro") is not None and catalog.get("nonexistent-plan") is None
    assert domain.daily_limit(domain.dns_plan(catalog, None)) == 10_000
    assert domain.daily_limit(domain.dns_plan(catalog, "dns-pro")) == 1_000_000
    assert domain.daily_limit(domain.dns_plan(catalog, "dns-enterprise")) == -1
    assert domain.dns_plan(catalog, "pro").slug == "dns-free"  # not a DNS plan
    # §6.4 example 3 on dns-pro: a full day, then one more query is refused.
    assert not domain.over_limit(1_000_000, 0, 1_000_000)
    assert domain.remaining(1_000_000, 1_000_000) == 0
    assert domain.limit_exceeded(1_000_000, 1_000_000, 1).error.message == (
        "daily DNS query limit exceeded: 1000001/1000000")
    assert domain.remaining(-1, 123) == -1 and not domain.over_limit(-1, 10**12, 1)


# ---- J.5–J.7 and §6.4 examples 1, 2, 4 ---------------------------------------------------


@pytest.mark.parametrize("body, message", [
    ({"user": "hanzo/alice", "queries": 1}, "zone is required"),
    ({"zone": "a.com", "queries": 1}, "user is required"),
])
async def test_dns_usage_refusals(http, org, body, message):
    status, reply, _ = await post(http, "/usage", body, org.auth())
    assert (status, reply["error"]["message"]) == (400, message)


async def test_zero_queries_record_nothing(http, org):
    status, body, _ = await usage(http, org, "a.com", 0)
    assert (status, body) == (200, {"recorded": True, "remaining": -1, "limit": -1})
    status, summary, _ = await get(http, "/usage/summary", org.auth(), user="hanzo/alice")
    assert summary["queries"] == 0


async def test_daily_limit_of_the_free_plan(http, org):
    status, body, _ = await usage(http, org, "a.com", 9500)
    assert (status, body) == (201, {"recorded": True, "remaining": 500, "limit": 10000})
    status, body, _ = await usage(http, org, "a.com", 600)
    assert (status, body["error"]["message"]) == (
        429, "daily DNS query limit exceeded: 10100/10000")
    status, body, _ = await usage(http, org, "b.com", 500)
    assert (status, body) == (201, {"recorded": True, "remaining": 0, "limit": 10000})
    # The meter the usage is stored under exists now.
    async with http.get("/api/v1/billing/meters", headers=org.auth()) as r:
        meters = (await r.json())["meters"]
    assert [(m["name"], m["eventName"], m["aggregationType"], m["dimensions"])
            for m in meters] == [("DNS Queries", "dns-queries", "sum", ["zone", "errors"])]
    # J.7
    status, summary, _ = await get(http, "/usage/summary", org.auth(), user=" HANZO/alice ")
    assert status == 200
    assert summary == {"user": "hanzo/alice", "period": "day", "queries": 10000, "zones": 2,
                       "records": 0, "limit": 10000, "plan": "dns-free"}
    status, summary, _ = await get(http, "/usage/summary", org.auth(), user="hanzo/alice",
                                   period="week")
    assert (summary["period"], summary["queries"], summary["zones"]) == ("week", 10000, 2)
    status, summary, _ = await get(http, "/usage/summary", org.auth(), user="hanzo/alice",
                                   period="month")
    assert summary["queries"] >= 10000 and summary["limit"] == 10000
    assert summary["periodLimit"] % 10000 == 0 and summary["periodLimit"] >= 280000


async def test_a_first_record_over_the_limit_still_leaves_the_meter(http, org):
    status, _, _ = await usage(http, org, "a.com", 10001)
    assert status == 429
    status, body, _ = await usage(http, org, "a.com", 10)
    assert (status, body["remaining"]) == (201, 9990)
    async with http.get("/api/v1/billing/meters", headers=org.auth()) as r:
        meters = (await r.json())["meters"]
    assert [m["eventName"] for m in meters] == ["dns-queries"]
    status, summary, _ = await get(http, "/usage/summary", org.auth(), user="hanzo/alice")
    assert summary["queries"] == 10


async def test_the_limit_is_per_day_of_the_usage(http, org):
    # [FIX] a backdated record counts against its own day, not today.
    yesterday = zulu(datetime.now(UTC) - timedelta(days=1))
    status, body, _ = await usage(http, org, "a.com", 10000, timestamp=yesterday)
    assert (status, body["remaining"]) == (201, 0)
    status, body, _ = await usage(http, org, "a.com", 10)
    assert (status, body["remaining"]) == (201, 9990)
    status, body, _ = await usage(http, org, "b.com", 1, timestamp=yesterday)
    assert (status, body["error"]["message"]) == (
        429, "daily DNS query limit exceeded: 10001/10000")


async def test_a_retried_record_counts_once(http, org):
    ts = zulu(datetime.now(UTC) - timedelta(minutes=1))
    status, body, _ = await usage(http, org, "a.com", 100, timestamp=ts)
    assert (status, body["remaining"]) == (201, 9900)
    status, body, _ = await usage(http, org, "a.com", 100, timestamp=ts)
    assert (status, body["remaining"]) == (201, 9900)
    status, summary, _ = await get(http, "/usage/summary", org.auth(), user="hanzo/alice")
    assert summary["queries"] == 100


async def test_bad_timestamps_are_refused(http, org):
    status, body, _ = await usage(http, org, "a.com", 1, timestamp="tomorrow")
    assert (status, body["error"]["message"]) == (400, "invalid timestamp")
    old = zulu(datetime.now(UTC) - timedelta(days=40))
    status, body, _ = await usage(http, org, "a.com", 1, timestamp=old)
    assert status == 400


async def test_dns_usage_is_per_mode_and_admin_only(http, org):
    await usage(http, org, "a.com", 10, key="sk_test")
    status, summary, _ = await get(http, "/usage/summary", org.auth("sk_live"),
                                   user="hanzo/alice")
    assert summary["queries"] == 0
    status, body, _ = await usage(http, org, "a.com", 10, key="pk_test")
    assert status == 403
    status, body, _ = await get(http, "/usage/summary", org.auth())
    assert (status, body["error"]["message"]) == (400, "user query parameter is required")
