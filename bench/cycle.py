"""The billing cycle: how fast due periods are billed and collected, and that each is billed
once (issue 13, metering-invoicing.md §8.3).

N subscriptions (default 100,000) fall due at once: a third flat (World Pro, 2900), a third
per seat (Team × 3 seats, 7500), a third Pro with a metered item (2000 + its meter's usage;
the first thousand of them have usage in the period). Every customer's wallet holds enough.
Ledger, metering, invoicing and the gateway run in processes of their own, with one
subscriptions replica that serves requests but leaves the cycle alone. Then the cycle runs
in phases (`--runners 2,1`, the default):

1. two runners: two more subscriptions replicas whose schedulers start at once, sharing the
   due periods (claims under `FOR UPDATE SKIP LOCKED`);
2. one runner, over the next period of the same subscriptions (moved a month back).

For each: periods billed and collected per second, from the runners' start until every
period is settled (and the span the claims record), the CPU each process spent per period
(read from /proc, as `bench/topup_cpu.py`), then the checks — one invoice and one
collection attempt per period, every invoice paid — and in the end `billing ledger verify`.
In the same run, the baseline of `bench/money.py` (single-row asyncpg commits).

    .venv/bin/python bench/cycle.py [--subscriptions 100000] [--baseline-seconds 5]
                                    [--runners 2,1]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402

from bench.common import (  # noqa: E402
    billing_env,
    free_port,
    gateway_over,
    infrastructure,
    secret_key,
    spawn,
    stop,
    verify_books,
)
from bench.money import baseline  # noqa: E402
from bench.topup_cpu import cpu_lines, cpu_now, cpu_seconds  # noqa: E402

WALLET = 40_000  # cents per customer: two periods of the dearest plan and its usage
KINDS = (("world-pro", {}), ("team", {"quantity": 3}), ("pro", {}))  # flat, seats, metered
USAGE_USERS = 1000  # metered customers with usage in the period
CONCURRENCY = 64  # setup requests in flight


def user(n: int) -> str:
    return f"bench/u{n}"


async def setup(base: str, auth: dict[str, str], database_url: str, n: int) -> str:
    """The subscriptions, due now, their items and usage, the funded wallets; the org id."""
    api = base + "/api/v1/billing"
    gate = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession(headers=auth) as http:

        async def call(path: str, body: dict) -> dict:
            async with gate, http.post(api + path, json=body) as r:
                answer = await r.json()
                assert r.status in (200, 201), (path, answer)
                return answer

        templates = [await call("/subscriptions", {"userId": user(k), "planId": plan, **extra})
                     for k, (plan, extra) in enumerate(KINDS)]
        meter = (await call("/meters", {"name": "API Calls", "eventName": "api_calls",
                                        "aggregationType": "sum"}))["id"]
        await call("/pricing-rules", {"meterId": meter, "unitPrice": 2})
        started = time.perf_counter()
        await asyncio.gather(*(call("/deposit", {"user": user(k), "amount": WALLET})
                               for k in range(n)))
        print(f"setup: {n:,} wallets funded in {time.perf_counter() - started:.1f} s")
        metered = [user(k) for k in range(2, n, 3)][:USAGE_USERS]
        when = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        await asyncio.gather(*(call("/meter-events", {"events": [
            {"meterId": meter, "userId": u, "value": 100, "timestamp": when}
            for u in metered[i:i + 100]]}) for i in range(0, len(metered), 100)))
    conn = await asyncpg.connect(database_url)
    try:
        org_id = await conn.fetchval("select org_id from subscriptions.subscriptions"
                                     " where id = $1", templates[0]["id"])
        end = datetime.now(UTC) - timedelta(minutes=1)
        for k, template in enumerate(templates):
            await conn.execute(
                "insert into subscriptions.subscriptions (org_id, livemode, id, user_id,"
                " plan_id, plan_slug, plan_category, plan_snapshot, status, quantity,"
                " period_start, period_end, billing_anchor, start_at, provider_type)"
                " select s.org_id, s.livemode, 'sub_b' || u.n, 'bench/u' || u.n, s.plan_id,"
                " s.plan_slug, s.plan_category, s.plan_snapshot, s.status, s.quantity,"
                " s.period_start, s.period_end, s.billing_anchor, s.start_at, s.provider_type"
                " from subscriptions.subscriptions s,"
                " generate_series($2::int, $3::int - 1, 3) as u(n) where s.id = $1",
                template["id"], k + 3, n)
        await conn.execute("update subscriptions.subscriptions set period_start = $1,"
                           " period_end = $2, billing_anchor = $1, start_at = $1",
                           end - timedelta(days=30), end)
        await conn.execute(
            "insert into subscriptions.subscription_items (org_id, livemode, id,"
            " subscription_id, meter_id, quantity, billing_mode)"
            " select org_id, livemode, 'si_' || id, id, $1, 0, 'metered'"
            " from subscriptions.subscriptions where plan_id = 'pro'", meter)
        count = await conn.fetchval("select count(*) from subscriptions.subscriptions")
        assert count == n, count
        await conn.execute("analyze")
    finally:
        await conn.close()
    return org_id


async def cycle(env: dict[str, str], nats_url: str, database_url: str, runners: int, n: int,
                ) -> tuple[float, float, str, list[str]]:
    """Start `runners` subscriptions replicas whose schedulers bill the due periods: the
    seconds until all `n` are settled, the span the claims record (first claim to last
    settle), the checks, and the CPU each process spent per period."""
    conn = await asyncpg.connect(database_url)
    try:
        since = await conn.fetchval("select now()")
        before = await cpu_now(conn, nats_url)
        started = time.perf_counter()
        running = [spawn("-m", "services.cli", "serve", "subscriptions",
                         env={**env, "BILLING_CYCLE_INTERVAL": "1"}) for _ in range(runners)]
        starting = None  # the runners' CPU until the first claim: starting, not billing
        try:
            while await conn.fetchval(
                    "select count(*) from subscriptions.period_renewals"
                    " where state = 'settled' and created_at >= $1", since) < n:
                if time.perf_counter() - started > 3600:
                    raise RuntimeError("the cycle did not finish within an hour")
                if starting is None and await conn.fetchval(
                        "select exists (select from subscriptions.period_renewals"
                        " where created_at >= $1)", since):
                    starting = sum(cpu_seconds(p.pid) for p in running)
                # Counting reads every claim (43 ms at 100,000): once a second, so that
                # watching takes 4 % of a core, not 20 %; the end is the last settle's time.
                await asyncio.sleep(0.2 if starting is None else 1.0)
            elapsed = (await conn.fetchval(
                "select max(updated_at) from subscriptions.period_renewals"
                " where created_at >= $1", since) - since).total_seconds()
            cpu = cpu_lines(before, await cpu_now(conn, nats_url), n, elapsed, "period")
            cpu.append(f"  of which the runners' start (to their first claim):"
                       f" {(starting or 0.0) / n * 1e6:.0f} µs per period")
        finally:
            stop(running)
        span = await conn.fetchval(
            "select extract(epoch from max(updated_at) - min(created_at))"
            " from subscriptions.period_renewals where created_at >= $1", since)
        return elapsed, float(span), await check(conn, n, since), cpu
    finally:
        await conn.close()


async def check(conn: asyncpg.Connection, n: int, since: datetime) -> str:
    """Every period invoiced since `since` billed once, collected once, paid."""
    invoices, periods, paid = await conn.fetchrow(
        "select count(*), count(distinct (subscription_id, period_start)),"
        " count(*) filter (where status = 'paid') from invoicing.invoices"
        " where origin = 'renewal' and created_at >= $1", since)
    attempts = await conn.fetchval(
        "select count(*) from invoicing.collection_attempts a join invoicing.invoices i"
        " on i.id = a.invoice_id where i.origin = 'renewal' and i.created_at >= $1", since)
    once = invoices == periods == paid == attempts == n
    return (f"{invoices:,} invoices for {periods:,} periods, {paid:,} paid, {attempts:,}"
            f" collection attempts: {'each period billed once' if once else 'MISMATCH'}")


async def next_period(database_url: str) -> None:
    """Every subscription's next period falls due: anchors and periods a month and a day
    back (a period of its own, not the one just billed)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "update subscriptions.subscriptions set billing_anchor = billing_anchor"
            " - interval '1 month 1 day', period_start = period_start"
            " - interval '1 month 1 day', period_end = period_end - interval '1 month 1 day'")
    finally:
        await conn.close()


