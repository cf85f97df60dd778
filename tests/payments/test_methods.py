"""Payment methods through the gateway (payments.md §4.1–§4.2, §9 36–48): the offline
provider vaults tokens in test mode and refuses Stripe's declining test cards; end users
reach only their own methods; the ledger sees them (GET /billing/status, starter credit)."""

from __future__ import annotations

import asyncio
import json

from tests.conftest import bearer, iam_token
from tests.support import add_payment_method, get, has_payment_method, new_user, post, request

CARD = {"brand": "visa", "last4": "4242", "expMonth": 12, "expYear": 2028}


async def create(http, auth, body):
    return await post(http, "/payment-methods", body, auth)


async def listed(http, auth, **query):
    status, body, _ = await get(http, "/payment-methods", auth, **query)
    assert status == 200, body
    return body


async def test_create_with_card_details(http, org, pool):  # §9 36
    status, body, _ = await create(http, org.auth(), {"customerId": "hanzo/charlie",
                                                      "type": "card", "card": CARD})
    assert status == 201, body
    assert {k: body[k] for k in ("customerId", "type", "name", "isDefault", "metadata",
                                 "card", "livemode")} == {
        "customerId": "hanzo/charlie", "type": "card", "name": "visa ending in 4242",
        "isDefault": False, "metadata": {}, "card": CARD, "livemode": False}
    assert body["id"].startswith("pm_") and "providerRef" not in body
    types = [r["type"] for r in await pool.fetch(
        "select type from payments.outbox"
        " where convert_from(payload, 'utf8')::jsonb->>'objectId' = $1", body["id"])]
    assert types == ["payment_method.attached"]


async def test_create_validates_and_stores_nothing(http, org):  # §9 37
    user = new_user()
    cases = [({"type": "card"}, 400, "customerId is required"),
             ({"customerId": user, "type": "cash"}, 400,
              "type must be card, bank_account or balance"),
             ({"customerId": user, "card": {**CARD, "last4": "42"}}, 400,
              "card.last4 must be 4 digits"),
             ({"customerId": user, "providerRef": "4000000000000002"}, 402,
              "Card declined by your bank. Please try a different card or contact your bank."),
             ({"customerId": user, "providerRef": "tok_4000000000009995"}, 402,
              "Card declined — insufficient funds.")]
    for body, status, message in cases:
        got, reply, _ = await create(http, org.auth(), body)
        assert (got, reply["error"]["message"]) == (status, message), body
    got, reply, _ = await post(http, "/payment-methods", None, org.auth(), raw=b"{")
    assert (got, reply["error"]["message"]) == (400, "invalid request body")
    assert await listed(http, org.auth(), customerId=user) == []


async def test_a_token_is_vaulted_and_verified(http, org):  # §9 38 (DO)
    user = new_user()
    status, body, _ = await create(http, org.auth(), {"customerId": user,
                                                      "providerRef": "4242424242424242"})
    assert status == 201, body
    assert body["metadata"] == {"verified": True}
    assert body["card"] == {"brand": "visa", "last4": "4242", "expMonth": 0, "expYear": 0}
    assert body["name"] == "visa ending in 4242"
    assert "4242424242424242" not in str(body)  # never the number
    assert body["providerRef"].startswith("pm_offline_")
    # The provider's keys cannot be set by a client.
    status, body, _ = await create(http, org.auth(), {"customerId": user, "card": CARD,
                                                      "metadata": {"verified": True}})
    assert body["metadata"] == {}


