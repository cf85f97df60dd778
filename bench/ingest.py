"""Meter-event ingestion: how fast `POST /billing/meter-events` stores durable events, both
ways in — synchronous (201 after the commit) and asynchronous (`Prefer: respond-async`: 202
after the JetStream ack, stored by the metering workers).

Gateway and metering workers run in their own processes, as deployed. Concurrent clients
send 100-event batches (99 new idempotency keys and one key seen before, so duplicates are
dropped all along). For each way in it prints: accepted events/s, persisted events/s (rows
counted in PostgreSQL, up to the last commit), p50/p99 request latency, accepted-to-visible
latency (a probe batch every 250 ms, then the summary polled until it shows), duplicates
dropped. The asynchronous path runs a second time paced at 30,000 events/s (an aiohttp
client starting 300 requests a second), below what one worker stores: there
accepted-to-visible shows the path's own delay rather than a growing backlog. In the same
run: the machine's baseline — a bare PostgreSQL batch insert of 1000-row batches with ON
CONFLICT DO NOTHING — and the ratio to it; then both ways again with two metering worker
processes.

    .venv/bin/python bench/ingest.py [--seconds 30] [--concurrency 12]

NATS_URL / DATABASE_URL are used when set, else embedded servers are started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402

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

BATCH = 100
USERS = 1000
BASELINE_WRITERS = 4
BASELINE_ROWS = 1000
PACED_EVENTS_PER_S = 30_000
API = "/api/v1/billing"


@dataclass
class Run:
    name: str
    load: Result
    accepted: int  # events answered 2xx (bench batches and probes)
    persisted: int  # rows stored by this run
    persist_seconds: float  # from the start of the run to its last commit
    visible_ms: list[float]
    duplicates: int

    def lines(self, baseline_rows_per_s: float) -> list[str]:
        persisted_rate = self.persisted / self.persist_seconds
        visible = sorted(self.visible_ms)

        def pct(p: float) -> float:
            return visible[min(len(visible) - 1, int(len(visible) * p))] if visible else 0.0

        return [
            f"{self.name}",
            f"  accepted   {self.accepted / self.load.seconds:>10,.0f} events/s"
            f"   ({self.load.rps:,.0f} requests/s, errors {self.load.errors})",
            f"  persisted  {persisted_rate:>10,.0f} events/s"
            f"   ({persisted_rate / baseline_rows_per_s:.2f} × baseline)",
            f"  request latency      p50 {self.load.percentile(0.50):7.2f} ms"
            f"   p99 {self.load.percentile(0.99):7.2f} ms",
            f"  accepted → visible   p50 {pct(0.50):7.1f} ms   p99 {pct(0.99):7.1f} ms"
            f"   max {visible[-1] if visible else 0:7.1f} ms   ({len(visible)} probes)",
            f"  duplicates dropped   {self.duplicates:,}",
        ]


async def baseline(database_url: str, seconds: float) -> float:
    """Rows/s of bare batch inserts with ON CONFLICT DO NOTHING: what the database allows."""
    pool = await asyncpg.create_pool(database_url, min_size=BASELINE_WRITERS,
                                     max_size=BASELINE_WRITERS)
    await pool.execute("create table bench_events (id text primary key, user_id text,"
                       " value bigint, ts timestamptz not null default now())")
    rows = 0
    deadline = time.perf_counter() + seconds

    async def writer(w: int) -> None:
        nonlocal rows
        n = 0
        while time.perf_counter() < deadline:
            ids = [f"{w}-{n}-{i}" for i in range(BASELINE_ROWS)]
            users = [f"bench/u{i % USERS}" for i in range(BASELINE_ROWS)]
            await pool.execute(
                "insert into bench_events (id, user_id, value)"
                " select * from unnest($1::text[], $2::text[], $3::bigint[])"
                " on conflict do nothing", ids, users, [1] * BASELINE_ROWS)
            rows += BASELINE_ROWS
            n += 1

    started = time.perf_counter()
    await asyncio.gather(*[writer(w) for w in range(BASELINE_WRITERS)])
    elapsed = time.perf_counter() - started
    await pool.close()
    return rows / elapsed


def batch_body(meter_id: str, run: str) -> str:
    """`{n}` is unique to a request, `{u}` one of USERS; `run` keeps the keys of one run
    apart from another's."""
    events = [{"meterId": meter_id, "userId": "bench/u{u}", "value": 1,
               "idempotency": f"{run}-{{n}}-{i}", "dimensions": {"model": "m1"}}
              for i in range(BATCH - 1)]
    # One key that other batches of the run used before: dropped as a duplicate.
    events.append({"meterId": meter_id, "userId": "bench/u{u}", "value": 1,
                   "idempotency": f"{run}-s{{u}}"})
    return json.dumps({"events": events})


async def duplicates_dropped(database_url: str, run: str) -> int:
    """Each batch stored has its first key (`<run>-…-0`) and brought one `<run>-s<u>` key;
    only the first of each `<run>-s<u>` was stored."""
    conn = await asyncpg.connect(database_url)
    try:
        batches, seen = await conn.fetchrow(
            "select count(*) filter (where key like $1 || '-%-0'),"
            " count(*) filter (where key like $1 || '-s%')"
            " from metering.event_keys where key like $1 || '-%'", run)
        return batches - seen
    finally:
        await conn.close()