async def main(n: int, baseline_seconds: float, runners: list[int]) -> None:
    async with infrastructure() as (nats_url, database_url):
        env = billing_env(nats_url, database_url, BILLING_PORT=str(free_port()),
                          BILLING_CYCLE_INTERVAL="3600")
        async with gateway_over(env, "ledger", "metering", "invoicing",
                                "subscriptions") as base:
            auth = {"Authorization": f"Bearer {await secret_key(database_url)}"}
            base_result = await baseline(database_url, 32, baseline_seconds)
            await setup(base, auth, database_url, n)
            results = []
            for phase, count in enumerate(runners):
                if phase:
                    await next_period(database_url)
                results.append((count, await cycle(env, nats_url, database_url, count, n)))
            verified = await verify_books(env)
    print(f"\nbilling cycle, {n:,} due subscriptions (flat, per seat, metered)")
    print(base_result.line())
    for count, (elapsed, span, checked, cpu) in results:
        print(f"{count} runner{'s' if count > 1 else ' '}: {n / elapsed:>8,.0f} periods"
              f" billed+collected/s   total {elapsed:6.1f} s (claims span {span:6.1f} s)")
        print(f"   {checked}")
        print("\n".join(cpu))
    print(verified)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--baseline-seconds", type=float, default=5)
    parser.add_argument("--runners", default="2,1",
                        help="the phases in order: runners of each (each a new period)")
    args = parser.parse_args()
    import uvloop

    uvloop.run(main(args.subscriptions, args.baseline_seconds,
                    [int(r) for r in args.runners.split(",")]))
