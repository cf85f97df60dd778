"""Subscriptions through the gateway (subscriptions.md §3.1.1–§3.1.6, §5.10 cases 69–83):
create (trial, seats, annual, the mint gate, one paid subscription per category), list, get,
change plan or quantity with proration, cancel and reactivate; bad input (4xx, nothing
stored); other organizations and modes (404); concurrent changes take turns; idempotent
under a key; events through the outbox."""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timedelta

import pytest

from services.subscriptions.subscriptions.domain import MINT_REQUIRED, add_months
from tests.conftest import SERVICE_TOKENS, bearer, iam_token
from tests.support import get, new_user, post, request


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


async def create(http, org, body, key="sk_test", headers=None):
    return await post(http, "/subscriptions", body, headers or org.auth(key))


async def created(http, org, body, **kw):
    status, sub, _ = await create(http, org, body, **kw)
    assert status == 201, sub
    return sub


async def patch(http, org, sub_id, body, key="sk_test", **kw):
    return await request(http, "PATCH", f"/api/v1/billing/subscriptions/{sub_id}",
                         org.auth(key), body, **kw)


async def cancel(http, org, sub_id, body=None, **kw):
    return await post(http, f"/subscriptions/{sub_id}/cancel", body, org.auth(), **kw)


async def reactivate(http, org, sub_id):
    return await post(http, f"/subscriptions/{sub_id}/reactivate", None, org.auth())


async def fetch(http, org, sub_id, key="sk_test"):
    return await get(http, f"/subscriptions/{sub_id}", org.auth(key))


def error(reply):
    return reply[0], reply[1]["error"]["message"]


async def stored(pool, user) -> int:
    return await pool.fetchval(
        "select count(*) from subscriptions.subscriptions where user_id = $1", user)


async def events(pool, sub_id) -> list[str]:
    return [r["type"] for r in await pool.fetch(
        "select type from subscriptions.outbox"
        " where convert_from(payload, 'utf8')::jsonb->>'objectId' = $1 order by seq", sub_id)]


# ---- create --------------------------------------------------------------------------------


async def test_create_a_free_plan(http, org, pool):  # 70, §3.1.1
    user = new_user()
    sub = await created(http, org, {"userId": user, "planId": "developer"})
    assert {k: sub[k] for k in ("userId", "planId", "status", "quantity", "providerType",
                                "cancelAtPeriodEnd", "defaultPaymentMethod")} == {
        "userId": user, "planId": "developer", "status": "active", "quantity": 1,
        "providerType": "internal", "cancelAtPeriodEnd": False, "defaultPaymentMethod": ""}
    assert sub["plan"] == {"id": "developer", "name": sub["plan"]["name"], "price": 0,
                           "currency": "usd", "interval": "monthly"}
    assert parse(sub["currentPeriodEnd"]) == add_months(parse(sub["currentPeriodStart"]), 1)
    assert not {"trialStart", "trialEnd", "canceledAt", "endedAt", "metadata"} & sub.keys()
    assert sub["id"].startswith("sub_")
    again = await created(http, org, {"userId": user, "planId": "developer"})
    assert again["planId"] == "developer" and again["id"] != sub["id"]
    assert await events(pool, sub["id"]) == ["subscription.created"]
    event = await pool.fetchval(
        "select convert_from(payload, 'utf8')::jsonb from subscriptions.outbox"
        " where convert_from(payload, 'utf8')::jsonb->>'objectId' = $1", sub["id"])
    assert (event["objectType"], event["customerId"], event["data"]) == (
        "subscription", user, sub)


async def test_user_ids_are_canonical_and_metadata_is_returned(http, org):  # 72, §7 D6
    sub = await created(http, org, {"userId": "  Hanzo/ALICE ", "planId": "pro",
                                    "metadata": {"a": 1}, "defaultPaymentMethod": "balance"})
    assert (sub["userId"], sub["metadata"], sub["defaultPaymentMethod"]) == (
        "hanzo/alice", {"a": 1}, "balance")
    assert (await fetch(http, org, sub["id"]))[1] == sub