async def probe(http: aiohttp.ClientSession, url: str, headers: dict, meter_id: str,
                stop_at: float, visible_ms: list[float]) -> int:
    """A one-event batch every 250 ms; how long until the summary shows it. Returns the
    number of probe events accepted."""
    n = 0
    while time.monotonic() < stop_at:
        n += 1
        user = f"probe/{time.time_ns()}"
        body = {"events": [{"meterId": meter_id, "userId": user, "value": 1}]}
        async with http.post(url + "/meter-events", json=body, headers=headers) as r:
            if r.status >= 300:
                continue
        accepted = time.perf_counter()
        query = {"meterId": meter_id, "userId": user}
        while True:
            async with http.get(url + "/meter-events/summary", params=query,
                                headers=headers) as r:
                if (await r.json())["eventCount"] == 1:
                    break
            await asyncio.sleep(0.002)
        visible_ms.append((time.perf_counter() - accepted) * 1000)
        await asyncio.sleep(0.25)
    return n


async def count(database_url: str) -> tuple[int, float]:
    """(rows, epoch seconds of the last commit) of the events table."""
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("select count(*), extract(epoch from max(created_at))"
                                  " from metering.events")
        return row[0], float(row[1] or 0)
    finally:
        await conn.close()


async def run(name: str, base: str, database_url: str, auth: dict, meter_id: str, *,
              asynchronous: bool, seconds: float, concurrency: int,
              rate: float | None = None) -> Run:
    headers = {**auth, **({"Prefer": "respond-async"} if asynchronous else {})}
    rows_before, _ = await count(database_url)
    token = secrets.token_hex(4)
    started = time.time()
    visible_ms: list[float] = []
    async with aiohttp.ClientSession() as http:
        probes = asyncio.create_task(probe(http, base + API, headers, meter_id,
                                           time.monotonic() + seconds, visible_ms))
        load = await drive(name, f"{base}{API}/meter-events", concurrency=concurrency,
                           seconds=seconds, method="POST", headers=headers,
                           body=batch_body(meter_id, token), users=USERS, rate=rate)
        probe_events = await probes
    accepted = (load.requests - load.errors) * BATCH + probe_events
    # Wait for the workers to store what was accepted (asynchronous path).
    last, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 2.0:
        rows, last_commit = await count(database_url)
        if rows != last:
            last, stable_since = rows, time.monotonic()
        await asyncio.sleep(0.2)
    return Run(name, load, accepted, rows - rows_before, last_commit - started, visible_ms,
               await duplicates_dropped(database_url, token))


async def main(seconds: float, concurrency: int) -> None:
    async with infrastructure() as (nats_url, database_url):
        port = free_port()
        env = billing_env(nats_url, database_url, BILLING_PORT=str(port))
        workers = [spawn("-m", "services.cli", "serve", "metering", env=env)]
        await asyncio.sleep(1.5)  # let metering migrate before the gateway starts
        gateway = spawn("-m", "services.cli", "serve", "gateway", env=env)
        runs: list[Run] = []
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_http(base + "/readyz")
            auth = {"Authorization": f"Bearer {await secret_key(database_url)}"}
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{base}{API}/meters", headers=auth, json={
                        "name": "Tokens", "eventName": "tokens"}) as r:
                    assert r.status == 201, await r.text()
                    meter_id = (await r.json())["id"]
            print(f"baseline: bare PostgreSQL inserts for {seconds:.0f} s …", flush=True)
            baseline_rate = await baseline(database_url, seconds)
            await drive("warm-up", f"{base}{API}/meter-events", concurrency=concurrency,
                        seconds=2, method="POST", headers=auth,
                        body=batch_body(meter_id, "warm-up"), users=USERS)
            for n_workers in (1, 2):
                if n_workers == 2:
                    workers.append(spawn("-m", "services.cli", "serve", "metering", env=env))
                    await asyncio.sleep(2.0)
                shapes: list[tuple[bool, float | None]] = [(False, None), (True, None)]
                if n_workers == 1:  # and once below what the worker stores per second
                    shapes.append((True, PACED_EVENTS_PER_S))
                for asynchronous, events_per_s in shapes:
                    name = (f"{'asynchronous (202)' if asynchronous else 'synchronous (201)'},"
                            f" {n_workers} metering worker{'s' if n_workers > 1 else ''}"
                            + (f", paced at {events_per_s:,.0f} events/s" if events_per_s
                               else ""))
                    print(f"{name} for {seconds:.0f} s …", flush=True)
                    runs.append(await run(
                        name, base, database_url, auth, meter_id, asynchronous=asynchronous,
                        seconds=seconds, concurrency=concurrency,
                        rate=events_per_s / BATCH if events_per_s else None))
        finally:
            stop([gateway, *workers])
    print(f"\nmeter-event ingestion: {BATCH}-event batches, {concurrency} concurrent clients,"
          f" {seconds:.0f} s each")
    print(f"baseline (bare PostgreSQL, {BASELINE_ROWS}-row batches, ON CONFLICT DO NOTHING,"
          f" {BASELINE_WRITERS} writers): {baseline_rate:,.0f} rows/s")
    for r in runs:
        print("\n".join(r.lines(baseline_rate)))
    for asynchronous in (False, True):
        one, two = (r for r in runs
                    if ("asynchronous" in r.name) == asynchronous and "paced" not in r.name)
        print(f"two workers vs one, {'asynchronous' if asynchronous else 'synchronous'}: "
              f"persisted {two.persisted / two.persist_seconds / (one.persisted / one.persist_seconds):.2f}×")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=12)
    args = parser.parse_args()
    import uvloop

    uvloop.run(main(args.seconds, args.concurrency))
