"""The plan catalog through the gateway (subscriptions.md §1.2, §3.4, §5.9, §5.10 cases
64–68): every plan in catalog order, by category, one by slug; public (publishable keys
too), cacheable on success only; the platform-wide plans table seeded from the catalog."""

from __future__ import annotations

import pytest

from contracts.catalog import load_catalog
from services.subscriptions.plans import store
from tests.support import get

SLUGS = ["developer", "pro", "team", "max", "team-max", "enterprise", "world-free",
         "world-pro", "world-team", "dns-free", "dns-pro", "dns-enterprise"]
CACHED = {"Cache-Control": "public, max-age=1800, s-maxage=3600, stale-while-revalidate=60",
          "CDN-Cache-Control": "max-age=3600", "Vary": "Accept-Encoding", "Cache-Tag": "plans"}


async def plans(http, org, key="sk_test", **query):
    status, body, headers = await get(http, "/plans", org.auth(key), **query)
    assert status == 200, body
    return body, headers


async def test_every_plan_in_catalog_order_cacheable(http, org):  # 55, 64
    body, headers = await plans(http, org)
    assert [p["slug"] for p in body] == SLUGS
    assert {k: headers[k] for k in CACHED} == CACHED
    for p in body:
        assert p["name"] and p["currency"] == "usd"
        assert (p["interval"], p["intervalCount"], p["trialPeriodDays"]) == ("monthly", 1, 0)
        # Fields the catalog carries internally never reach the wire (67).
        assert not {"pricePerUser", "addons", "payouts"} & p.keys()
        assert "includedCloudCredits" not in p.get("limits", {})


@pytest.mark.parametrize("key", ["pk_test", "pk_live", "sk_live"])
async def test_any_credential_reads_the_catalog(http, org, key):
    assert len((await plans(http, org, key))[0]) == 12


@pytest.mark.parametrize(("category", "slugs"), [  # 56, 60, 65, §3.4.1
    ("world", ["world-free", "world-pro", "world-team"]),
    ("dns", ["dns-free", "dns-pro", "dns-enterprise"]),
    ("team", ["team", "team-max"]),
    ("World", []), ("DNS", []), ("nope", []), ("", SLUGS)])
async def test_by_category(http, org, category, slugs):
    body, _ = await plans(http, org, category=category)
    assert [p["slug"] for p in body] == slugs
    assert all(p["category"] == category for p in body) or category == ""


async def test_one_plan_by_slug(http, org):  # 57–59, 61–63, 66, 67
    got = {}
    for slug in ("pro", "enterprise", "developer", "world-pro", "max", "dns-pro",
                 "dns-free", "dns-enterprise"):
        status, got[slug], headers = await get(http, f"/plans/{slug}", org.auth())
        assert status == 200 and headers["Cache-Tag"] == "plans"
    pro = got["pro"]
    assert {k: pro[k] for k in ("slug", "price", "priceAnnual", "currency", "interval",
                                "intervalCount", "trialPeriodDays")} == {
        "slug": "pro", "price": 2000, "priceAnnual": 1600, "currency": "usd",
        "interval": "monthly", "intervalCount": 1, "trialPeriodDays": 0}
    assert "popular" not in pro and "contactSales" not in pro
    assert (got["enterprise"]["price"], got["enterprise"]["contactSales"]) == (0, True)
    assert got["developer"]["price"] == 0
    assert got["developer"]["limits"]["requestsPerMinute"] == 60
    assert got["developer"]["limits"]["tokensPerMinute"] == 100000
    assert (got["world-pro"]["price"], got["world-pro"]["popular"]) == (2900, True)
    assert got["max"]["limits"] == {"requestsPerMinute": 5000, "tokensPerMinute": 10000000}
    assert {k: got["dns-pro"][k] for k in ("price", "priceAnnual", "popular")} == {
        "price": 500, "priceAnnual": 400, "popular": True}
    assert got["dns-free"]["limits"] == {"zones": 2, "recordsPerZone": 50,
                                         "queriesPerDay": 10000}
    assert got["dns-pro"]["limits"] == {"zones": 25, "recordsPerZone": 500,
                                        "queriesPerDay": 1000000}
    assert got["dns-enterprise"]["price"] == 2500
    assert got["dns-enterprise"]["limits"]["zones"] == -1
    assert got["dns-enterprise"]["limits"]["queriesPerDay"] == -1


@pytest.mark.parametrize("slug", ["nope", "PRO", "nonexistent-plan"])
async def test_an_unknown_plan_is_404_and_not_cached(http, org, slug):  # 63, 66 OURS
    status, body, headers = await get(http, f"/plans/{slug}", org.auth())
    assert (status, body["error"]["message"]) == (404, "plan not found")
    assert headers["Cache-Control"] == "private, no-store"
    assert "Cache-Tag" not in headers


async def test_no_credential_no_plans(http):
    status, _, headers = await get(http, "/plans", {})
    assert status == 401 and "Cache-Tag" not in headers


async def test_the_catalog_is_copied_into_the_plans_table(pool):  # §1.1 OURS, §7 D5
    rows = {r["id"]: r for r in await pool.fetch("select * from subscriptions.plans")}
    assert set(SLUGS) <= rows.keys()
    assert all(rows[s]["slug"] == s for s in SLUGS)
    assert (rows["team"]["price"], rows["team"]["per_user"]) == (2500, True)
    assert (rows["pro"]["price_annual"], rows["pro"]["price_annual_total"]) == (1600, 19200)
    assert rows["enterprise"]["price"] is None and rows["enterprise"]["contact_sales"]


async def test_the_catalog_wins_at_boot_except_over_managed_plans(pool):  # §7 D5
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("update subscriptions.plans set price = 1 where id = 'pro'")
            await conn.execute("update subscriptions.plans set price = 2, managed = true"
                               " where id = 'max'")
            await store.upsert_catalog(conn, load_catalog())
            assert dict(await conn.fetch("select id, price from subscriptions.plans"
                                         " where id in ('pro', 'max')")) == {
                "pro": 2000, "max": 2}
        finally:
            await tx.rollback()  # the other tests keep the catalog's plans