async def test_a_paid_plan_needs_the_right_to_mint(http):  # 71, §3.1.1 step 5
    name = f"subs-{secrets.token_hex(4)}"
    admin = bearer(iam_token(owner=name, name="root", isAdmin=True))
    status, body, _ = await post(http, "/subscriptions", {"userId": f"{name}/root",
                                                          "planId": "max"}, admin)
    assert (status, body["error"]["message"]) == (403, MINT_REQUIRED)
    # A free plan needs no such right.
    status, _, _ = await post(http, "/subscriptions", {"userId": f"{name}/root",
                                                       "planId": "developer"}, admin)
    assert status == 201
    service = {**bearer(SERVICE_TOKENS[0]), "X-IAM-Org-Id": name}
    status, sub, _ = await post(http, "/subscriptions", {"userId": f"{name}/root",
                                                         "planId": "max"}, service)
    assert (status, sub["plan"]["price"]) == (201, 20000)
    # Nor may the IAM admin upgrade a free subscription (§3.1.4 OURS).
    status, free, _ = await post(http, "/subscriptions", {"userId": f"{name}/bob",
                                                          "planId": "developer"}, service)
    status, body, _ = await request(http, "PATCH", f"/api/v1/billing/subscriptions/{free['id']}",
                                    admin, {"planId": "pro"})
    assert (status, body["error"]["message"]) == (403, MINT_REQUIRED)


async def test_members_are_refused(http):  # §7 S1
    member = bearer(iam_token(owner="subs-members", name="eve", roles=["member"]))
    status, body, _ = await post(http, "/subscriptions", {"userId": "subs-members/eve",
                                                          "planId": "developer"}, member)
    assert (status, body["error"]["message"]) == (403, "Token doesn't support this scope")


async def test_a_trial(http, org):  # §2.2, trialPeriodDays OURS
    sub = await created(http, org, {"userId": new_user(), "planId": "pro",
                                    "trialPeriodDays": 14})
    assert sub["status"] == "trialing"
    start, end = parse(sub["trialStart"]), parse(sub["trialEnd"])
    assert end - start == timedelta(days=14)
    assert parse(sub["currentPeriodStart"]) == end
    assert parse(sub["currentPeriodEnd"]) == add_months(end, 1)


async def test_seats_of_a_per_seat_plan(http, org):  # README: per-seat
    sub = await created(http, org, {"userId": new_user(), "planId": "team", "quantity": 3})
    assert (sub["quantity"], sub["plan"]["price"]) == (3, 2500)  # the price of one seat


async def test_an_annual_subscription(http, org):  # README: annual
    sub = await created(http, org, {"userId": new_user(), "planId": "pro", "interval": "year"})
    assert (sub["plan"]["price"], sub["plan"]["interval"]) == (1600 * 12, "year")
    assert parse(sub["currentPeriodEnd"]) == add_months(parse(sub["currentPeriodStart"]), 12)


async def test_one_paid_subscription_per_category(http, org):  # README: 409
    user = new_user()
    first = await created(http, org, {"userId": user, "planId": "pro"})
    status, message = error(await create(http, org, {"userId": user, "planId": "max"}))
    assert status == 409 and first["id"] in message and "personal" in message
    # Another category, a free plan, another customer: all fine.
    await created(http, org, {"userId": user, "planId": "dns-pro"})
    await created(http, org, {"userId": user, "planId": "developer"})
    await created(http, org, {"userId": new_user(), "planId": "max"})
    # Ended, the category is free again.
    assert (await cancel(http, org, first["id"], {"atPeriodEnd": False}))[0] == 200
    await created(http, org, {"userId": user, "planId": "max"})


async def test_concurrent_paid_creates_of_one_category_make_one(http, org, pool):
    user = new_user()
    replies = await asyncio.gather(*(create(http, org, {"userId": user, "planId": plan})
                                     for plan in ("pro", "max", "pro", "max")))
    assert sorted(r[0] for r in replies) == [201, 409, 409, 409]
    assert await stored(pool, user) == 1