async def test_list_get_update_delete(http, org):  # §9 43, 44, 45
    user = new_user()
    a = (await create(http, org.auth(), {"customerId": user, "card": CARD}))[1]
    b = (await create(http, org.auth(), {"customerId": user, "type": "bank_account",
                                         "bankAccount": {"last4": "6789"}}))[1]
    await create(http, org.auth(), {"customerId": new_user(), "card": CARD})
    assert [m["id"] for m in await listed(http, org.auth(), customerId=user)] == [b["id"],
                                                                                 a["id"]]
    assert [m["id"] for m in await listed(http, org.auth(), user=user, type="card")] == [
        a["id"]]
    assert [m["id"] for m in await listed(http, org.auth(), customerId=user, limit=1,
                                          startingAfter=b["id"])] == [a["id"]]
    status, got, _ = await get(http, f"/payment-methods/{a['id']}", org.auth())
    assert status == 200 and got == a
    path = f"/api/v1/billing/payment-methods/{a['id']}"
    address = {"line1": "1 Main St", "country": "US"}
    status, body, _ = await request(http, "PATCH", path, org.auth(),
                                    {"billingAddress": address, "metadata": {"k": "v"}})
    assert (status, body["billingAddress"], body["metadata"]) == (200, address, {"k": "v"})
    status, body, _ = await request(http, "PATCH", path, org.auth(),
                                    {"metadata": {"k": None, "n": 1}})
    assert (body["billingAddress"], body["metadata"]) == (address, {"n": 1})
    status, body, _ = await request(http, "PATCH", "/api/v1/billing/payment-methods/pm_nope",
                                    org.auth(), {"metadata": {}})
    assert (status, body["error"]["message"]) == (404, "payment method not found")
    status, body, _ = await request(http, "DELETE", path, org.auth())
    assert (status, body) == (200, {"deleted": True, "id": a["id"]})
    for method in ("GET", "DELETE"):
        status, body, _ = await request(http, method, path, org.auth())
        assert (status, body["error"]["message"]) == (404, "payment method not found")
    assert [m["id"] for m in await listed(http, org.auth(), customerId=user)] == [b["id"]]


async def test_default_payment_method(http, org):  # §9 46, 47
    user = new_user()
    a = (await create(http, org.auth(), {"customerId": user, "card": CARD}))[1]
    b = (await create(http, org.auth(), {"customerId": user, "card": CARD}))[1]
    path = f"/customers/{user}/default-payment-method"
    status, body, _ = await post(http, path, {"paymentMethodId": a["id"]}, org.auth())
    assert (status, body["isDefault"]) == (200, True)
    encoded = f"/customers/{user.replace('/', '%2F')}/default-payment-method"
    status, body, _ = await post(http, encoded, {"paymentMethodId": b["id"]},
                                 org.auth())  # the customer's slash percent-encoded
    assert (status, body["id"], body["isDefault"]) == (200, b["id"], True)
    status, body, _ = await post(http, path, {"paymentMethodId": b["id"]}, org.auth())
    assert (status, body["isDefault"]) == (200, True)  # again: nothing changes
    status, body, _ = await post(http, path, {"paymentMethodId": "pm_nope"}, org.auth())
    assert (status, body["error"]["message"]) == (404, "payment method not found")
    status, body, _ = await post(http, f"/customers/{new_user()}/default-payment-method",
                                 {"paymentMethodId": a["id"]}, org.auth())
    assert status == 404  # not this customer's method
    defaults = {m["id"]: m["isDefault"] for m in await listed(http, org.auth(), user=user)}
    assert defaults == {a["id"]: False, b["id"]: True}  # B is still the default


async def test_concurrent_defaults_leave_one(http, org):
    user = new_user()
    ids = [(await create(http, org.auth(), {"customerId": user, "card": CARD}))[1]["id"]
           for _ in range(4)]
    path = f"/customers/{user}/default-payment-method"
    results = await asyncio.gather(*[post(http, path, {"paymentMethodId": i}, org.auth())
                                     for i in ids])
    assert [status for status, _, _ in results] == [200] * 4
    defaults = [m for m in await listed(http, org.auth(), user=user) if m["isDefault"]]
    assert len(defaults) == 1


