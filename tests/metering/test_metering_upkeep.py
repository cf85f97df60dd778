"""What metering keeps and for how long (monthly event partitions, the dedup window), the
per-meter usage invoicing reads, and the batch rules shared by both ways in."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from contracts import Actor, meter_events
from contracts.errors import Failure
from contracts.metering import (
    USAGE_AGGREGATE,
    MeterEventInput,
    UsageAggregate,
    UsageAggregateParams,
)
from services.gateway import store as gateway_store
from services.metering import domain, store
from services.metering.handlers import ExpiredKeySweeper, upkeep
from tests import support
from tests.support import make_meter, record


async def _record(http, org, events):
    status, body, _ = await record(http, org, events)
    assert status == 201, body
    return body["events"]


async def _partitions(metering) -> set[str]:
    rows = await metering.pool.fetch(
        "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid"
        " where i.inhparent = 'metering.events'::regclass")
    return {r["relname"] for r in rows}


async def test_monthly_partitions_are_made_ahead(metering):
    await upkeep(metering)
    month = domain.start_of_month(datetime.now(UTC))
    oldest_accepted = domain.start_of_month(datetime.now(UTC) - meter_events.BACKDATE)
    expected = {oldest_accepted, month}
    for _ in range(2):
        month = domain.next_month(month)
        expected.add(month)
    assert {f"events_{m:%Y_%m}" for m in expected} <= await _partitions(metering)


async def test_old_months_are_dropped_whole(metering):
    await store.ensure_partitions(metering.pool, datetime(2020, 1, 1, tzinfo=UTC), 2)
    dropped = await store.drop_partitions_before(metering.pool,
                                                 datetime(2020, 2, 1, tzinfo=UTC))
    assert dropped == ["events_2020_01"]
    assert "events_2020_02" in await _partitions(metering)
    await store.drop_partitions_before(metering.pool, datetime(2020, 3, 1, tzinfo=UTC))


async def test_idempotency_keys_are_kept_35_days_then_forgotten(http, org, metering):
    meter_id = await make_meter(http, org, "calls")
    await _record(http, org, [{"meterId": meter_id, "userId": "a", "value": 1,
                               "idempotency": key} for key in ("recent", "expired")])
    await metering.pool.execute(
        "update metering.event_keys set created_at = now() - make_interval(days => d)"
        " from (values ('recent', 35), ('expired', 37)) as age(k, d) where key = age.k")
    await upkeep(metering)
    again = await _record(http, org, [{"meterId": meter_id, "userId": "a", "value": 1,
                                       "idempotency": key} for key in ("recent", "expired")])
    assert [e["status"] for e in again] == ["duplicate", "created"]


async def test_expired_keys_are_swept_a_share_at_a_time(metering):
    org = f"org_sweep_{datetime.now(UTC).timestamp()}"
    await metering.pool.execute(
        "insert into metering.event_keys (key_hash, org_id, livemode, key, event_id,"
        " created_at) select gen_random_uuid(), $1, false, 'k' || i, 'ev' || i,"
        " now() - make_interval(days => case when i % 10 = 0 then 1 else 40 end)"
        " from generate_series(1, 6000) as i", org)

    async def left() -> tuple[int, int]:
        row = await metering.pool.fetchrow(
            "select count(*) filter (where created_at > now() - interval '2 days'),"
            " count(*) filter (where created_at < now() - interval '2 days')"
            " from metering.event_keys where org_id = $1", org)
        return row[0], row[1]

    sweeper = ExpiredKeySweeper(chunk_blocks=4)
    cutoff = datetime.now(UTC) - domain.DEDUP_RETENTION
    first = await sweeper.sweep(metering.pool, cutoff, share=0.25)
    recent, expired = await left()
    assert 0 < first < 5400 and recent == 600 and expired == 5400 - first
    passes = 1
    while sweeper.next_block != 0:  # the rest of the pass, a quarter at a time
        await sweeper.sweep(metering.pool, cutoff, share=0.25)
        passes += 1
    assert await left() == (600, 0) and 4 <= passes <= 5


async def test_usage_by_meter_for_invoices(http, org, metering):
    tokens = await make_meter(http, org, "tokens")
    gauge = await make_meter(http, org, "gauge", "last")
    idle = await make_meter(http, org, "idle")
    backfill = await make_meter(http, org, "api-usage")
    day = (datetime.now(UTC) - timedelta(days=2)).replace(hour=12, minute=0, second=0,
                                                          microsecond=0)

    def at(hours):
        return (day + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")

    await _record(http, org, [
        {"meterId": tokens, "userId": "alice", "value": 10, "timestamp": at(0)},
        {"meterId": tokens, "userId": "alice", "value": 5, "timestamp": at(1)},
        {"meterId": tokens, "userId": "alice", "value": 99, "timestamp": at(5)},
        {"meterId": gauge, "userId": "alice", "value": 3, "timestamp": at(1)},
        {"meterId": gauge, "userId": "alice", "value": 8, "timestamp": at(0)},
        {"meterId": backfill, "userId": "alice", "value": 7, "timestamp": at(0)},
        {"meterId": idle, "userId": "bob", "value": 1, "timestamp": at(0)}])
    org_id = (await gateway_store.org_by_name(metering.pool, org.name)).id
    scope = support.scope(org_id, org_name=org.name, request_id="test",
                          actor=Actor(kind="service", role="platform"))
    reply = await metering.request(USAGE_AGGREGATE.subject, scope, UsageAggregateParams(
        userId="alice", start=at(0), end=at(5)))  # end exclusive: the 99 is out
    usage = msgspec.json.decode(reply.result, type=UsageAggregate)
    assert [(m.meterId, m.aggregationType, m.quantity, m.eventCount) for m in usage.meters] == [
        (tokens, "sum", 15, 2), (gauge, "last", 3, 2)]
    # Asked together (a billing cycle's renewals: one read for them all), each customer
    # gets their own usage, a customer asked for twice both times.
    asked = await asyncio.gather(*(metering.request(
        USAGE_AGGREGATE.subject, scope, UsageAggregateParams(userId=user, start=at(0),
                                                             end=at(5)), batched=True)
        for user in ("alice", "bob", "carol", "alice")))
    assert [[(m.meterId, m.quantity) for m in msgspec.json.decode(
        r.result, type=UsageAggregate).meters] for r in asked] == [
        [(tokens, 15), (gauge, 3)], [(idle, 1)], [], [(tokens, 15), (gauge, 3)]]


# ---- the batch rules (pure) ------------------------------------------------------------


NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def test_a_batch_gets_its_ids_and_canonical_fields():
    base = meter_events.fresh_id_base()
    events = meter_events.accept_batch(
        [MeterEventInput(meterId="m", userId=" Ann ", value=None, idempotency=None),
         MeterEventInput(meterId="m", userId="bob", value=2,
                         timestamp="2026-03-10T13:00:00.123456789+02:00")], NOW, base)
    assert [e.id for e in events] == [base + "00", base + "01"]
    assert len(events[0].id) == len("mev_") + 22
    assert (events[0].userId, events[0].value, events[0].idempotency) == ("ann", 0, "")
    assert events[0].timestamp == meter_events.to_us(NOW)
    assert meter_events.from_us(events[1].timestamp) == datetime(2026, 3, 10, 11, 0, 0, 123457,
                                                                 tzinfo=UTC)


def test_ids_of_an_asynchronous_batch_follow_from_the_batch():
    assert meter_events.derived_id_base("ab" * 32) == meter_events.derived_id_base("ab" * 32)
    assert meter_events.derived_id_base("ab" * 32) != meter_events.derived_id_base("ac" * 32)
    assert len(meter_events.derived_id_base("ff" * 32)) == len(meter_events.fresh_id_base())


@pytest.mark.parametrize("timestamp, accepted", [
    ("2026-02-03T12:00:00Z", True),  # 35 days back
    ("2026-02-03T11:59:59Z", False),
    ("2026-03-10T12:05:00Z", True),  # 5 minutes ahead
    ("2026-03-10T12:05:01Z", False),
    ("2026-03-10T12:00:00", False),  # no offset
    ("2026-03-10 12:00:00Z", False),
])
def test_accepted_timestamps(timestamp, accepted):
    try:
        meter_events.accept_batch([MeterEventInput(meterId="m", userId="u", timestamp=timestamp)],
                                  NOW, "mev_x")
    except Failure:
        assert not accepted
    else:
        assert accepted


def test_summary_windows():
    window = domain.summary_window("2026-03-01", "2026-03-09")
    assert window == domain.Window(datetime(2026, 3, 1, tzinfo=UTC),
                                   datetime(2026, 3, 10, tzinfo=UTC), end_inclusive=False)
    window = domain.summary_window("", "2026-03-09T10:00:00+01:00")
    assert window.start is None and window.end_inclusive
    assert window.end == datetime(2026, 3, 9, 9, tzinfo=UTC)
    with pytest.raises(Failure, match="invalid periodEnd format"):
        domain.summary_window("", "2026-02-30")