async def test_idempotent_under_a_key(http, org, pool):  # §7 R3
    user, key = new_user(), {"Idempotency-Key": secrets.token_hex(8)}
    body = {"userId": user, "planId": "pro"}
    first = await create(http, org, body, headers={**org.auth(), **key})
    again = await create(http, org, body, headers={**org.auth(), **key})
    assert first[0] == again[0] == 201 and first[1] == again[1]
    assert again[2]["Idempotent-Replayed"] == "true"
    assert await stored(pool, user) == 1
    other = await create(http, org, {**body, "planId": "developer"},
                         headers={**org.auth(), **key})
    assert other[0] == 422


@pytest.mark.parametrize(("body", "status", "message"), [  # 69 and OURS inputs
    ({}, 400, "userId is required"),
    ({"userId": "   "}, 400, "userId is required"),
    ({"userId": "u"}, 400, "planId is required"),
    ({"userId": "u", "planId": "nope"}, 404, "plan not found"),
    ({"userId": "u", "planId": 7}, 400, "invalid request body"),
    ({"userId": "u", "planId": "pro", "metadata": []}, 400, "invalid request body"),
    ({"userId": "u", "planId": "enterprise"}, 400, "plan requires a sales contract"),
    ({"userId": "u", "planId": "pro", "quantity": 0}, 400, "quantity must be between 1 and 100000"),
    ({"userId": "u", "planId": "pro", "quantity": 100001}, 400,
     "quantity must be between 1 and 100000"),
    ({"userId": "u", "planId": "developer", "quantity": 2}, 400,
     "quantity is only for per-seat plans"),
    ({"userId": "u", "planId": "pro", "interval": "weekly"}, 400, "invalid interval"),
    ({"userId": "u", "planId": "pro", "trialPeriodDays": -1}, 400,
     "trialPeriodDays must be between 0 and 730"),
    ({"userId": "u", "planId": "pro", "trialPeriodDays": 731}, 400,
     "trialPeriodDays must be between 0 and 730"),
])
async def test_bad_creates_store_nothing(http, org, pool, body, status, message):
    user = new_user()
    body = {**body, "userId": user} if body.get("userId") == "u" else body
    assert error(await create(http, org, body)) == (status, message)
    assert await stored(pool, user) == 0


async def test_a_body_that_is_not_json(http, org):  # 69
    status, body, _ = await post(http, "/subscriptions", None, org.auth(), raw=b"[")
    assert (status, body["error"]["message"]) == (400, "invalid request body")


# ---- list and get --------------------------------------------------------------------------


async def test_list_with_filters_and_pages(http, make_org):  # 74, §3.1.2 OURS
    org = await make_org()
    for user, plan in (("hanzo/alice", "developer"), ("hanzo/alice", "pro"),
                       ("hanzo/bob", "developer")):
        await created(http, org, {"userId": user, "planId": plan})
    for query, count in (({"userId": "hanzo/alice"}, 2), ({"status": "canceled"}, 0),
                         ({"userId": " Hanzo/Alice "}, 2), ({}, 3), ({"status": "active"}, 3)):
        status, body, headers = await get(http, "/subscriptions", org.auth(), **query)
        assert (status, body["count"], len(body["subscriptions"])) == (200, count, count)
        assert headers["X-Total-Count"] == str(count)
    status, body, headers = await get(http, "/subscriptions", org.auth(), limit=2)
    assert [s["userId"] for s in body["subscriptions"]] == ["hanzo/bob", "hanzo/alice"]
    assert (body["count"], headers["X-Total-Count"], headers["X-Has-More"]) == (2, "3", "true")
    status, body, _ = await get(http, "/subscriptions", org.auth(), limit=2, offset=2)
    assert [s["planId"] for s in body["subscriptions"]] == ["developer"]


