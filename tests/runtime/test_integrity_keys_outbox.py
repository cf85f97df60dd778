"""The outbox with several relays (issue 8, "Also: Outbox"): one publishes at a time, so the
events go out in outbox order, and rows naming their own subject are published there."""

from __future__ import annotations

import secrets

import msgspec
from nats.js.api import DeliverPolicy

from contracts import events
from services.runtime.outbox import add_event, add_messages
from tests.support import pending, received, stream_ready


async def test_replicas_publish_in_outbox_order(make_relay, js, pool, schema, event_type):
    relays = [await make_relay(batch_size=3) for _ in range(4)]
    await stream_ready(js)
    sub = await js.subscribe(events.subject(event_type), ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL)
    ids = []
    for chunk in range(30):  # commits the relays race for
        async with pool.acquire() as conn, conn.transaction():
            for n in range(10):
                ids.append(await add_event(
                    conn, schema, type=event_type, object_type="test", object_id="obj_1",
                    org_id="org_1", livemode=False, customer_id=None,
                    data={"n": chunk * 10 + n}))
    msgs = await received(sub, timeout=2)
    assert [m.headers["Nats-Msg-Id"] for m in msgs] == ids
    assert sum(r.published for r in relays) == 300 and await pending(pool, schema) == 0


async def test_a_message_goes_to_its_own_subject(make_relay, js, pool, schema):
    await make_relay()
    await stream_ready(js)
    subject = events.subject(f"test_{secrets.token_hex(4)}.raw")  # a subject the stream has
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    async with pool.acquire() as conn, conn.transaction():
        await add_messages(conn, schema, type="test.raw", messages=[
            (subject, "msg-1", "org_1", False, b'{"n":1}'),
            (subject, "msg-2", "org_1", True, b'{"n":2}')])
    msgs = await received(sub, timeout=1)
    assert [(m.headers["Nats-Msg-Id"], msgspec.json.decode(m.data)) for m in msgs] == [
        ("msg-1", {"n": 1}), ("msg-2", {"n": 2})]
