"""The ledger's own knowledge of payment methods: `hasPaymentMethod` in the billing status
comes from payments' events (`billing.events.payment_method.*`), kept in
`ledger.payment_methods`, not from a question to payments on every status check."""

from __future__ import annotations

import asyncio

import msgspec

from contracts import events
from contracts.ids import new_id, now, rfc3339
from contracts.ledger import STATUS_GET, StatusQuery
from contracts.payments import (
    PAYMENT_METHOD_ATTACHED,
    PAYMENT_METHOD_DETACHED,
    PAYMENT_METHOD_UPDATED,
    PaymentMethod,
)
from services.ledger.payment_methods.consumer import PaymentMethodEvents
from tests.support import (
    Bus,
    add_payment_method,
    eventually,
    get,
    has_payment_method,
    new_user,
    request,
    service,
    service_down,
)

_encode = msgspec.json.Encoder().encode


def method_event(type: str, bus: Bus, method_id: str, customer: str, *,
                 verified: bool = False) -> events.Event:
    """A payment-method event as payments announces it."""
    method = PaymentMethod(id=method_id, customerId=customer, type="card", isDefault=False,
                           created=rfc3339(now()), livemode=bus.livemode,
                           metadata={"verified": True} if verified else {})
    return events.Event(id=new_id("evt_"), type=type, objectType="payment_method",
                        objectId=method_id, customerId=customer, orgId=bus.org_id,
                        livemode=bus.livemode, created=rfc3339(now()), data=method)


async def announce(js, event: events.Event, *, again: bool = False) -> int:
    """Publish `event` as payments' outbox relay does; its stream sequence. `again`: a copy
    under another message id, as a relay sends one after JetStream's duplicate window."""
    ack = await js.publish(events.subject(event.type), _encode(event),
                           headers={"Nats-Msg-Id": event.id + ("-again" if again else "")})
    return ack.seq


async def applied(js, seq: int) -> None:
    """Once the ledger has written the events up to `seq` (and acknowledged them)."""
    for _ in range(500):
        info = await js.consumer_info(events.STREAM, PaymentMethodEvents.durable)
        if info.ack_floor.stream_seq >= seq:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the ledger never acknowledged event {seq}")


async def status(bus: Bus, user: str) -> bool:
    return (await bus.ok(STATUS_GET.subject, StatusQuery(user=user)))["hasPaymentMethod"]


async def row(pool, bus: Bus, method_id: str):
    return await pool.fetchrow(
        "select customer_id, verified, detached, updated_at from ledger.payment_methods"
        " where org_id = $1 and livemode = $2 and id = $3", bus.org_id, bus.livemode,
        method_id)


async def test_attach_then_detach_through_payments(http, org, pool):
    user = new_user()
    method = await add_payment_method(http, org, user)
    assert await has_payment_method(http, org, user) is True
    kept = await pool.fetchrow("select customer_id, verified, detached from"
                               " ledger.payment_methods where id = $1", method["id"])
    assert dict(kept) == {"customer_id": user, "verified": True, "detached": False}
    await request(http, "DELETE", f"/api/v1/billing/payment-methods/{method['id']}",
                  org.auth())
    assert await has_payment_method(http, org, user, expected=False) is False


async def test_a_replayed_event_changes_nothing(nc, js, pool):
    bus, user = Bus(nc), new_user()
    a, b = new_id("pm_"), new_id("pm_")
    attach_a = method_event(PAYMENT_METHOD_ATTACHED, bus, a, user)
    detach_a = method_event(PAYMENT_METHOD_DETACHED, bus, a, user)
    attach_b = method_event(PAYMENT_METHOD_ATTACHED, bus, b, user)
    for event in (attach_a, attach_b, detach_a):
        seq = await announce(js, event)
    await applied(js, seq)
    assert await status(bus, user) is True  # B is live
    before = await row(pool, bus, a)
    # Every one of them again (a relay publishing after the duplicate window), some twice:
    # A stays detached, B counts once.
    for event in (attach_a, detach_a, attach_b, detach_a, attach_a):
        seq = await announce(js, event, again=True)
    await applied(js, seq)
    assert await row(pool, bus, a) == before  # not even written again
    assert await status(bus, user) is True
    await applied(js, await announce(js, method_event(PAYMENT_METHOD_DETACHED, bus, b, user)))
    assert await status(bus, user) is False  # one detach of B is enough: nothing counted twice
    await applied(js, await announce(js, attach_b, again=True))
    assert await status(bus, user) is False


