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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402

from bench.common import (  # noqa: E402
    Result,
    billing_env,
    closed_loop,
    drive,
    free_port,
    gateway_over,
    infrastructure,
    secret_key,
    verify_books,
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

        refusals: dict[str, int] = {}  # what went wrong, by status and message

        def refused(status: int, body: dict) -> bool:
            what = f"{status} {body.get('error', {}).get('message', '')}"
            refusals[what] = refusals.get(what, 0) + 1
            return False

        async def pay(n: int) -> bool:
            customer, method = methods[n % len(methods)]
            async with http.post(api + "/payment-intents", json={
                    "customerId": customer, "amount": 1000, "paymentMethodId": method}) as r:
                created = await r.json()
                if r.status != 201:
                    return refused(r.status, created)
            async with http.post(f"{api}/payment-intents/{created['id']}/confirm") as r:
                confirmed = await r.json()
                return confirmed.get("status") == "succeeded" or refused(r.status, confirmed)

        result = await closed_loop("payment intent create+confirm", concurrency, seconds, pay)
        for what, count in refusals.items():
            print(f"payment intents refused: {count} × {what}")
        return result


async def main(seconds: float, concurrency: int, users: int) -> None:
    async with infrastructure() as (nats_url, database_url):
        env = billing_env(nats_url, database_url, BILLING_PORT=str(free_port()))
        async with gateway_over(env, "ledger", "payments") as base:
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
            await asyncio.sleep(2.0)  # completions and postings still in flight finish
            conn = await asyncpg.connect(database_url)
            completed = await conn.fetchval(
                "select count(*) from payments.topups where status = 'completed'")
            credits, credited = await conn.fetchrow(
                "select count(*), count(distinct metadata->>'topupId') from ledger.transactions"
                " where tags = 'topup'")
            owed = await conn.fetchval(
                "select count(*) from payments.ledger_postings where posted_at is null")
            await conn.close()
            verified = await verify_books(env)
    print(f"\npayments, {concurrency} concurrent clients, {seconds:.0f} s each")
    for result in (base_result, usage, topups, paid):
        print(result.line())
    print(f"top-ups answered 2xx: {topups.requests - topups.errors}; completed: {completed};"
          f" ledger credits: {credits} for {credited} top-ups; postings still owed: {owed}")
    print(f"POST /billing/topup/token: {topups.rps / base_result.rps:.2f} × commit baseline,"
          f" {topups.rps / usage.rps:.2f} × POST /billing/usage")
    print(f"payment intents created and confirmed: {paid.rps:,.0f}/s"
          f" ({paid.rps / base_result.rps:.2f} × commit baseline)")
    print(verified)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args()
    import uvloop

    uvloop.run(main(args.seconds, args.concurrency, args.users))
