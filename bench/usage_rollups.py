"""Usage answers over a month holding 1,000,000 events of one customer (issue 12): the
summary through the gateway and the per-meter usage invoice preview and the billing cycle ask
for (`billing.metering.usage.aggregate`, over the bus), both answered from the hourly
rollups (and the daily distinct values, for unique_count) — and, in the same run, the same
answer from the events alone (the raw scan the service made before the rollups).

The events are loaded through metering's own store (`store.write_events`, the statement the
service runs for every batch, rollups included): 32 batches of 100 events a statement, four
writers, the customer's event times drawn at random over the last 30 days (every statement
late for most hours), with a tenth as many events of 100 other customers; the shards of
past hours are then folded as metering's hourly upkeep folds them. A second meter,
unique_count, gets as many events over 50 distinct values. Then, with the
gateway and metering in their own processes, concurrent clients ask for the month; its
bounds fall inside hours, so both edges are read from the events.

    .venv/bin/python bench/usage_rollups.py [--events 1000000] [--seconds 10] [--concurrency 8]

NATS_URL / DATABASE_URL are used when set, else embedded servers are started.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
import msgspec  # noqa: E402
import nats  # noqa: E402

from bench.common import (  # noqa: E402
    Result,
    billing_env,
    drive,
    free_port,
    infrastructure,
    secret_key,
    spawn,
    stop,
    wait_http,
)
from contracts import Actor, Request, Scope  # noqa: E402
from contracts.meter_events import to_us  # noqa: E402
from contracts.metering import (  # noqa: E402
    USAGE_AGGREGATE,
    AcceptedBatch,
    AcceptedEvent,
    UsageAggregateParams,
)
from services.metering import domain, store  # noqa: E402
from services.runtime import db  # noqa: E402

API = "/api/v1/billing"
CUSTOMER = "bench/big-customer"
OTHERS = 100
STATEMENT = 32  # batches of 100 events per statement, as the synchronous writer sends them
WRITERS = 4
RAW_RUNS = 10
DISTINCT_MODELS = 50  # the unique_count meter's values, e.g. models used


async def load(database_url: str, org_id: str, meter_id: str, events: int,
               start: datetime, end: datetime, values: int) -> float:
    """Store the events (values 1…`values`) through `store.write_events`; returns
    events/s."""
    span_us = to_us(end) - to_us(start)
    rng = random.Random(12)
    others = events // 10
    owners = [CUSTOMER] * events + [f"bench/u{i % OTHERS}" for i in range(others)]
    rng.shuffle(owners)
    statements = [owners[i:i + STATEMENT * 100] for i in range(0, len(owners), STATEMENT * 100)]
    pool = await db.create_pool(database_url, min_size=WRITERS, max_size=WRITERS)
    queue = iter(enumerate(statements))

    async def writer() -> None:
        for n, users in queue:
            batches = [AcceptedBatch("", org_id, False, [
                AcceptedEvent(f"mev_{meter_id}_{n}_{b}_{i}", meter_id, user,
                              rng.randint(1, values), to_us(start) + rng.randrange(span_us),
                              "", None)
                for i, user in enumerate(users[b * 100:(b + 1) * 100])])
                for b in range((len(users) + 99) // 100)]
            async with pool.acquire() as conn, conn.transaction():
                await store.write_events(conn, batches)

    started = time.perf_counter()
    await asyncio.gather(*[writer() for _ in range(WRITERS)])
    elapsed = time.perf_counter() - started
    # The month is past: metering's upkeep folds its hours' shards (one row an hour), and
    # autovacuum sets the visibility map index-only scans need.
    while await store.fold_shards(pool, domain.shards_folded_before(end), 10_000) == 10_000:
        pass
    await pool.execute("vacuum (analyze) metering.events, metering.usage_hours,"
                       " metering.usage_hour_values, metering.usage_day_values")
    await pool.close()
    return len(owners) / elapsed


async def timed(name: str, runs: int, call) -> Result:
    latencies = []
    started = time.perf_counter()
    for _ in range(runs):
        t = time.perf_counter()
        await call()
        latencies.append((time.perf_counter() - t) * 1000)
    return Result(name, runs, 0, time.perf_counter() - started, latencies)


async def bus_usage(nats_url: str, scope: Scope, params: UsageAggregateParams, *,
                    concurrency: int, seconds: float) -> tuple[Result, list[int]]:
    """`usage.aggregate` asked by `concurrency` callers at once; (timings, quantities)."""
    nc = await nats.connect(nats_url)
    payload = msgspec.json.encode(Request(scope, params))
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    quantities: list[int] = []

    async def caller() -> None:
        nonlocal quantities
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            msg = await nc.request(USAGE_AGGREGATE.subject, payload, timeout=30)
            latencies.append((time.perf_counter() - t) * 1000)
            quantities = [m["quantity"]
                          for m in msgspec.json.decode(msg.data)["result"]["meters"]]

    started = time.perf_counter()
    await asyncio.gather(*[caller() for _ in range(concurrency)])
    elapsed = time.perf_counter() - started
    await nc.close()
    return Result("usage.aggregate, both meters (bus)", len(latencies), 0, elapsed,
                  latencies), quantities


async def main(events: int, seconds: float, concurrency: int) -> None:
    async with infrastructure() as (nats_url, database_url):
        port = free_port()
        env = billing_env(nats_url, database_url, BILLING_PORT=str(port))
        metering = spawn("-m", "services.cli", "serve", "metering", env=env)
        await asyncio.sleep(1.5)  # let metering migrate before the gateway starts
        gateway = spawn("-m", "services.cli", "serve", "gateway", env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_http(base + "/readyz")
            auth = {"Authorization": f"Bearer {await secret_key(database_url)}"}
            meters = {}
            async with aiohttp.ClientSession() as http:
                for aggregation, name in (("sum", "tokens"), ("unique_count", "models")):
                    async with http.post(f"{base}{API}/meters", headers=auth, json={
                            "name": name, "eventName": name,
                            "aggregationType": aggregation}) as r:
                        assert r.status == 201, await r.text()
                        meters[aggregation] = (await r.json())["id"]
            pool = await db.create_pool(database_url, min_size=1, max_size=2)
            org_id = await pool.fetchval("select id from gateway.orgs where name = 'bench'")
            now = datetime.now(UTC)
            loaded = []
            for aggregation, values in (("sum", 1000), ("unique_count", DISTINCT_MODELS)):
                print(f"loading {events:,} events of one customer (and {events // 10:,} of"
                      f" {OTHERS} others) into the {aggregation} meter …", flush=True)
                loaded.append(await load(database_url, org_id, meters[aggregation], events,
                                         now - timedelta(days=30), now - timedelta(seconds=1),
                                         values))
            # A month inside the last 30 days, its bounds inside hours.
            end = now - timedelta(minutes=7, seconds=13, microseconds=250)
            start = end - timedelta(days=30) + timedelta(minutes=23)
            period = {"periodStart": start.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                      "periodEnd": end.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
            window = domain.summary_window(period["periodStart"], period["periodEnd"])
            results: list[Result] = []
            answers = {}
            for aggregation, user, label in (
                    ("sum", CUSTOMER, "sum, one customer"), ("sum", "", "sum, every customer"),
                    ("unique_count", CUSTOMER, "unique_count, one customer")):
                meter_id = meters[aggregation]

                def rollups(m=meter_id, u=user, a=aggregation):
                    return store.aggregate(pool, org_id, False, m, u, window, a)

                def raw_scan(m=meter_id, u=user, a=aggregation):
                    return store.aggregate_raw(pool, org_id, False, m, u, window, a)

                answers[label] = (await rollups(), await raw_scan())
                query = urlencode({"meterId": meter_id, "userId": user, **period})
                results.append(await drive(
                    f"summary, {label} (gateway)",
                    f"{base}{API}/meter-events/summary?{query}", concurrency=concurrency,
                    seconds=seconds, headers=auth))
                results.append(await timed("  its SQL alone, rollups", 200, rollups))
                results.append(await timed("  its SQL alone, raw scan", RAW_RUNS, raw_scan))
            scope = Scope(org_id=org_id, org_name="bench", livemode=False,
                          actor=Actor(kind="service", role="platform"), request_id="bench")
            usage, quantities = await bus_usage(nats_url, scope, UsageAggregateParams(
                userId=CUSTOMER, start=period["periodStart"], end=period["periodEnd"]),
                concurrency=concurrency, seconds=seconds)
            results.append(usage)
            await pool.close()
        finally:
            stop([gateway, metering])
    print(f"\nusage over a month: {events:,} events of one customer, {events // 10:,} of"
          f" {OTHERS} others, in each of two meters (sum; unique_count over {DISTINCT_MODELS}"
          f" values); {concurrency} concurrent clients, {seconds:.0f} s each")
    print("load through store.write_events (rollups kept): "
          + ", ".join(f"{rate:,.0f}" for rate in loaded) + " events/s")
    for label, ((value, count), (raw_value, raw_count)) in answers.items():
        same = (int(value), count) == (int(raw_value), raw_count)
        print(f"{label}: rollups {int(value):,} over {count:,} events, raw scan"
              f" {int(raw_value):,} over {raw_count:,}: {'equal' if same else 'DIFFERENT'}")
    print(f"usage.aggregate quantities {quantities}")
    for r in results:
        print(r.line())
    raw = [statistics.median(r.latencies_ms) for r in results if "raw scan" in r.name]
    sql = [statistics.median(r.latencies_ms) for r in results if "SQL alone, rollups" in r.name]
    print("raw scan / rollups (SQL, p50): "
          + ", ".join(f"{a / b:,.0f}×" for a, b in zip(raw, sql, strict=True)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    import uvloop

    uvloop.run(main(args.events, args.seconds, args.concurrency))
