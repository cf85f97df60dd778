"""Gift subscriptions (ledger.md §2.10 and §8 L; subscriptions.md §1.2 "Grant CLI"):
`POST /billing/subscriptions/gifts`, the bus endpoint and `billing grant` — a catalog plan
given for a number of days as an active `manual_gift` subscription, one per user and plan
(a second grant extends it), never billed, ended at its period end."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from contracts.envelope import Actor
from contracts.gifts import GIFT_GRANT
from services.subscriptions.gifts import handlers as gifts
from tests.conftest import bearer, iam_token
from tests.support import Bus, get, new_user, org_id_of, post, service

GIFTS = "/subscriptions/gifts"


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def _grant(http, org, user, plan="world-pro", days=30, reason="beta gift", **extra):
    return await post(http, GIFTS, {"userId": user, "planId": plan, "days": days,
                                    "reason": reason, **extra}, org.auth())


async def _subscriptions(http, org, user) -> list[dict]:
    status, body, _ = await get(http, "/subscriptions", org.auth(), userId=user)
    assert status == 200, body
    return body["subscriptions"]


async def test_l1_a_grant_is_an_active_manual_gift_until_its_end(http, org):
    user = new_user()
    before = datetime.now(UTC)
    status, gift, _ = await _grant(http, org, user, days=360, grantedBy="zach@hanzo.ai")
    assert status == 201, gift
    assert gift["subscriptionId"] and gift["userId"] == user
    assert (gift["planSlug"], gift["status"], gift.get("extended", False)) == (
        "world-pro", "active", False)
    assert _at(gift["currentPeriodEnd"]) >= before + timedelta(days=300)
    status, sub, _ = await get(http, f"/subscriptions/{gift['subscriptionId']}", org.auth())
    assert status == 200, sub
    assert (sub["status"], sub["providerType"], sub["planId"]) == (
        "active", "manual_gift", "world-pro")
    assert sub["currentPeriodEnd"] == gift["currentPeriodEnd"]
    # The gift costs its user nothing: nothing can bill it.
    assert sub["plan"]["price"] == 0
    assert {k: sub["metadata"][k] for k in ("grant_reason", "granted_by", "billing_reason")
            } == {"grant_reason": "beta gift", "granted_by": "zach@hanzo.ai",
                  "billing_reason": "manual_gift"}
    assert _at(sub["metadata"]["granted_at"]) >= before.replace(microsecond=0)


async def test_l2_a_second_grant_extends_the_same_gift(http, org):
    user = new_user()
    _, first, _ = await _grant(http, org, user, days=30)
    status, second, _ = await _grant(http, org, user, days=365, reason="renewed gift")
    assert status == 200, second
    assert second["subscriptionId"] == first["subscriptionId"] and second["extended"]
    assert _at(second["currentPeriodEnd"]) > _at(first["currentPeriodEnd"])
    # A shorter grant never shortens it; its reason is still recorded.
    _, third, _ = await _grant(http, org, user, days=10, reason="small thanks")
    assert third["currentPeriodEnd"] == second["currentPeriodEnd"]
    [sub] = await _subscriptions(http, org, user)
    assert sub["metadata"]["grant_reason"] == "beta gift"
    assert sub["metadata"]["last_grant_reason"] == "small thanks"


async def test_l3_l4_bad_grants_are_refused_and_store_nothing(http, org):
    user = new_user()
    status, body, _ = await _grant(http, org, user, plan="world-does-not-exist")
    assert (status, body["error"]["message"]) == (404, "plan not found")
    for bad, message in (({"userId": "  "}, "userId is required"),
                         ({"planId": ""}, "planId is required"),
                         ({"days": 100_000}, "days must be at most 36500"),
                         ({"days": "30"}, "invalid request body")):
        status, body, _ = await post(http, GIFTS, {"userId": user, "planId": "world-pro",
                                                   **bad}, org.auth())
        assert (status, body["error"]["message"]) == (400, message), bad
    assert await _subscriptions(http, org, user) == []


async def test_l5_two_users_get_a_gift_of_the_same_plan(http, org):
    carol, dave = new_user(), new_user()
    status_c, for_carol, _ = await _grant(http, org, carol, plan="world-team")
    status_d, for_dave, _ = await _grant(http, org, dave, plan="world-team")
    assert (status_c, status_d) == (201, 201)
    assert for_carol["subscriptionId"] != for_dave["subscriptionId"]


async def test_concurrent_grants_make_one_gift(http, org):
    user = new_user()
    replies = await asyncio.gather(*(_grant(http, org, user, days=30 + i) for i in range(8)))
    assert sorted(r[0] for r in replies) == [200] * 7 + [201]
    assert len({r[1]["subscriptionId"] for r in replies}) == 1
    [sub] = await _subscriptions(http, org, user)
    assert _at(sub["currentPeriodEnd"]) >= datetime.now(UTC) + timedelta(days=36)


async def test_a_gift_beside_a_paid_subscription_of_its_category(http, org):
    user = new_user()
    status, paid, _ = await post(http, "/subscriptions", {"userId": user, "planId": "world-team"},
                                 org.auth())
    assert status == 201, paid
    status, gift, _ = await _grant(http, org, user, plan="world-pro")
    assert status == 201, gift
    assert len(await _subscriptions(http, org, user)) == 2


async def test_only_minters_give_gifts_and_only_in_their_org(http, org, make_org):
    user = new_user()
    for headers in (org.auth("pk_test"), bearer(iam_token({"isAdmin": True}))):
        status, body, _ = await post(http, GIFTS, {"userId": user, "planId": "world-pro"},
                                     headers)
        assert status in (401, 403), body
    _, gift, _ = await _grant(http, org, user)
    other = await make_org()
    status, _, _ = await get(http, f"/subscriptions/{gift['subscriptionId']}", other.auth())
    assert status == 404
    status, _, _ = await get(http, f"/subscriptions/{gift['subscriptionId']}",
                             org.auth("sk_live"))
    assert status == 404  # live mode has no such gift


async def test_a_bus_caller_that_may_not_mint_is_refused(nc, platform, org):
    bus = Bus(nc, await org_id_of(platform, org))
    params = {"userId": new_user(), "planId": "world-pro"}
    admin = Actor(kind="api_key", role="admin")
    assert await bus.error(GIFT_GRANT.subject, params, actor=admin) == (
        403, "Token doesn't support this scope")
    assert (await bus.ok(GIFT_GRANT.subject, params))["planSlug"] == "world-pro"


async def test_an_idempotent_grant_is_granted_once(http, org):
    user = new_user()
    headers = {**org.auth(), "Idempotency-Key": f"gift-{user}"}
    body = {"userId": user, "planId": "world-pro", "days": 30}
    first = await post(http, GIFTS, body, headers)
    again = await post(http, GIFTS, body, headers)
    assert (first[0], again[0], again[1]) == (201, 201, first[1])


async def test_a_gift_ends_at_its_period_end_and_can_be_given_again(http, org, platform, pool):
    user = new_user()
    _, gift, _ = await _grant(http, org, user, days=30)
    ended_at = datetime.now(UTC) - timedelta(minutes=1)
    await pool.execute("update subscriptions.subscriptions set period_end = $2 where id = $1",
                       gift["subscriptionId"], ended_at)
    await gifts.end_gifts(service(platform, "subscriptions").ctx)
    status, sub, _ = await get(http, f"/subscriptions/{gift['subscriptionId']}", org.auth())
    assert (sub["status"], _at(sub["endedAt"])) == ("canceled", ended_at)
    assert sub["currentPeriodEnd"] == sub["endedAt"]
    # Ended, it is no longer the user's gift of the plan: a grant starts a new one.
    status, again, _ = await _grant(http, org, user, days=30)
    assert status == 201 and again["subscriptionId"] != gift["subscriptionId"]


async def test_billing_grant_sends_the_grant(http, make_org, settings):
    org = await make_org()
    user = new_user()
    env = {**os.environ, "DATABASE_URL": settings.database_url, "NATS_URL": settings.nats_url}
    command = [sys.executable, "-m", "services.cli", "grant", user, "world-pro", "--days", "60",
               "--reason", "conference speaker", "--org", org.name, "--mode", "test"]
    done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True,
                                   text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"granted world-pro to {user} until "), done.stdout
    [sub] = await _subscriptions(http, org, user)
    assert (sub["providerType"], sub["metadata"]["granted_by"],
            sub["metadata"]["grant_reason"]) == ("manual_gift", "billing-cli",
                                                 "conference speaker")
    unknown = await asyncio.to_thread(subprocess.run, [*command[:5], "nope", *command[6:]],
                                      env=env, capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 1 and "plan not found" in unknown.stderr

