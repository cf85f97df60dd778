"""Subscription items through the gateway (subscriptions.md §1.4, §3.2, §5.8 #54, §5.10 #87):
the reference's shapes with `created` a timestamp, OURS validation (the subscription is the
organization's, billingMode, quantities, a metered item's meter), newest first, soft delete,
Idempotency-Key; bad input stores nothing; other organizations and modes get 404. And what
the cycle reads: the live items of subscriptions, a licensed plan item with its plan's
price."""

from __future__ import annotations

import msgspec
import pytest

from contracts.limits import METADATA_BYTES
from contracts.subscription_items import SUBSCRIPTION_ITEMS_PAGE, SubscriptionItem
from services.subscriptions.items.store import billable_items
from tests.support import get, new_user, org_id_of, post, request

ITEMS = "/subscription-items"


async def subscription(http, org, plan="developer", key="sk_test"):
    status, sub, _ = await post(http, "/subscriptions", {"userId": new_user(), "planId": plan},
                                org.auth(key))
    assert status == 201, sub
    return sub


async def create(http, org, body, key="sk_test", **kw):
    return await post(http, ITEMS, body, org.auth(key), **kw)


async def created(http, org, body, key="sk_test"):
    status, item, _ = await create(http, org, body, key)
    assert status == 201, item
    return item


async def patch(http, org, item_id, body, key="sk_test"):
    return await request(http, "PATCH", f"/api/v1/billing{ITEMS}/{item_id}", org.auth(key), body)


async def delete(http, org, item_id, key="sk_test"):
    return await request(http, "DELETE", f"/api/v1/billing{ITEMS}/{item_id}", org.auth(key))


async def listed(http, org, key="sk_test", **query):
    status, items, headers = await get(http, ITEMS, org.auth(key), **query)
    assert status == 200, items
    return items, headers


def error(reply):
    return reply[0], reply[1]["error"]["message"]


async def test_a_metered_item_and_its_defaults(http, org):  # 87, 54
    sub = await subscription(http, org)
    item = await created(http, org, {"subscriptionId": sub["id"], "meterId": "m1"})
    assert set(item) == {"id", "subscriptionId", "billingMode", "quantity", "meterId",
                         "created"}
    assert (item["subscriptionId"], item["billingMode"], item["quantity"], item["meterId"]) == (
        sub["id"], "licensed", 0, "m1")
    assert item["created"].endswith("Z")
    status, got, _ = await get(http, f"{ITEMS}/{item['id']}", org.auth())
    assert (status, got) == (200, item)


async def test_every_field_round_trips(http, org):  # 54
    sub = await subscription(http, org)
    item = await created(http, org, {
        "subscriptionId": sub["id"], "priceId": "price_abc", "planId": "team",
        "meterId": "meter_ghi", "quantity": 5, "billingMode": "licensed",
        "metadata": {"seats": 5}})
    assert {k: item[k] for k in ("priceId", "planId", "meterId", "quantity", "billingMode",
                                 "metadata")} == {
        "priceId": "price_abc", "planId": "team", "meterId": "meter_ghi", "quantity": 5,
        "billingMode": "licensed", "metadata": {"seats": 5}}
    assert (await get(http, f"{ITEMS}/{item['id']}", org.auth()))[1] == item


async def test_delete_twice(http, org):  # 87
    sub = await subscription(http, org)
    item = await created(http, org, {"subscriptionId": sub["id"]})
    status, body, _ = await delete(http, org, item["id"])
    assert (status, body) == (200, {"deleted": True, "id": item["id"]})
    assert error(await delete(http, org, item["id"])) == (404, "subscription item not found")
    assert error(await get(http, f"{ITEMS}/{item['id']}", org.auth())) == (
        404, "subscription item not found")
    assert item["id"] not in [i["id"] for i in (await listed(http, org))[0]]
    assert error(await patch(http, org, item["id"], {"quantity": 2})) == (
        404, "subscription item not found")


async def test_update_quantity_and_metadata(http, org):  # §3.2.4
    sub = await subscription(http, org)
    item = await created(http, org, {"subscriptionId": sub["id"], "quantity": 1,
                                     "metadata": {"a": 1}})
    status, changed, _ = await patch(http, org, item["id"], {"quantity": 5})
    assert (status, changed["quantity"], changed["metadata"]) == (200, 5, {"a": 1})
    for ignored in (0, -3):  # only a quantity > 0 applies
        status, changed, _ = await patch(http, org, item["id"], {"quantity": ignored})
        assert (status, changed["quantity"]) == (200, 5)
    status, changed, _ = await patch(http, org, item["id"], {"metadata": {"b": 2}})
    assert (status, changed["metadata"], changed["created"]) == (200, {"b": 2}, item["created"])
    assert (await get(http, f"{ITEMS}/{item['id']}", org.auth()))[1] == changed
    assert error(await patch(http, org, item["id"], None)) == (400, "invalid request body")


async def test_list_newest_first_filtered_and_paged(http, make_org):  # §3.2.2
    org = await make_org()
    one, two = await subscription(http, org), await subscription(http, org)
    first = await created(http, org, {"subscriptionId": one["id"]})
    second = await created(http, org, {"subscriptionId": two["id"]})
    third = await created(http, org, {"subscriptionId": one["id"]})
    items, headers = await listed(http, org)
    assert [i["id"] for i in items] == [third["id"], second["id"], first["id"]]
    assert headers["X-Total-Count"] == "3"
    items, _ = await listed(http, org, subscriptionId=one["id"])
    assert [i["id"] for i in items] == [third["id"], first["id"]]
    items, headers = await listed(http, org, limit="1", offset="1")
    assert ([i["id"] for i in items], headers["X-Has-More"]) == ([second["id"]], "true")


