"""Setup intents through the gateway (payments.md §3.7, §9 31–35): the provider saves the
method, which is verified afterwards."""

from __future__ import annotations

from tests.support import add_payment_method, get, new_user, post

CARD = {"brand": "visa", "last4": "4242", "expMonth": 12, "expYear": 2028}


async def setup_intent(http, org, body, key="sk_test"):
    return await post(http, "/setup-intents", body, org.auth(key))


async def test_create_and_get(http, org):  # §9 31, 32
    status, body, _ = await setup_intent(http, org, {})
    assert (status, body["error"]["message"]) == (400, "customerId is required")
    status, body, _ = await setup_intent(http, org, {"customerId": "cus_1", "usage": "x"})
    assert (status, body["error"]["message"]) == (400, "usage must be on_session or off_session")
    status, created, _ = await setup_intent(http, org, {"customerId": "cus_1"})
    assert status == 201
    assert {k: created[k] for k in ("customerId", "status", "usage", "livemode")} == {
        "customerId": "cus_1", "status": "requires_payment_method", "usage": "off_session",
        "livemode": False}
    assert created["id"].startswith("seti_") and created["created"]
    status, got, _ = await get(http, f"/setup-intents/{created['id']}", org.auth())
    assert (status, got) == (200, created)
    status, body, _ = await get(http, "/setup-intents/seti_nope", org.auth())
    assert (status, body["error"]["message"]) == (404, "setup intent not found")
    status, _, _ = await get(http, f"/setup-intents/{created['id']}", org.auth("sk_live"))
    assert status == 404


async def test_confirm_verifies_the_method(http, org, pool):  # §9 33, §3.7 DO
    user = new_user()
    _, method, _ = await post(http, "/payment-methods", {"customerId": user, "card": CARD},
                              org.auth())
    _, created, _ = await setup_intent(http, org, {"customerId": user})
    path = f"/setup-intents/{created['id']}/confirm"
    status, body, _ = await post(http, path, None, org.auth())
    assert (status, body["error"]["message"]) == (400, "payment method is required to confirm")
    status, body, _ = await post(http, path, {"paymentMethodId": method["id"]}, org.auth())
    assert (status, body["status"], body["providerRef"]) == (200, "succeeded", "internal")
    status, body, _ = await post(http, path, {}, org.auth())
    assert (status, body["error"]["message"]) == (
        409, "cannot confirm setup intent in status succeeded")
    # With a provider token the provider saves it and the method counts as verified.
    vaulted = await add_payment_method(http, org, user)
    _, created, _ = await setup_intent(http, org, {"customerId": user,
                                                   "paymentMethodId": vaulted["id"]})
    status, body, _ = await post(http, f"/setup-intents/{created['id']}/confirm", None,
                                 org.auth())
    assert (status, body["status"]) == (200, "succeeded")
    _, after, _ = await get(http, f"/payment-methods/{vaulted['id']}", org.auth())
    assert after["metadata"]["verified"] is True and after["providerRef"] == vaulted[
        "providerRef"]
    # Announced, with the method as it now is (the ledger keeps its copy from the events).
    announced = await pool.fetch(
        "select type, convert_from(payload, 'utf8')::jsonb->'data'->'metadata' as metadata"
        " from payments.outbox where convert_from(payload, 'utf8')::jsonb->>'objectId' = $1"
        " order by seq", vaulted["id"])
    assert [(r["type"], r["metadata"]) for r in announced] == [
        ("payment_method.attached", {"verified": True}),
        ("payment_method.updated", {"verified": True})]


async def test_confirm_with_another_customers_method(http, org):
    other = await add_payment_method(http, org, new_user())
    _, created, _ = await setup_intent(http, org, {"customerId": new_user(),
                                                   "paymentMethodId": other["id"]})
    status, body, _ = await post(http, f"/setup-intents/{created['id']}/confirm", None,
                                 org.auth())
    assert (status, body["error"]["message"]) == (400, "payment method not found")


async def test_cancel(http, org):  # §9 35
    _, created, _ = await setup_intent(http, org, {"customerId": "cus_2"})
    path = f"/setup-intents/{created['id']}/cancel"
    status, body, _ = await post(http, path, {"cancellationReason": "abandoned"}, org.auth())
    assert (status, body["status"], body["cancellationReason"]) == (200, "canceled",
                                                                   "abandoned")
    status, body, _ = await post(http, path, None, org.auth())
    assert (status, body["error"]["message"]) == (
        409, "cannot cancel setup intent in status canceled")
