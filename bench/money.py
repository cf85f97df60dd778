"""Money moves: how fast `POST /billing/usage` records durable, atomic, idempotent debits.

Drives usage records with distinct `requestId`s through the gateway (gateway and ledger in
their own processes) and, in the same run, the machine's baseline: single-row insert
transactions committed by asyncpg at the same concurrency. Counts the rows in PostgreSQL
afterwards and checks the books (`billing ledger verify`).

    .venv/bin/python bench/money.py [--seconds 10] [--concurrency 64] [--users 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


async def baseline(database_url: str, concurrency: int, seconds: float) -> Result:
    """One-row insert transactions, each committed on its own: what the disk allows."""
    pool = await asyncpg.create_pool(database_url, min_size=20, max_size=20)
    await pool.execute("create table if not exists bench_commits (id bigserial primary key,"
                       " user_id text, amount bigint)")
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("insert into bench_commits (user_id, amount) values ($1, 1)",
                                   "bench/u")
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    elapsed = time.perf_counter() - started
    await pool.close()
    return Result("baseline (asyncpg commit per row)", len(latencies), 0, elapsed, latencies)


async def main(seconds: float, concurrency: int, users: int) -> None:
    async with infrastructure() as (nats_url, database_url):
        port = free_port()
        env = billing_env(nats_url, database_url, BILLING_PORT=str(port))
        ledger = spawn("-m", "services.cli", "serve", "ledger", env=env)
        await asyncio.sleep(1.0)
        gateway = spawn("-m", "services.cli", "serve", "gateway", env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_http(base + "/readyz")
            auth = {"Authorization": f"Bearer {await secret_key(database_url)}"}
            body = json.dumps({"user": "bench/u{u}", "amount": 1, "requestId": "r-{n}",
                               "model": "m", "totalTokens": 10})
            base_result = await baseline(database_url, concurrency, seconds)
            usage = await drive("POST /billing/usage", f"{base}/api/v1/billing/usage",
                                concurrency=concurrency, seconds=seconds, method="POST",
                                headers=auth, body=body, users=users)
            conn = await asyncpg.connect(database_url)
            rows = await conn.fetchval("select count(*) from ledger.transactions")
            await conn.close()
            verify = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "services.cli", "ledger", "verify"],
                env={**os.environ, **env}, capture_output=True, text=True)
        finally:
            stop([gateway, ledger])
    print(f"\nmoney moves, {concurrency} concurrent clients, {seconds:.0f} s each")
    for result in (base_result, usage):
        print(result.line())
    print(f"usage rows in PostgreSQL: {rows} (requests answered 2xx: "
          f"{usage.requests - usage.errors})")
    print(f"POST /billing/usage: {usage.rps / base_result.rps:.2f} × baseline")
    print(verify.stdout.strip().splitlines()[-1] if verify.stdout else verify.stderr.strip())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args()
    import uvloop

    uvloop.run(main(args.seconds, args.concurrency, args.users))