async def test_unknown_and_foreign_subscriptions_are_not_found(http, org, make_org):  # 73
    sub = await created(http, org, {"userId": new_user(), "planId": "developer"})
    other = await make_org()
    for who, key, sub_id in ((org, "sk_test", "sub_nope"), (other, "sk_test", sub["id"]),
                             (org, "sk_live", sub["id"])):
        assert error(await fetch(http, who, sub_id, key)) == (404, "subscription not found")
        assert error(await patch(http, who, sub_id, {"quantity": 2}, key)) == (
            404, "subscription not found")
        for action in ("cancel", "reactivate"):
            reply = await post(http, f"/subscriptions/{sub_id}/{action}", None, who.auth(key))
            assert error(reply) == (404, "subscription not found")
    status, body, _ = await get(http, "/subscriptions", other.auth())
    assert body["count"] == 0
    assert (await fetch(http, org, sub["id"]))[1] == sub  # untouched


async def test_an_id_of_another_kind_is_not_found(http, org):  # §0.6
    status, invoice, _ = await post(http, "/invoices", {"userId": new_user()}, org.auth())
    assert status == 201, invoice
    assert error(await fetch(http, org, invoice["id"])) == (404, "subscription not found")


# ---- change plan or quantity ---------------------------------------------------------------


async def test_quantity(http, org, pool):  # 75
    sub = await created(http, org, {"userId": new_user(), "planId": "pro"})
    for body, quantity in (({"quantity": 5}, 5), ({"quantity": 0}, 5), ({"quantity": -3}, 5),
                           ({}, 5)):
        status, changed, _ = await patch(http, org, sub["id"], body)
        assert (status, changed["quantity"]) == (200, quantity)
    flat = await created(http, org, {"userId": new_user(), "planId": "dns-pro"})
    assert error(await patch(http, org, flat["id"], {"quantity": 2})) == (
        400, "quantity is only for per-seat plans")
    assert (await fetch(http, org, flat["id"]))[1]["quantity"] == 1


async def test_bad_changes_store_nothing(http, org, pool):  # 76, 77
    sub = await created(http, org, {"userId": new_user(), "planId": "pro"})
    for raw in (b"", b"[", b'{"prorate": "yes"}', b'{"quantity": "2"}'):
        status, body, _ = await request(http, "PATCH",
                                        f"/api/v1/billing/subscriptions/{sub['id']}",
                                        org.auth(), raw=raw)
        assert (status, body["error"]["message"]) == (400, "invalid request body"), raw
    assert error(await patch(http, org, sub["id"], {"planId": "does-not-exist"})) == (
        404, "new plan not found")
    assert error(await patch(http, org, sub["id"], {"planId": "enterprise"})) == (
        400, "plan requires a sales contract")
    assert (await fetch(http, org, sub["id"]))[1] == sub
    assert await events(pool, sub["id"]) == ["subscription.created"]


async def test_a_plan_change_with_proration(http, org, pool):  # 78, §2.3 OURS
    sub = await created(http, org, {"userId": new_user(), "planId": "pro"})
    status, changed, _ = await patch(http, org, sub["id"], {"planId": "max", "prorate": True})
    assert status == 200, changed
    assert (changed["planId"], changed["plan"]["name"], changed["plan"]["price"]) == (
        "max", "Max", 20000)
    for k in ("currentPeriodStart", "currentPeriodEnd", "status"):
        assert changed[k] == sub[k]
    item = changed.pop("prorationItem")
    assert item["id"].startswith("li_proration_") and item["type"] == "proration"
    assert item["description"] == "Proration: Pro -> Max"
    # Seconds into the period: nearly all of it is left.
    assert 20000 - 2000 - 2 <= item["amount"] <= 20000 - 2000
    assert item["periodEnd"] == sub["currentPeriodEnd"]
    pending = await pool.fetch(
        "select amount, status from subscriptions.pending_invoice_items"
        " where subscription_id = $1", sub["id"])
    assert [(r["amount"], r["status"]) for r in pending] == [(item["amount"], "pending")]
    assert (await fetch(http, org, sub["id"]))[1] == changed
    assert await events(pool, sub["id"]) == [
        "subscription.created", "subscription.updated", "subscription.plan_changed"]
    # Without proration: no pending item.
    status, back, _ = await patch(http, org, sub["id"], {"planId": "pro"})
    assert status == 200 and "prorationItem" not in back
    assert len(await pool.fetch("select 1 from subscriptions.pending_invoice_items"
                                " where subscription_id = $1", sub["id"])) == 1