async def test_a_late_attach_does_not_bring_a_detached_method_back(nc, js, pool):
    bus, user, method = Bus(nc), new_user(), new_id("pm_")
    # Events of one method can arrive out of order (a publish refused, then sent again).
    await announce(js, method_event(PAYMENT_METHOD_DETACHED, bus, method, user))
    await applied(js, await announce(js, method_event(PAYMENT_METHOD_ATTACHED, bus, method,
                                                      user)))
    assert await status(bus, user) is False
    assert (await row(pool, bus, method))["detached"] is True


async def test_a_method_verified_later_stays_verified(nc, js, pool):
    bus, user, method = Bus(nc), new_user(), new_id("pm_")
    attached = method_event(PAYMENT_METHOD_ATTACHED, bus, method, user)
    await applied(js, await announce(js, attached))
    assert (await row(pool, bus, method))["verified"] is False
    await applied(js, await announce(js, method_event(PAYMENT_METHOD_UPDATED, bus, method,
                                                      user, verified=True)))
    assert (await row(pool, bus, method))["verified"] is True
    await applied(js, await announce(js, attached, again=True))  # the unverified one, late
    assert (await row(pool, bus, method))["verified"] is True
    assert await status(bus, user) is True


async def test_another_organizations_or_modes_method_does_not_count(nc, js):
    live, user = Bus(nc, livemode=True), new_user()
    await applied(js, await announce(js, method_event(PAYMENT_METHOD_ATTACHED, live,
                                                      new_id("pm_"), user)))
    assert await status(live, user) is True
    assert await status(Bus(nc, live.org_id, livemode=False), user) is False
    assert await status(Bus(nc, livemode=True), user) is False  # another organization
    assert await status(live, new_user()) is False  # another customer


async def test_an_unreadable_event_is_dropped(nc, js):
    bus, user = Bus(nc), new_user()
    ack = await js.publish(events.subject(PAYMENT_METHOD_ATTACHED), b'{"not": "an event"}')
    seq = await announce(js, method_event(PAYMENT_METHOD_ATTACHED, bus, new_id("pm_"), user))
    await applied(js, seq)
    assert seq > ack.seq and await status(bus, user) is True  # the next one got through


async def test_the_knowledge_survives_a_ledger_restart(http, org, platform):
    before, during = new_user(), new_user()
    await add_payment_method(http, org, before)
    assert await has_payment_method(http, org, before) is True
    async with service_down(platform, "ledger"):
        await add_payment_method(http, org, during)  # read when the ledger is back
    async with service_down(platform, "payments"):  # only the ledger's own table answers
        for user in (before, during):
            assert await has_payment_method(http, org, user) is True
        _, body, _ = await get(http, "/status", org.auth(), user=new_user())
        assert body["hasPaymentMethod"] is False


async def test_payments_is_asked_until_the_ledger_has_caught_up(http, org, platform, pool):
    """While the ledger's copy may be behind (here: its reader stopped), payments answers."""
    reader = service(platform, "ledger").ctx.state.payment_methods
    user = new_user()
    await reader.stop()
    try:
        method = await add_payment_method(http, org, user)
        _, body, _ = await get(http, "/status", org.auth(), user=user)
        assert body["hasPaymentMethod"] is True
        assert await pool.fetchval("select count(*) from ledger.payment_methods"
                                   " where id = $1", method["id"]) == 0
    finally:
        await reader.start()
    async def caught_up() -> bool:
        return reader.current and await pool.fetchval(
            "select count(*) from ledger.payment_methods where id = $1", method["id"]) == 1

    assert await eventually(caught_up, bool, timeout=2.0, every=0.01)
    async with service_down(platform, "payments"):
        assert await has_payment_method(http, org, user) is True
