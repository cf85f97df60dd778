"""Entitlements: the plans a user's subscriptions entitle them to
(`billing.subscriptions.entitlement.get`), and what the other services take from them — the
ledger's tier (ledger.md §9.10 "Derive tier from active subscriptions") and metering's DNS
limits — with their behaviour from before subscriptions when no subscriptions service
answers."""

from __future__ import annotations

from functools import partial

from contracts.entitlements import ENTITLEMENT_GET
from services.ledger.balances import tiers
from tests import support
from tests.support import Bus, get, new_user, org_id_of, post, service_down

dns_post = partial(support.post, prefix="/api/v1/dns")
dns_get = partial(support.get, prefix="/api/v1/dns")


async def _subscribe(http, org, user, plan) -> dict:
    status, sub, _ = await post(http, "/subscriptions", {"userId": user, "planId": plan},
                                org.auth())
    assert status == 201, sub
    return sub


async def _tier(http, org, user, **query) -> str:
    status, body, _ = await get(http, "/tier", org.auth(), user=user, **query)
    assert status == 200, body
    return body["tier"]["name"]


async def test_the_plans_of_entitling_subscriptions_by_category(http, org, nc, platform):
    user = new_user()
    bus = Bus(nc, await org_id_of(platform, org))
    assert await bus.ok(ENTITLEMENT_GET.subject, {"userId": user}) == {
        "userId": user, "plans": {}}
    dns = await _subscribe(http, org, user, "dns-pro")
    status, _, _ = await post(http, "/subscriptions/gifts",
                              {"userId": user, "planId": "world-pro", "days": 30}, org.auth())
    assert status == 201
    assert (await bus.ok(ENTITLEMENT_GET.subject, {"userId": f" {user.upper()} "}))["plans"] == {
        "dns": ["dns-pro"], "world": ["world-pro"]}
    status, _, _ = await post(http, f"/subscriptions/{dns['id']}/cancel", {"atPeriodEnd": False},
                              org.auth())
    assert status == 200
    assert (await bus.ok(ENTITLEMENT_GET.subject, {"userId": user}))["plans"] == {
        "world": ["world-pro"]}
    assert await bus.error(ENTITLEMENT_GET.subject, {"userId": ""}) == (
        400, "userId is required")
    # Another organization's customer of the same name has none of them.
    other = Bus(nc)
    assert (await other.ok(ENTITLEMENT_GET.subject, {"userId": user}))["plans"] == {}


async def test_the_tier_comes_from_the_subscription(http, org):
    user = new_user()
    await _subscribe(http, org, user, "max")
    assert await _tier(http, org, user) == "enterprise"
    status, body, _ = await get(http, "/tier-check", org.auth(), user=user, model="zen4-max")
    assert (status, body["tier"]["name"], body["allowed"]) == (200, "enterprise", True)
    # Without a subscription that gives one: as before (free, or a minter's `?tier=`).
    nobody = new_user()
    assert await _tier(http, org, nobody) == "free"
    assert await _tier(http, org, nobody, tier="starter") == "starter"
    free_plan = new_user()
    await _subscribe(http, org, free_plan, "developer")
    assert await _tier(http, org, free_plan, tier="starter") == "starter"


async def test_without_subscriptions_the_tier_is_as_before(http, org, platform):
    user = new_user()
    async with service_down(platform, "subscriptions"):
        assert await _tier(http, org, user) == "free"
        assert await _tier(http, org, user, tier="pro") == "pro"


def test_each_paid_plan_gives_a_tier_and_the_best_wins():
    assert tiers.of_plans(["pro"]).name == "pro"
    assert tiers.of_plans(["world-pro", "dns-pro", "developer"]) is None
    assert tiers.of_plans(["team", "team-max"]).name == "enterprise"
    assert tiers.resolve("starter", "", False, tiers.of_plans(["pro"])).name == "pro"
    assert tiers.resolve("starter", "", False, None).name == "starter"


async def test_dns_limits_come_from_the_dns_subscription(http, org):
    user = new_user()
    await _subscribe(http, org, user, "dns-pro")
    status, body, _ = await dns_post(http, "/usage", {"zone": "example.com", "user": user,
                                                      "queries": 20_000}, org.auth())
    assert (status, body["limit"]) == (201, 1_000_000), body  # dns-free would refuse 20,000
    status, summary, _ = await dns_get(http, "/usage/summary", org.auth(), user=user)
    assert (status, summary["plan"], summary["limit"], summary["queries"]) == (
        200, "dns-pro", 1_000_000, 20_000)
    nobody = new_user()
    status, summary, _ = await dns_get(http, "/usage/summary", org.auth(), user=nobody)
    assert (summary["plan"], summary["limit"]) == ("dns-free", 10_000)


async def test_without_subscriptions_dns_limits_are_as_before(http, org, platform):
    user = new_user()
    async with service_down(platform, "subscriptions"):
        status, summary, _ = await dns_get(http, "/usage/summary", org.auth(), user=user)
        assert (status, summary["plan"], summary["limit"]) == (200, "dns-free", 10_000)
