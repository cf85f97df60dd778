"""Usage rollups (issue 12): summaries and the usage invoicing reads answer from hourly
rollups for a period's whole hours and from the events for its edges — and give exactly the
answer the events alone give, for every aggregation, with late events (up to 35 days back)
and duplicates (counted once) — both ways in."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import Actor
from contracts.meter_events import to_us
from contracts.metering import (
    USAGE_AGGREGATE,
    AcceptedBatch,
    AcceptedEvent,
    UsageAggregate,
    UsageAggregateParams,
)
from services.metering import domain, store
from services.metering.domain import DAY, HOUR, Window, day_parts, window_parts
from services.metering.handlers import upkeep
from services.runtime import db
from tests import support
from tests.support import ASYNC, ev, eventually, make_meter, record, summary, zulu

AGGREGATIONS = ("sum", "count", "min", "max", "last", "unique_count")
USERS = ("alice", "bob")


def exact(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---- cutting a window (pure) -----------------------------------------------------------

H = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def test_a_window_is_whole_hours_and_two_edges():
    parts = window_parts(Window(H + timedelta(minutes=20), H + 5 * HOUR + timedelta(seconds=1),
                                end_inclusive=True))
    assert (parts.whole_hours, parts.hours_from, parts.hours_to) == (True, H + HOUR, H + 5 * HOUR)
    assert parts.edges == (Window(H + timedelta(minutes=20), H + HOUR),
                           Window(H + 5 * HOUR, H + 5 * HOUR + timedelta(seconds=1), True))
    assert parts.edge_hours() == [H, H + 5 * HOUR]


def test_windows_on_the_hour_and_open_ones_need_no_events():
    assert window_parts(Window(H, H + 3 * HOUR)) == domain.WindowParts(True, H, H + 3 * HOUR, ())
    assert window_parts(Window()) == domain.WindowParts(True, None, None, ())
    # An inclusive end on the hour still takes the events of that instant from the events.
    assert window_parts(Window(None, H, True)).edges == (Window(H, H, True),)


def test_a_window_within_an_hour_or_two_is_read_from_the_events():
    window = Window(H + timedelta(minutes=30), H + HOUR + timedelta(minutes=10))
    parts = window_parts(window)
    assert (parts.whole_hours, parts.edges) == (False, (window,))
    assert parts.edge_hours() == [H, H + HOUR]


instants = st.integers(-3 * 3_600_000_000, 6 * 3_600_000_000).map(
    lambda us: H + timedelta(microseconds=us))


@settings(max_examples=500, deadline=None, database=None)
@given(start=st.none() | instants, end=st.none() | instants, inclusive=st.booleans(),
       t=instants)
def test_every_instant_is_read_once_from_the_hours_or_from_an_edge(start, end, inclusive, t):
    window = Window(start, end, end is not None and inclusive)
    parts = window_parts(window)

    def inside(w: Window, at: datetime) -> bool:
        return ((w.start is None or at >= w.start)
                and (w.end is None or (at <= w.end if w.end_inclusive else at < w.end)))

    hour = domain.hour_of(t)
    in_hours = parts.whole_hours and inside(Window(parts.hours_from, parts.hours_to), hour)
    in_edges = [e for e in parts.edges if inside(e, t)]
    assert in_hours + len(in_edges) == inside(window, t)
    if in_edges:
        assert hour in parts.edge_hours()


def test_whole_days_are_cut_from_the_whole_hours():
    midnight = H.replace(hour=0)
    parts = window_parts(Window(H + timedelta(minutes=20), midnight + 3 * DAY + 5 * HOUR))
    assert day_parts(parts) == domain.DayParts(
        Window(midnight + DAY, midnight + 3 * DAY),
        (Window(H + HOUR, midnight + DAY), Window(midnight + 3 * DAY, midnight + 3 * DAY + 5 * HOUR)))
    # Within a day or two and no whole day: the hours alone; unbounded: days to either end.
    assert day_parts(window_parts(Window(H, H + 20 * HOUR))) == domain.DayParts(
        None, (Window(H, H + 20 * HOUR),))
    assert day_parts(window_parts(Window(H, None))) == domain.DayParts(
        Window(midnight + DAY, None), (Window(H, midnight + DAY),))
    assert day_parts(window_parts(Window())) == domain.DayParts(Window(), ())
    assert day_parts(window_parts(Window(H, H + HOUR - timedelta(seconds=1)))) == (
        domain.DayParts(None, ()))


days_instants = st.integers(-3 * 86_400_000_000, 4 * 86_400_000_000).map(
    lambda us: H + timedelta(microseconds=us)) | st.integers(-3, 4).map(
    lambda d: H.replace(hour=0) + d * DAY) | st.integers(-72, 96).map(lambda h: H + h * HOUR)


@settings(max_examples=500, deadline=None, database=None)
@given(start=st.none() | days_instants, end=st.none() | days_instants, t=days_instants)
def test_every_whole_hour_is_read_once_from_a_day_or_an_hour(start, end, t):
    parts = window_parts(Window(start, end))
    cut = day_parts(parts)

    def inside(w: Window | None, at: datetime) -> bool:
        return w is not None and ((w.start is None or at >= w.start)
                                  and (w.end is None or at < w.end))

    hour = domain.hour_of(t)
    whole = parts.whole_hours and inside(Window(parts.hours_from, parts.hours_to), hour)
    day = domain.start_of_day(t)
    assert inside(cut.days, day) + sum(inside(w, hour) for w in cut.hours) == whole
    if cut.days is not None:
        assert all(b is None or b == domain.start_of_day(b)
                   for b in (cut.days.start, cut.days.end))
    # At most a day's hours on either side of the days; without whole days, under two days.
    assert len(cut.hours) <= 2 and all(w.end - w.start < (DAY if cut.days else 2 * DAY)
                                       for w in cut.hours)


# ---- the rollups give the events' answer (through the service) ---------------------------


def _stream_events():
    """(hour index, microseconds into the hour, value, user, key index or None)."""
    return st.tuples(
        st.integers(0, 3),
        st.sampled_from([0, 1, 1_799_999_999, 3_599_999_999]) | st.integers(0, 3_599_999_999),
        st.integers(0, 12), st.sampled_from(USERS), st.none() | st.integers(0, 5))


def _bounds():
    """A period bound: absent, date-only, or an instant near the stream's hours."""
    return st.one_of(
        st.just(None), st.just("day"),
        st.tuples(st.integers(-1, 5), st.sampled_from([0, 1, 1_800_000_000, 3_599_999_999])
                  | st.integers(0, 3_599_999_999)))