async def test_an_annual_subscription_changes_to_the_annual_price(http, org):
    sub = await created(http, org, {"userId": new_user(), "planId": "pro", "interval": "year"})
    status, changed, _ = await patch(http, org, sub["id"], {"planId": "max"})
    assert (changed["plan"]["price"], changed["plan"]["interval"]) == (16000 * 12, "year")


async def test_a_change_into_a_taken_category_is_refused(http, org):
    user = new_user()
    await created(http, org, {"userId": user, "planId": "pro"})
    free = await created(http, org, {"userId": user, "planId": "developer"})
    status, message = error(await patch(http, org, free["id"], {"planId": "max"}))
    assert status == 409


async def test_a_canceled_subscription_is_not_changed(http, org):
    sub = await created(http, org, {"userId": new_user(), "planId": "pro"})
    await cancel(http, org, sub["id"], {"atPeriodEnd": False})
    assert error(await patch(http, org, sub["id"], {"planId": "max"})) == (
        400, "cannot change a canceled subscription")


# ---- cancel and reactivate -----------------------------------------------------------------


@pytest.mark.parametrize("body", [{"atPeriodEnd": True}, None, {}, "not json"])
async def test_cancel_at_period_end_by_default(http, org, pool, body):  # 79, 80, 81 OURS
    sub = await created(http, org, {"userId": new_user(), "planId": "pro"})
    kw = {"raw": body.encode()} if isinstance(body, str) else {}
    status, done, _ = await cancel(http, org, sub["id"], None if kw else body, **kw)
    assert status == 200, done
    assert (done["status"], done["cancelAtPeriodEnd"]) == ("active", True)
    assert "canceledAt" in done and "endedAt" not in done
    assert await events(pool, sub["id"]) == ["subscription.created", "subscription.updated"]


async def test_cancel_now_then_again(http, org, pool):  # 82, 83
    sub = await created(http, org, {"userId": new_user(), "planId": "pro"})
    status, done, _ = await cancel(http, org, sub["id"], {"atPeriodEnd": False})
    assert (status, done["status"]) == (200, "canceled")
    assert done["canceledAt"] == done["endedAt"]
    assert error(await cancel(http, org, sub["id"], {"atPeriodEnd": False})) == (
        400, "subscription is already canceled")
    assert error(await reactivate(http, org, sub["id"])) == (
        400, "cannot reactivate a fully ended subscription")
    assert await events(pool, sub["id"]) == ["subscription.created", "subscription.canceled"]


async def test_reactivate_a_pending_cancel(http, org, pool):  # 83
    sub = await created(http, org, {"userId": new_user(), "planId": "pro"})
    await cancel(http, org, sub["id"])
    status, back, _ = await reactivate(http, org, sub["id"])
    assert (status, back["status"], back["cancelAtPeriodEnd"]) == (200, "active", False)
    assert "canceledAt" not in back
    assert await events(pool, sub["id"]) == [
        "subscription.created", "subscription.updated", "subscription.reactivated"]


async def test_concurrent_changes_take_turns(http, org, pool):  # §7 R1
    sub = await created(http, org, {"userId": new_user(), "planId": "team"})
    changes = [patch(http, org, sub["id"], {"quantity": n}) for n in range(2, 8)]
    replies = await asyncio.gather(cancel(http, org, sub["id"]), *changes)
    assert all(r[0] == 200 for r in replies)
    final = (await fetch(http, org, sub["id"]))[1]
    assert final["cancelAtPeriodEnd"] is True  # no PATCH wrote back an older row
    version = await pool.fetchval("select version from subscriptions.subscriptions"
                                  " where id = $1", sub["id"])
    assert version == 1 + len(replies)
    assert len(await events(pool, sub["id"])) == 1 + len(replies)
