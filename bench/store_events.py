"""Metering's event insert on its own: one connection, statements of eight 100-event batches
(every event keyed, one duplicate per batch), as `store.write_events` sends them.

Measures what the key table's age index costs each insert: rounds alternate between the
schema as migrated (keys swept by block range, no age index) and the same schema with the
former `event_keys_by_age` index put back, each on a fresh database. Prints events/s and WAL
bytes per event for every round, then the means.

    .venv/bin/python bench/store_events.py [--rounds 4] [--statements 300]

DATABASE_URL is used when set, else an embedded PostgreSQL is started.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # noqa: E402

from bench.common import infrastructure  # noqa: E402
from contracts.metering import AcceptedBatch, AcceptedEvent  # noqa: E402
from services.metering import SPEC, store  # noqa: E402
from services.runtime import db  # noqa: E402

BATCHES, EVENTS = 8, 100
AGE_INDEX = "create index event_keys_by_age on metering.event_keys (created_at)"


def statement(run: str, n: int) -> list[AcceptedBatch]:
    now_us = int(time.time() * 1e6)
    batches = []
    for b in range(BATCHES):
        events = [AcceptedEvent(f"mev_{run}_{n}_{b}_{i}", "mtr_bench", f"bench/u{(n + b) % 1000}",
                                1, now_us, f"{run}-{n}-{b}-{i}", {"model": "m1"})
                  for i in range(EVENTS - 1)]
        events.append(AcceptedEvent(f"mev_{run}_{n}_{b}_s", "mtr_bench", "bench/u1", 1, now_us,
                                    f"{run}-s{(n * BATCHES + b) % 1000}", None))
        batches.append(AcceptedBatch("", "org_bench", False, events))
    return batches


async def one_round(server_url: str, statements: int, age_index: bool) -> tuple[float, float]:
    """(events/s, WAL bytes per event) on a fresh database."""
    url = db.with_database(server_url, f"billing_bench_{secrets.token_hex(4)}")
    await db.ensure_database(url)
    conn = await asyncpg.connect(url)
    try:
        await db.migrate(conn, "metering", SPEC.migrations)
        if age_index:
            await conn.execute(AGE_INDEX)
        run = secrets.token_hex(2)
        work = [statement(run, n) for n in range(statements + 10)]
        for batches in work[:10]:  # warm the plan cache and the first pages
            await store.write_events(conn, batches)
        wal_before = await conn.fetchval("select pg_current_wal_lsn()")
        started = time.perf_counter()
        for batches in work[10:]:
            await store.write_events(conn, batches)
        elapsed = time.perf_counter() - started
        wal = await conn.fetchval("select pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)",
                                  wal_before)
    finally:
        await conn.close()
        admin = await asyncpg.connect(db.with_database(server_url, "postgres"))
        await admin.execute(f'drop database "{url.rsplit("/", 1)[1]}" with (force)')
        await admin.close()
    events = statements * BATCHES * EVENTS
    return events / elapsed, float(wal) / events


async def main(rounds: int, statements: int) -> None:
    async with infrastructure() as (_, database_url):
        server_url = db.with_database(database_url, "postgres")
        results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for r in range(rounds):
            for age_index in (True, False):
                rate, wal = await one_round(server_url, statements, age_index)
                results[age_index].append((rate, wal))
                print(f"round {r + 1} {'with' if age_index else 'without'} age index:"
                      f" {rate:>8,.0f} events/s   WAL {wal:,.0f} B/event", flush=True)
    print(f"\nmeter-event insert, one connection, {BATCHES}×{EVENTS}-event statements,"
          f" {statements} per round")
    for age_index in (True, False):
        rates = [rate for rate, _ in results[age_index]]
        wal = statistics.mean(w for _, w in results[age_index])
        print(f"{'with' if age_index else 'without'} age index: mean {statistics.mean(rates):,.0f}"
              f" events/s (min {min(rates):,.0f}, max {max(rates):,.0f}), WAL {wal:,.0f} B/event")
    gain = statistics.mean(r for r, _ in results[False]) / statistics.mean(
        r for r, _ in results[True])
    print(f"without / with: {gain:.2f}×")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--statements", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.statements))
