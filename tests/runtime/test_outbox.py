"""The transactional outbox against real PostgreSQL and NATS JetStream: events commit with
their transaction, a relay publishes them once (with the event id as `Nats-Msg-Id`), and
whatever a stopped relay left behind goes out when one starts again."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import asyncpg
import msgspec
import pytest
from nats.js.api import DeliverPolicy

from contracts import events
from services.runtime.outbox import OutboxRelay, add_event, nudge
from tests.support import eventually, pending, received, stream_ready


async def add(pool: asyncpg.Pool, schema: str, event_type: str, n: int = 0) -> str:
    async with pool.acquire() as conn, conn.transaction():
        return await add_event(conn, schema, type=event_type, object_type="test",
                               object_id=f"obj_{n}", org_id="org_1", livemode=False,
                               customer_id="acme/alice", data={"n": n})


async def test_committed_events_are_published_and_rolled_back_ones_never(
        make_relay, js, pool, schema, event_type):
    # Slow polling: only the nudge of the event's own process can wake the relay in time.
    await make_relay(poll_interval=30)
    await stream_ready(js)
    sub = await js.subscribe(events.subject(event_type), ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL)
    await asyncio.sleep(0.2)  # the relay is idle, waiting for a nudge

    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await add_event(conn, schema, type=event_type, object_type="test",
                            object_id="obj_gone", org_id="org_1", livemode=False,
                            customer_id=None, data={"n": -1})
            raise RuntimeError("the state change failed")
    started = time.monotonic()
    event_id = await add(pool, schema, event_type, 1)

    msg = await sub.next_msg(timeout=5)
    assert time.monotonic() - started < 2  # nudged by add_event, not woken by the 30 s poll
    assert msg.headers["Nats-Msg-Id"] == event_id
    body = msgspec.json.decode(msg.data)
    created = body.pop("created")
    assert created.endswith("Z")
    assert body == {"id": event_id, "type": event_type, "objectType": "test",
                    "objectId": "obj_1", "customerId": "acme/alice", "orgId": "org_1",
                    "livemode": False, "data": {"n": 1}}
    # Nothing else on the subject: the rolled-back event does not even exist.
    assert await received(sub, timeout=0.5) == []
    rows = await pool.fetch(f"select id, published_at from {schema}.outbox")
    assert [r["id"] for r in rows] == [event_id] and rows[0]["published_at"] is not None


async def test_a_relay_started_later_publishes_what_was_left(make_relay, js, pool, schema,
                                                             event_type):
    first = await make_relay()
    await stream_ready(js)
    await first.stop()
    ids = [await add(pool, schema, event_type, n) for n in range(5)]
    await asyncio.sleep(0.3)
    assert await pending(pool, schema) == 5  # nobody relays while it is stopped

    sub = await js.subscribe(events.subject(event_type), ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL)
    await make_relay()
    msgs = await received(sub, timeout=2)
    assert [m.headers["Nats-Msg-Id"] for m in msgs] == ids  # all of them, in order
    assert await pending(pool, schema) == 0


async def test_publishing_an_event_again_is_dropped_by_jetstream(make_relay, js, pool, schema,
                                                                 event_type):
    relay = await make_relay(poll_interval=0.05)
    await stream_ready(js)
    sub = await js.subscribe(events.subject(event_type), ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL)
    event_id = await add(pool, schema, event_type)
    assert len(await received(sub, timeout=1)) == 1

    # A relay that died after the ack but before marking the row publishes it again.
    await pool.execute(f"update {schema}.outbox set published_at = null where id = $1",
                       event_id)
    for _ in range(100):
        if await pending(pool, schema) == 0:
            break
        await asyncio.sleep(0.05)
    assert await pending(pool, schema) == 0 and relay.published == 2
    assert await received(sub, timeout=0.5) == []  # JetStream dropped the copy
    payload = await pool.fetchval(f"select payload from {schema}.outbox where id = $1",
                                  event_id)
    ack = await js.publish(events.subject(event_type), payload,
                           headers={"Nats-Msg-Id": event_id})
    assert ack.duplicate


async def test_replicas_share_the_work_without_doing_it_twice(make_relay, js, pool, schema,
                                                              event_type):
    relays = [await make_relay(batch_size=20), await make_relay(batch_size=20)]
    await stream_ready(js)
    sub = await js.subscribe(events.subject(event_type), ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL)
    async with pool.acquire() as conn, conn.transaction():
        for n in range(300):
            await add_event(conn, schema, type=event_type, object_type="test",
                            object_id=f"obj_{n}", org_id="org_1", livemode=True,
                            customer_id=None, data={"n": n})
    msgs = await received(sub, timeout=2)
    assert len({m.headers["Nats-Msg-Id"] for m in msgs}) == len(msgs) == 300
    assert await pending(pool, schema) == 0
    # Every row was published by exactly one of them (SKIP LOCKED).
    assert sum(r.published for r in relays) == 300


async def test_events_another_process_added_are_published_by_the_poll(
        make_relay, schema, pool, js, event_type):
    await make_relay(poll_interval=0.05)
    await stream_ready(js)
    sub = await js.subscribe(events.subject(event_type), ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL)
    await asyncio.sleep(0.3)  # no nudge is pending
    # Written as another process would: no nudge reaches this relay.
    await pool.execute(f"insert into {schema}.outbox (id, type, org_id, livemode, payload)"
                       " values ('evt_elsewhere', $1, 'org_1', false, '{}')", event_type)
    msg = await sub.next_msg(timeout=5)
    assert msg.headers["Nats-Msg-Id"] == "evt_elsewhere"


async def test_a_nudge_after_the_commit_is_one_prompt_look(make_relay, schema, pool, js,
                                                            event_type):
    await make_relay(poll_interval=30)
    await stream_ready(js)
    sub = await js.subscribe(events.subject(event_type), ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL)
    await asyncio.sleep(0.2)  # the relay is idle, waiting for a nudge
    # Added by a statement of the caller's own, which nudges once it has committed.
    await pool.execute(f"insert into {schema}.outbox (id, type, org_id, livemode, payload)"
                       " values ('evt_committed', $1, 'org_1', false, '{}')", event_type)
    started = time.monotonic()
    nudge(schema, committed=True)
    msg = await sub.next_msg(timeout=5)
    assert msg.headers["Nats-Msg-Id"] == "evt_committed"
    assert time.monotonic() - started < 2  # not the 30 s poll


async def test_published_rows_are_pruned_after_the_retention(pool, schema, nats_url,
                                                             event_type):
    old, recent, unpublished = [await add(pool, schema, event_type, n) for n in range(3)]
    await pool.execute(f"update {schema}.outbox set published_at = now() - $2::interval"
                       " where id = $1", old, timedelta(days=8))
    await pool.execute(f"update {schema}.outbox set published_at = now() - $2::interval"
                       " where id = $1", recent, timedelta(hours=1))
    relay = OutboxRelay(schema, pool, [nats_url])  # 7 days, not started
    assert await relay.prune() == 1
    rows = await pool.fetch(f"select id from {schema}.outbox order by seq")
    assert [r["id"] for r in rows] == [recent, unpublished]


async def test_the_stream_is_created_once_with_a_duplicate_window(make_relay, js):
    relay = await make_relay()
    await stream_ready(js)
    await relay.ensure_stream()  # again: nothing happens
    info = await js.stream_info(events.STREAM)
    assert info.config.subjects == ["billing.events.>"]
    assert info.config.duplicate_window == 120


@pytest.mark.parametrize("bad", ["happened", "Spend.Alert", "a.*", "a.>", "a..b", "a b.c"])
async def test_event_types_must_be_subject_tokens(pool, schema, bad):
    async with pool.acquire() as conn:
        with pytest.raises(ValueError):
            await add_event(conn, schema, type=bad, object_type="test", object_id="x",
                            org_id="org_1", livemode=False, customer_id=None, data={})


async def test_a_service_publishes_only_its_own_kinds_of_event(pool):
    # Payments' event log reads the other services' kinds from the stream: an event of a
    # kind a service does not own would be published and never logged.
    async with pool.acquire() as conn:
        with pytest.raises(ValueError, match="invoicing does not publish 'topup.succeeded'"):
            await add_event(conn, "invoicing", type="topup.succeeded", object_type="topup",
                            object_id="tu_1", org_id="org_1", livemode=False,
                            customer_id=None, data={})
    assert events.publisher("customer_balance.transaction.created") == "invoicing"
    assert events.subject("topup.>") not in events.published_by_others("payments")
    assert events.subject("invoice.>") in events.published_by_others("payments")


def test_every_service_is_a_publisher():
    from services.specs import NAMES

    assert set(events.SERVICES) == set(NAMES)
    assert set(events.PUBLISHERS.values()) <= set(NAMES)


async def test_the_published_events_are_logged_with_their_mark(make_relay, js, pool, schema,
                                                               event_type):
    logged: list[tuple[list[str], bool]] = []
    committed: list[str] = []

    async def log_published(conn, rows):
        marked = await conn.fetchval(
            f"select bool_and(published_at is not null) from {schema}.outbox"
            " where id = any($1::text[])", [r["id"] for r in rows])
        logged.append(([r["id"] for r in rows], marked))
        return lambda: committed.extend(r["id"] for r in rows)

    await make_relay(log_published=log_published)
    await stream_ready(js)
    first = await add(pool, schema, event_type, 1)
    second = await add(pool, schema, event_type, 2)

    async def read():
        return committed

    assert await eventually(read, lambda ids: len(ids) == 2) == [first, second]
    # In the relay's transaction, marked published: a relay that dies before its commit
    # publishes and logs them again (the log keeps an event once).
    assert [ids for ids, _ in logged] in ([[first, second]], [[first], [second]])
    assert all(marked for _, marked in logged)
