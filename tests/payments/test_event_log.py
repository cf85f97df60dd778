"""The billing event log (payments.md §2.8, §6.1, §6.2): every event published on
`billing.events.>` — payments' own as its outbox relay publishes them, other services' read
from the stream — is listed once, newest first, filtered, and only to its organization and mode."""

from __future__ import annotations

import secrets

import msgspec
import pytest
from nats.js.api import DeliverPolicy

from contracts import events
from contracts.ids import new_id, now, rfc3339
from tests.support import (
    add_payment_method,
    eventually,
    get,
    new_user,
    org_id_of,
    received,
)


async def publish(js, org_id: str, type: str = "invoice.paid", *, livemode: bool = False,
                  object_id: str | None = None, event_id: str | None = None,
                  msg_id: str | None = None, **fields) -> str:
    """An event as another service's outbox relay publishes it; returns its id."""
    event_id = event_id or new_id("evt_")
    body = events.Event(id=event_id, type=type, objectType=type.split(".")[0],
                        objectId=object_id or new_id("in_"), orgId=org_id, livemode=livemode,
                        created=rfc3339(now()), data=fields.pop("data", {"amount": 1200}),
                        **fields)
    await js.publish(events.subject(type), msgspec.json.encode(body),
                     headers={"Nats-Msg-Id": msg_id or event_id})
    return event_id


async def listed(http, org, key="sk_test", **query):
    status, body, _ = await get(http, "/events", org.auth(key), **query)
    assert status == 200, body
    return body


async def logged(http, org, expected: int, key="sk_test", **query):
    """The list once it holds `expected` events (the log is written a moment after the
    event is published)."""
    return await eventually(lambda: listed(http, org, key, **query),
                            lambda body: len(body) >= expected)


async def test_payments_own_events_are_logged(http, org):
    user = new_user()
    method = await add_payment_method(http, org, user)
    [event] = await logged(http, org, 1, objectId=method["id"])
    assert event["type"] == "payment_method.attached"
    assert (event["objectType"], event["customerId"], event["livemode"]) == (
        "payment_method", user, False)
    assert event["data"]["id"] == method["id"] and event["pending"] is False
    assert event["id"].startswith("evt_") and event["created"].endswith("Z")
    status, one, _ = await get(http, f"/events/{event['id']}", org.auth())
    assert (status, one) == (200, event)


async def test_other_services_events_are_logged_once(http, org, platform, js):
    org_id = await org_id_of(platform, org)
    first = await publish(js, org_id, object_id="in_1", customerId="hanzo/bob",
                          previousData={"status": "open"})
    # The same event again, past the stream's duplicate window (another message id).
    await publish(js, org_id, object_id="in_1", event_id=first, msg_id=secrets.token_hex(4))
    second = await publish(js, org_id, "invoice.finalized", object_id="in_2")
    body = await logged(http, org, 2)
    assert [e["id"] for e in body] == [second, first]  # newest first
    assert body[1] == {"id": first, "type": "invoice.paid", "objectType": "invoice",
                       "objectId": "in_1", "customerId": "hanzo/bob",
                       "data": {"amount": 1200}, "previousData": {"status": "open"},
                       "livemode": False, "pending": False, "created": body[1]["created"]}
    assert "orgId" not in body[0]


async def test_payments_own_events_go_out_once_and_are_logged_once(http, org, platform, js):
    # Logged as payments' relay publishes them, not read back from the stream: an event of
    # a payments kind that merely appears on the stream (published by no relay of payments')
    # is not logged, while the other services' events still are; the stream holds every
    # event of payments' for other readers.
    user = new_user()
    org_id = await org_id_of(platform, org)
    method = await add_payment_method(http, org, user)
    [event] = await logged(http, org, 1, objectId=method["id"])
    stray = await publish(js, org_id, event["type"], object_id=method["id"])
    marker = await publish(js, org_id, object_id="in_after_the_stray")  # invoice.paid
    sub = await js.subscribe(events.subject(event["type"]), ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL)
    on_stream = [m for m in await received(sub, timeout=1.0) if method["id"].encode() in m.data]
    assert len(on_stream) == 2  # the relay's, then the stray one
    # The log reads the stream in order: once the later invoice event is in, the stray
    # payments event would be too, had the log read it.
    assert [e["id"] for e in await logged(http, org, 1, objectId="in_after_the_stray")] == [
        marker]
    assert [e["id"] for e in await listed(http, org, objectId=method["id"])] == [event["id"]]
    assert stray != event["id"]