@pytest.mark.timeout(600)
async def test_rollups_answer_as_the_events_do(http, org, metering, platform):
    """Random streams — several hours, a few days late and 34 days late, keys repeated within
    and across batches, some batches asynchronous — and random periods: every summary (one
    customer and all) and the per-meter usage equal the answer from the events alone."""
    loop = asyncio.get_running_loop()
    org_id = await support.org_id_of(platform, org)
    scope = support.scope(org_id, org_name=org.name, request_id="test",
                          actor=Actor(kind="service", role="platform"))
    now = datetime.now(UTC)
    examples = iter(range(10_000))

    async def check(anchor_days: int, stream, batch_sizes, periods) -> None:
        n = next(examples)
        meters = {a: await make_meter(http, org, f"r{n}_{a}", a) for a in AGGREGATIONS}
        hours = [domain.hour_of(now - timedelta(days=anchor_days)) - timedelta(hours=4 - i)
                 for i in range(6)]
        tag = secrets.token_hex(4)
        events, stored = [], set()
        for hour, us, value, user, key in stream:
            ts = hours[hour] + timedelta(microseconds=us)
            events.append((ts, value, user, key))
            stored.add((key,) if key is not None else len(events))
        sent, asynchronous = 0, False
        for size in batch_sizes + [16] * len(events):  # the rest 16 at a time (96 events)
            batch = events[sent:sent + size]
            if not batch:
                break
            body = [ev(meters[a], value, user, timestamp=exact(ts),
                       **({"idempotency": f"{tag}-{a}-{key}"} if key is not None else {}))
                    for ts, value, user, key in batch for a in AGGREGATIONS]
            status, reply, _ = await record(http, org, body, ASYNC if asynchronous else None)
            assert status in (201, 202), reply
            sent, asynchronous = sent + len(batch), not asynchronous
        # Asynchronous batches are stored by the workers: wait until every meter has it all.
        await eventually(lambda: summary(http, org, meters["count"]),
                         lambda body: body["eventCount"] == len(stored), 10)
        await eventually(lambda: summary(http, org, meters["unique_count"]),
                         lambda body: body["eventCount"] == len(stored), 10)

        def bound(b) -> str:
            if b is None:
                return ""
            if b == "day":
                return hours[2].date().isoformat()
            return exact(hours[0] + b[0] * HOUR + timedelta(microseconds=b[1]))

        for start, end in periods:
            query = {"periodStart": bound(start), "periodEnd": bound(end)}
            window = domain.summary_window(query["periodStart"], query["periodEnd"])
            for aggregation, meter in meters.items():
                for user in ("alice", ""):
                    got = await summary(http, org, meter, userId=user, **query)
                    value, count = await store.aggregate_raw(
                        metering.pool, org_id, False, meter, user, window, aggregation)
                    assert (got["value"], got["eventCount"]) == (domain.quantity(value), count), (
                        aggregation, user, query, events)
            if window.start is None or window.end is None:
                continue
            reply = await metering.request(USAGE_AGGREGATE.subject, scope, UsageAggregateParams(
                userId="bob", start=zulu(window.start), end=zulu(window.end),
                endInclusive=window.end_inclusive))
            usage = {m.meterId: (m.quantity, m.eventCount)
                     for m in msgspec.json.decode(reply.result, type=UsageAggregate).meters
                     if m.meterId in meters.values()}  # not earlier examples' meters
            expected = {}
            for aggregation, meter in meters.items():
                value, count = await store.aggregate_raw(
                    metering.pool, org_id, False, meter, "bob", window, aggregation)
                if count:
                    expected[meter] = (domain.quantity(value), count)
            assert usage == expected, (query, events)

    @settings(max_examples=100, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(anchor_days=st.sampled_from([1, 3, 34]),
           stream=st.lists(_stream_events(), min_size=1, max_size=30),
           batch_sizes=st.lists(st.integers(1, 16), max_size=4),
           periods=st.lists(st.tuples(_bounds(), _bounds()), min_size=1, max_size=4))
    def run(anchor_days, stream, batch_sizes, periods) -> None:
        asyncio.run_coroutine_threadsafe(
            check(anchor_days, stream, batch_sizes, periods), loop).result()

    # In a thread: the gateway and metering answer from this test's event loop.
    await asyncio.to_thread(run)


# ---- unique_count over days: the daily distinct values --------------------------------------


def _day_stream_events():
    """(day, hour, microseconds into the hour, value, user, key index or None)."""
    return st.tuples(
        st.integers(0, 3), st.sampled_from([0, 23]) | st.integers(0, 23),
        st.sampled_from([0, 3_599_999_999]) | st.integers(0, 3_599_999_999),
        st.integers(0, 12), st.sampled_from(USERS), st.none() | st.integers(0, 5))


def _day_bounds():
    """A period bound: absent, or (day, hour, microseconds) from the stream's first day."""
    return st.none() | st.tuples(
        st.integers(-1, 4), st.sampled_from([0, 1, 23]) | st.integers(0, 23),
        st.sampled_from([0, 1, 3_599_999_999]) | st.integers(0, 3_599_999_999))


@pytest.mark.timeout(600)
async def test_unique_count_over_whole_days_answers_as_the_events_do(metering):
    """Random streams over four UTC days (34 days late or 3), stored by statements of random
    sizes in random order (values late for hours and days that have some already), keys
    repeated within and across statements, and random periods — whole days, the whole hours
    of partial days, edges within hours: the distinct count of one customer, of every
    customer and the per-meter usage equal the answer from the events alone."""
    loop = asyncio.get_running_loop()
    now = datetime.now(UTC)

    async def check(anchor_days: int, stream, sizes, periods) -> None:
        org_id, tag = "org_days", secrets.token_hex(6)
        meter = f"mtr_days_{tag}"
        await store.create_meter(metering.pool, org_id, False, meter, "Models", f"models_{tag}",
                                 "unique_count", "USD", None)
        first = domain.start_of_day(now - timedelta(days=anchor_days))
        events = [AcceptedEvent(f"mev_days_{tag}_{i}", meter, user, value,
                                to_us(first + d * DAY + h * HOUR + timedelta(microseconds=us)),
                                "" if key is None else f"{tag}-{key}", None)
                  for i, (d, h, us, value, user, key) in enumerate(stream)]
        sent = 0
        for n, size in enumerate(sizes + [8] * len(events)):
            batch = AcceptedBatch(f"bat_{tag}_{n}", org_id, False, events[sent:sent + size])
            if not batch.events:
                break
            if n % 2:  # as the workers store the batches accepted asynchronously
                await store.write_accepted(metering.pool, msgspec.json.encode([batch]).decode())
            else:
                await store.write_events(metering.pool, [batch])
            sent += size

        def bound(b) -> datetime | None:
            return None if b is None else first + b[0] * DAY + b[1] * HOUR + timedelta(
                microseconds=b[2])

        for start, end, inclusive in periods:
            window = Window(bound(start), bound(end), end is not None and inclusive)
            for user in ("alice", ""):
                got = await store.aggregate(metering.pool, org_id, False, meter, user, window,
                                            "unique_count")
                value, count = await store.aggregate_raw(metering.pool, org_id, False, meter,
                                                         user, window, "unique_count")
                assert got == (value, count), (user, window, stream)
            usage = await store.usage_by_meter(metering.pool, org_id, False, ["bob", "alice"],
                                               window, "-")
            for user in ("bob", "alice"):
                value, count = await store.aggregate_raw(metering.pool, org_id, False, meter,
                                                         user, window, "unique_count")
                assert [(r["unique_count"], r["count"]) for r in usage.get(user, [])
                        if r["id"] == meter] == ([(value, count)] if count else []), (
                    user, window, stream)

    @settings(max_examples=80, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(anchor_days=st.sampled_from([3, 34]),
           stream=st.lists(_day_stream_events(), min_size=1, max_size=40),
           sizes=st.lists(st.integers(1, 12), max_size=4),
           periods=st.lists(st.tuples(_day_bounds(), _day_bounds(), st.booleans()),
                            min_size=1, max_size=5))
    def run(anchor_days, stream, sizes, periods) -> None:
        asyncio.run_coroutine_threadsafe(check(anchor_days, stream, sizes, periods),
                                         loop).result()

    await asyncio.to_thread(run)


# ---- late events and duplicates -----------------------------------------------------------


async def test_late_events_up_to_35_days_are_added_to_their_hour(http, org):
    meters = {a: await make_meter(http, org, f"late_{a}", a) for a in ("sum", "max", "last")}
    old = domain.hour_of(datetime.now(UTC) - timedelta(days=35)) + 2 * HOUR  # 34 days and a bit
    recent = datetime.now(UTC) - timedelta(hours=1)
    for meter in meters.values():
        status, body, _ = await record(http, org, [
            ev(meter, 4, timestamp=exact(old + timedelta(minutes=30))),
            ev(meter, 6, timestamp=exact(recent))])
        assert status == 201, body
    # Later: events for the old hour (earlier and later in it) and one too old to take.
    for meter in meters.values():
        status, body, _ = await record(http, org, [
            ev(meter, 9, timestamp=exact(old + timedelta(minutes=10))),
            ev(meter, 2, timestamp=exact(old + timedelta(minutes=50)))])
        assert status == 201, body
        status, body, _ = await record(http, org, [
            ev(meter, 1, timestamp=exact(datetime.now(UTC) - timedelta(days=36)))])
        assert status == 400, body
    month = {"periodStart": zulu(old - HOUR), "periodEnd": zulu(recent + HOUR)}
    old_hour = {"periodStart": zulu(old), "periodEnd": zulu(old + HOUR - timedelta(seconds=1))}
    assert [(await summary(http, org, meters[a], **month))["value"] for a in meters] == [21, 9, 6]
    assert [(await summary(http, org, meters[a], **old_hour))["value"]
            for a in meters] == [15, 9, 2]
    # The late events arrive through JetStream too.
    status, body, _ = await record(http, org, [
        ev(meters["sum"], 100, timestamp=exact(old + timedelta(minutes=5)))], ASYNC)
    assert status == 202, body
    body = await eventually(lambda: summary(http, org, meters["sum"], **month),
                            lambda b: b["value"] == 121, 5)
    assert body["eventCount"] == 5


async def test_duplicates_are_counted_once_whichever_way_they_come(http, org):
    meter = await make_meter(http, org, "dups", "sum")
    key = f"dup-{secrets.token_hex(4)}"
    ts = exact(datetime.now(UTC) - timedelta(days=2))
    status, body, _ = await record(http, org, [ev(meter, 5, idempotency=key, timestamp=ts),
                                               ev(meter, 7, idempotency=key, timestamp=ts)])
    assert [e["status"] for e in body["events"]] == ["created", "duplicate"]
    await record(http, org, [ev(meter, 11, idempotency=key, timestamp=ts)])
    status, _, _ = await record(http, org, [ev(meter, 13, idempotency=key, timestamp=ts),
                                            ev(meter, 1, timestamp=ts)], ASYNC)
    assert status == 202
    body = await eventually(lambda: summary(http, org, meter),
                            lambda b: b["eventCount"] == 2, 5)
    assert body["value"] == 6
    await asyncio.sleep(0.3)  # nothing else arrives
    assert (await summary(http, org, meter))["value"] == 6


async def test_the_summary_keeps_its_shape(http, org):
    meter = await make_meter(http, org, "shape", "unique_count")
    day = domain.hour_of(datetime.now(UTC) - timedelta(days=3)).replace(hour=0)
    await record(http, org, [ev(meter, v, timestamp=exact(day + timedelta(hours=h)))
                             for h, v in ((1, 3), (2, 3), (5, 4), (23, 9))])
    query = {"userId": "alice", "periodStart": day.date().isoformat(),
             "periodEnd": zulu(day + timedelta(hours=23))}  # the 23:00 event is at the end
    assert await summary(http, org, meter, **query) == {
        "meterId": meter, "meterName": "Shape", "userId": "alice",
        "aggregationType": "unique_count", "value": 3, "eventCount": 4,
        "periodStart": query["periodStart"], "periodEnd": query["periodEnd"]}


async def test_a_dropped_month_takes_its_rollups_with_it(metering):
    meter = f"mtr_retention_{secrets.token_hex(4)}"
    await store.ensure_partitions(metering.pool, datetime(2019, 1, 1, tzinfo=UTC), 2)
    await store.write_events(metering.pool, [AcceptedBatch("", "org_retention", False, [
        AcceptedEvent(f"mev_retention_{meter}_{i}", meter, "alice", 10 ** i,
                      to_us(datetime(2019, 1 + i, 31 - 3 * i, 23, tzinfo=UTC)), "", None)
        for i in range(2)])])

    async def total() -> tuple[object, int]:
        return await store.aggregate(metering.pool, "org_retention", False, meter, "alice",
                                     Window(), "sum")

    assert await total() == (11, 2)
    assert await store.drop_partitions_before(metering.pool,
                                              datetime(2019, 2, 1, tzinfo=UTC)) == [
        "events_2019_01"]
    assert await total() == (10, 1)
    await store.drop_partitions_before(metering.pool, datetime(2019, 3, 1, tzinfo=UTC))
    assert await total() == (None, 0)


async def test_a_dropped_month_takes_its_distinct_values_with_it(metering):
    meter = f"mtr_retention_{secrets.token_hex(4)}"
    await store.create_meter(metering.pool, "org_retention", False, meter, "Models",
                             f"models_{meter}", "unique_count", "USD", None)
    await store.ensure_partitions(metering.pool, datetime(2019, 1, 1, tzinfo=UTC), 2)
    await store.write_events(metering.pool, [AcceptedBatch("", "org_retention", False, [
        AcceptedEvent(f"mev_retention_{meter}_{i}", meter, "alice", value,
                      to_us(datetime(2019, 1 + month, 28, 23, tzinfo=UTC)), "", None)
        for i, (month, value) in enumerate([(0, 1), (0, 2), (1, 2), (1, 3)])])])

    async def distinct() -> list:
        return [(await store.aggregate(metering.pool, "org_retention", False, meter, user,
                                       Window(), "unique_count"))[0] for user in ("alice", "")]

    async def kept() -> list[int]:
        return [await metering.pool.fetchval(
            f"select count(*) from metering.{table} where meter_id = $1", meter)
            for table in ("usage_hour_values", "usage_day_values")]

    assert (await distinct(), await kept()) == ([3, 3], [8, 8])  # alice's and everyone's
    await store.drop_partitions_before(metering.pool, datetime(2019, 2, 1, tzinfo=UTC))
    assert (await distinct(), await kept()) == ([2, 2], [4, 4])
    await store.drop_partitions_before(metering.pool, datetime(2019, 3, 1, tzinfo=UTC))
    assert (await distinct(), await kept()) == ([0, 0], [0, 0])


async def test_the_migration_takes_the_hour_values_stored_before_it(database_url, tmp_path):
    """The daily distinct values start from the hourly ones already stored."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    shipped = sorted(Path(store.__file__).with_name("migrations").glob("*.sql"))
    daily = next(f for f in shipped if "usage_day_values" in f.name)
    for f in shipped:
        if f != daily:
            (migrations / f.name).write_text(f.read_text())
    schema = f"days_{secrets.token_hex(4)}"
    day = datetime(2026, 3, 10, tzinfo=UTC)
    conn = await asyncpg.connect(database_url)
    try:
        await db.migrate(conn, schema, migrations)
        await conn.execute(
            f"insert into {schema}.usage_hour_values (meter_id, user_id, hour, value)"
            " select 'mtr_1', u, $1::timestamptz + h * interval '1 hour', v"
            " from unnest(array['alice', '']) u, generate_series(0, 47, 5) h,"
            " generate_series(1, 3) v", day)
        (migrations / daily.name).write_text(daily.read_text())
        await db.migrate(conn, schema, migrations)
        rows = await conn.fetch(f"select user_id, day, count(*) from {schema}.usage_day_values"
                                " group by user_id, day order by user_id, day")
        assert [tuple(r) for r in rows] == [
            (u, d, 3) for u in ("", "alice") for d in (day, day + DAY)]
    finally:
        await conn.execute(f"drop schema {schema} cascade")
        await conn.close()


async def test_upkeep_folds_the_shards_of_past_hours(metering, database_url):
    """Writers on different connections add to their own rows of an hour; once the hour is
    past, upkeep folds them into one, and every answer stays the same."""
    meter = f"mtr_fold_{secrets.token_hex(4)}"
    writers, shards = [], set()
    while len(writers) < 3:
        conn = await asyncpg.connect(database_url)
        shard = await conn.fetchval("select pg_backend_pid() % 16")
        if shard in shards:
            await conn.close()
            continue
        shards.add(shard)
        writers.append(conn)
    now = datetime.now(UTC)
    past, current = domain.hour_of(now) - 3 * HOUR, domain.hour_of(now)
    try:
        for w, conn in enumerate(writers):
            await store.write_events(conn, [AcceptedBatch("", "org_fold", False, [
                AcceptedEvent(f"mev_fold_{meter}_{w}_{i}", meter, user, 10 * w + i,
                              to_us(hour + timedelta(minutes=20 - 5 * w)), "", None)
                for i, (hour, user) in enumerate([(past, "alice"), (past, "bob"),
                                                  (current, "alice")])])])
    finally:
        for conn in writers:
            await conn.close()

    async def rows() -> dict[datetime, int]:
        return dict(await metering.pool.fetch(
            "select hour, count(*) from metering.usage_hours where meter_id = $1"
            " and user_id = 'alice' group by hour", meter))

    async def answers() -> list:
        return [await store.aggregate(metering.pool, "org_fold", False, meter, user,
                                      Window(past, None), aggregation)
                for aggregation in AGGREGATIONS[:5] for user in ("alice", "")]

    before = await answers()
    assert await rows() == {past: 3, current: 3}
    await upkeep(metering)
    assert await rows() == {past: 1, current: 3}
    assert await answers() == before
    # sum, count, min, max, last; alice's then everyone's (bob's three events too)
    assert before == [(66, 6), (99, 9), (6, 6), (9, 9), (0, 6), (0, 9), (22, 6), (22, 9),
                      (2, 6), (2, 9)]