@pytest.mark.parametrize("body, message", [
    ({}, "subscriptionId is required"),
    ({"subscriptionId": "  "}, "subscriptionId is required"),
    ({"billingMode": "per_seat"}, "billingMode must be licensed or metered"),
    ({"quantity": -1}, "quantity must be >= 0"),
    ({"billingMode": "metered"}, "meterId is required for metered items"),
    ({"quantity": "2"}, "invalid request body"),
    ({"quantity": 1.5}, "invalid request body"),
    ({"metadata": []}, "invalid request body"),
])
async def test_bad_input_stores_nothing(http, make_org, body, message):
    org = await make_org()
    sub = await subscription(http, org)
    if body:
        body = {"subscriptionId": sub["id"], **body}
    assert error(await create(http, org, body)) == (400, message)
    assert error(await create(http, org, None, raw=b"[")) == (400, "invalid request body")
    assert (await listed(http, org))[0] == []


async def test_unknown_subscription_or_plan_is_404(http, org):
    sub = await subscription(http, org)
    assert error(await create(http, org, {"subscriptionId": "sub_nope"})) == (
        404, "subscription not found")
    assert error(await create(http, org, {"subscriptionId": sub["id"], "planId": "nope"})) == (
        404, "plan not found")


async def test_other_organizations_and_modes_see_nothing(http, make_org):
    org, other = await make_org(), await make_org()
    sub = await subscription(http, org)
    item = await created(http, org, {"subscriptionId": sub["id"], "quantity": 1})
    # Another organization's subscription, or the same one in live mode, is not there.
    assert error(await create(http, other, {"subscriptionId": sub["id"]})) == (
        404, "subscription not found")
    assert error(await create(http, org, {"subscriptionId": sub["id"]}, key="sk_live")) == (
        404, "subscription not found")
    for caller, key in ((other, "sk_test"), (org, "sk_live")):
        assert error(await get(http, f"{ITEMS}/{item['id']}", caller.auth(key))) == (
            404, "subscription item not found")
        assert error(await patch(http, caller, item["id"], {"quantity": 9}, key)) == (
            404, "subscription item not found")
        assert error(await delete(http, caller, item["id"], key)) == (
            404, "subscription item not found")
        assert (await listed(http, caller, key))[0] == []
    assert (await get(http, f"{ITEMS}/{item['id']}", org.auth()))[1] == item
    status, _, _ = await get(http, ITEMS, org.auth("pk_test"))
    assert status == 403  # admin class: no publishable key


async def test_idempotency_key(http, org):  # §7 R3
    sub = await subscription(http, org)
    headers = {**org.auth(), "Idempotency-Key": f"item-{sub['id']}"}
    body = {"subscriptionId": sub["id"], "quantity": 2}
    first = await post(http, ITEMS, body, headers)
    again = await post(http, ITEMS, body, headers)
    assert (first[0], again[0], again[1]) == (201, 201, first[1])
    assert again[2]["Idempotent-Replayed"] == "true"
    assert len((await listed(http, org, subscriptionId=sub["id"]))[0]) == 1
    status, _, _ = await post(http, ITEMS, {**body, "quantity": 3}, headers)
    assert status == 422


async def test_what_the_cycle_bills(http, org, platform, pool):
    """Live items by subscription: a licensed item of a plan carries the plan's price per
    seat; a deleted item bills nothing; other subscriptions are not read."""
    sub, other = await subscription(http, org), await subscription(http, org)
    seats = await created(http, org, {"subscriptionId": sub["id"], "planId": "pro",
                                      "quantity": 3})
    metered = await created(http, org, {"subscriptionId": sub["id"], "meterId": "m_api",
                                        "billingMode": "metered"})
    gone = await created(http, org, {"subscriptionId": sub["id"], "quantity": 1})
    await created(http, org, {"subscriptionId": other["id"], "quantity": 1})
    await delete(http, org, gone["id"])
    org_id = await org_id_of(platform, org)
    async with pool.acquire() as conn:
        billed = await billable_items(conn, org_id, False, [sub["id"]])
        assert await billable_items(conn, org_id, True, [sub["id"]]) == {}
    assert list(billed) == [sub["id"]]
    assert [(r["id"], r["billing_mode"], r["quantity"], r["unit_amount"], r["meter_id"],
             r["plan_id"]) for r in billed[sub["id"]]] == [
        (seats["id"], "licensed", 3, 2000, "", "pro"),
        (metered["id"], "metered", 0, 0, "m_api", "")]


async def test_events(http, org, pool):
    sub = await subscription(http, org)
    item = await created(http, org, {"subscriptionId": sub["id"]})
    await patch(http, org, item["id"], {"quantity": 4})
    await delete(http, org, item["id"])
    types = [r["type"] for r in await pool.fetch(
        "select type from subscriptions.outbox where"
        " convert_from(payload, 'utf8')::jsonb->>'objectId' = $1 order by seq", item["id"])]
    assert types == ["subscription_item.created", "subscription_item.updated",
                     "subscription_item.deleted"]


def test_a_full_page_at_every_limit_fits_in_one_bus_message():
    """As tests/gateway/test_integrity_limits.py does for the other lists."""
    w = "\x01"  # 6 bytes in JSON
    item = SubscriptionItem(id="si_" + "x" * 22, subscriptionId=w * 255, billingMode="licensed",
                            quantity=2**63 - 1, created="2026-12-06T21:00:00.123456Z",
                            priceId=w * 255, planId=w * 255, meterId=w * 255,
                            metadata={"k": "v" * (METADATA_BYTES - len('{"k":""}'))})
    page = [item] * SUBSCRIPTION_ITEMS_PAGE.maximum
    assert len(msgspec.json.encode({"result": page, "status": 200})) < 0.9 * 1024 * 1024