async def test_filters_and_pages(http, org, platform, js):
    org_id = await org_id_of(platform, org)
    ids = [await publish(js, org_id, t, object_id=o, customerId=c) for t, o, c in (
        ("invoice.paid", "in_a", "hanzo/a"), ("invoice.paid", "in_b", "hanzo/b"),
        ("subscription.created", "sub_a", "hanzo/a"))]
    await logged(http, org, 3)
    assert [e["id"] for e in await listed(http, org, type="invoice.paid")] == ids[1::-1]
    assert [e["id"] for e in await listed(http, org, objectId="in_a")] == ids[:1]
    assert [e["id"] for e in await listed(http, org, objectType="subscription")] == ids[2:]
    assert [e["id"] for e in await listed(http, org, customerId="hanzo/a")] == [ids[2], ids[0]]
    assert [e["id"] for e in await listed(http, org, limit=2)] == [ids[2], ids[1]]
    assert [e["id"] for e in await listed(http, org, limit=2, startingAfter=ids[1])] == ids[:1]
    assert await listed(http, org, type="invoice.voided") == []


async def test_at_most_100_events(http, org, platform, js):
    org_id = await org_id_of(platform, org)
    ids = [await publish(js, org_id) for _ in range(105)]

    async def pages():
        first = await listed(http, org, limit=1000)
        return first, (await listed(http, org, startingAfter=first[-1]["id"]) if first else [])

    first, second = await eventually(pages, lambda p: len(p[1]) == 5)
    assert (len(first), len(second)) == (100, 5)
    assert {e["id"] for e in first + second} == set(ids)


async def test_organizations_and_modes_are_apart(http, org, make_org, platform, js):
    other = await make_org()
    ours, theirs = await org_id_of(platform, org), await org_id_of(platform, other)
    live = await publish(js, ours, livemode=True)
    test = await publish(js, ours)
    foreign = await publish(js, theirs)
    assert [e["id"] for e in await logged(http, org, 1, key="sk_live")] == [live]
    assert [e["id"] for e in await logged(http, org, 1)] == [test]
    for key, event_id in (("sk_test", live), ("sk_live", test), ("sk_test", foreign),
                          ("sk_test", "evt_nothing")):
        status, body, _ = await get(http, f"/events/{event_id}", org.auth(key))
        assert (status, body["error"]["message"]) == (404, "billing event not found")


@pytest.mark.parametrize(("query", "message"), [
    ({"objectId": "x" * 300}, "objectId: at most 255 characters"),
    ({"type": "x" * 65}, "type: at most 64 characters"),
])
async def test_bad_queries_are_refused(http, org, query, message):
    status, body, _ = await get(http, "/events", org.auth(), **query)
    assert (status, body["error"]["message"]) == (400, message)


async def test_the_log_is_for_admins(http, org):
    status, body, _ = await get(http, "/events", org.auth("pk_test"))
    assert (status, body["error"]["message"]) == (403, "Token doesn't support this scope")


async def test_an_unreadable_message_is_dropped_and_the_log_goes_on(http, org, platform, js):
    await js.publish(events.subject("invoice.paid"), b"{not json",
                     headers={"Nats-Msg-Id": secrets.token_hex(4)})
    event_id = await publish(js, await org_id_of(platform, org))
    assert [e["id"] for e in await logged(http, org, 1)] == [event_id]