async def test_end_users_reach_only_their_own_methods(http, org):  # §9 48
    alice = bearer(iam_token(owner=org.name, name="alice"))
    bob = bearer(iam_token(owner=org.name, name="bob", sub="sub-2"))
    status, mine, _ = await create(http, alice, {"card": CARD})  # pinned to herself
    assert status == 201 and mine["customerId"] == f"{org.name}/alice"
    status, body, _ = await create(http, alice, {"customerId": f"{org.name}/bob",
                                                 "card": CARD})
    assert status == 403
    theirs = (await create(http, bob, {"card": CARD}))[1]
    assert [m["id"] for m in await listed(http, alice)] == [mine["id"]]
    assert [m["id"] for m in await listed(http, alice, customerId=f"{org.name}/bob")] == [
        mine["id"]]
    path = f"/api/v1/billing/payment-methods/{theirs['id']}"
    for method, body in (("GET", None), ("PATCH", {"metadata": {"x": 1}}), ("DELETE", None)):
        status, reply, _ = await request(http, method, path, alice, body)
        assert (status, reply["error"]["message"]) == (404, "payment method not found")
    status, _, _ = await post(http, f"/customers/{org.name}/bob/default-payment-method",
                              {"paymentMethodId": theirs["id"]}, alice)
    assert status == 404
    status, _, _ = await get(http, f"/payment-methods/{theirs['id']}", bob)
    assert status == 200
    status, _, _ = await get(http, "/payment-methods", org.auth("pk_test"))
    assert status == 403  # publishable keys are refused (§0.1)


async def test_modes_and_organizations_are_apart(http, org, make_org):
    user = new_user()
    method = await add_payment_method(http, org, user)
    assert await has_payment_method(http, org, user)  # the ledger knows of it by now
    other = await make_org()
    for auth in (org.auth("sk_live"), other.auth()):
        status, _, _ = await get(http, f"/payment-methods/{method['id']}", auth)
        assert status == 404
        assert await listed(http, auth, customerId=user) == []
        _, status_body, _ = await get(http, "/status", auth, user=user)
        assert status_body["hasPaymentMethod"] is False


async def test_idempotent_create(http, org):
    user = new_user()
    headers = {**org.auth(), "Idempotency-Key": f"pm-{user}"}
    first = await create(http, headers, {"customerId": user, "providerRef": "tok_visa"})
    second = await create(http, headers, {"customerId": user, "providerRef": "tok_visa"})
    assert first[0] == second[0] == 201 and first[1] == second[1]
    assert second[2].get("Idempotent-Replayed") == "true"
    assert len(await listed(http, org.auth(), customerId=user)) == 1


async def test_the_ledger_sees_payment_methods(http, org):
    user = new_user()
    _, status_body, _ = await get(http, "/status", org.auth(), user=user)
    assert status_body["hasPaymentMethod"] is False
    # Card details alone: a method, not a verified one (no provider saw it).
    await create(http, org.auth(), {"customerId": user, "card": CARD})
    assert await has_payment_method(http, org, user) is True
    status, body, _ = await post(http, "/credit", {"user": user}, org.auth())
    assert (status, body["error"]["message"]) == (
        403, "a verified payment method is required before claiming starter credit")
    await add_payment_method(http, org, user)  # the provider accepted this one
    status, body, _ = await post(http, "/credit", {"user": user}, org.auth())
    assert (status, body["amount"]) == (201, 500)
    # A detached method no longer counts.
    other = new_user()
    method = await add_payment_method(http, org, other)
    assert await has_payment_method(http, org, other) is True
    await request(http, "DELETE", f"/api/v1/billing/payment-methods/{method['id']}",
                  org.auth())
    assert await has_payment_method(http, org, other, expected=False) is False


async def test_events_reach_the_stream(http, org, nc):
    """Committed with the change, then published to `billing.events.<type>` by the relay."""
    sub = await nc.subscribe("billing.events.payment_method.*")
    try:
        method = await add_payment_method(http, org, new_user())
        await request(http, "DELETE", f"/api/v1/billing/payment-methods/{method['id']}",
                      org.auth())
        seen = []
        while len(seen) < 2:
            msg = await sub.next_msg(timeout=10)
            event = json.loads(msg.data)
            if event["objectId"] == method["id"]:
                seen.append((msg.subject, event["type"], event["livemode"]))
        assert seen == [
            ("billing.events.payment_method.attached", "payment_method.attached", False),
            ("billing.events.payment_method.detached", "payment_method.detached", False)]
    finally:
        await sub.unsubscribe()
