"""Payments: how fast top-ups charge a card and credit a balance, exactly once.

Drives `POST /billing/topup/token` with a distinct one-time token per request (the offline
provider: test mode) through the gateway, with ledger, payments and gateway in their own
processes; then payment intents created and confirmed (two requests each). In the same run,
the baselines of `bench/money.py`: single-row asyncpg commits and `POST /billing/usage`.
Afterwards it checks that every answered top-up was credited once and the books verify.

    .venv/bin/python bench/payments.py [--seconds 30] [--concurrency 32] [--users 1000]
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
from bench.money import baseline  # noqa: E402


async def intents(base: str, auth: dict[str, str], concurrency: int, seconds: float,
                  users: int) -> Result:
    """Create a payment intent on a saved method, then confirm it: one operation."""
    api = base + "/api/v1/billing"
    async with aiohttp.ClientSession(headers=auth) as http:
        methods = []
        for u in range(min(users, 50)):
            async with http.post(api + "/payment-methods", json={
                    "customerId": f"bench/u{u}", "providerRef": "tok_visa"}) as r:
                methods.append((f"bench/u{u}", (await r.json())["id"]))
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + seconds

        async def worker(n: int) -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                customer, method = methods[n % len(methods)]
                n += concurrency
                started = time.perf_counter()
                async with http.post(api + "/payment-intents", json={
                        "customerId": customer, "amount": 1000,
                        "paymentMethodId": method}) as r:
                    created = await r.json()
                async with http.post(f"{api}/payment-intents/{created['id']}/confirm") as r:
                    confirmed = await r.json()
                if confirmed.get("status") != "succeeded":
                    errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Result("payment intent create+confirm", len(latencies), errors, elapsed, latencies)


async def main(seconds: float, concurrency: int, users: int) -> None:
    async with infrastructure() as (nats_url, database_url):
        port = free_port()
        env = billing_env(nats_url, database_url, BILLING_PORT=str(port))
        services = [spawn("-m", "services.cli", "serve", name, env=env)
                    for name in ("ledger", "payments")]
        await asyncio.sleep(1.0)
        gateway = spawn("-m", "services.cli", "serve", "gateway", env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_http(base + "/readyz")
            auth = {"Authorization": f"Bearer {await secret_key(database_url)}"}
            usage_body = json.dumps({"user": "bench/u{u}", "amount": 1, "requestId": "r-{n}",
                                     "model": "m", "totalTokens": 10})
            topup_body = json.dumps({"sourceId": "cnon:{n}-bench", "amountCents": 100,
                                     "userId": "bench/u{u}"})
            base_result = await baseline(database_url, concurrency, seconds)
            usage = await drive("POST /billing/usage", f"{base}/api/v1/billing/usage",
                                concurrency=concurrency, seconds=seconds, method="POST",
                                headers=auth, body=usage_body, users=users)
            topups = await drive("POST /billing/topup/token",
                                 f"{base}/api/v1/billing/topup/token",
                                 concurrency=concurrency, seconds=seconds, method="POST",
                                 headers=auth, body=topup_body, users=users)
            paid = await intents(base, auth, concurrency, seconds, users)
            await asyncio.sleep(2.0)  # postings still in flight finish
            conn = await asyncpg.connect(database_url)
            completed = await conn.fetchval(
                "select count(*) from payments.topups where status = 'completed'")
            credits, credited = await conn.fetchrow(
                "select count(*), count(distinct metadata->>'topupId') from ledger.transactions"
                " where tags = 'topup'")
            owed = await conn.fetchval(
                "select count(*) from payments.ledger_postings where posted_at is null")
            await conn.close()
            verify = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "services.cli", "ledger", "verify"],
                env={**os.environ, **env}, capture_output=True, text=True)
        finally:
            stop([gateway, *services])
    print(f"\npayments, {concurrency} concurrent clients, {seconds:.0f} s each")
    for result in (base_result, usage, topups, paid):
        print(result.line())
    print(f"top-ups answered 2xx: {topups.requests - topups.errors}; completed: {completed};"
          f" ledger credits: {credits} for {credited} top-ups; postings still owed: {owed}")
    print(f"POST /billing/topup/token: {topups.rps / base_result.rps:.2f} × commit baseline,"
          f" {topups.rps / usage.rps:.2f} × POST /billing/usage")
    print(f"payment intents created and confirmed: {paid.rps:,.0f}/s"
          f" ({paid.rps / base_result.rps:.2f} × commit baseline)")
    print(verify.stdout.strip().splitlines()[-1] if verify.stdout else verify.stderr.strip())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args()
    import uvloop

    uvloop.run(main(args.seconds, args.concurrency, args.users))
