"""Invoicing: how fast period invoices are built, finalized and collected from wallets.

Each operation is one invoice: `POST /billing/invoices` (a draft with a plan line and a
usage line), `POST …/finalize`, `POST …/pay` (the waterfall: the customer's credit grants,
customer balance and wallet, which holds enough), from concurrent clients through the
gateway, with ledger, invoicing and gateway in their own processes. In the same run, the
baseline of `bench/money.py` (single-row asyncpg commits). Afterwards it checks that every
invoice answered paid was collected once (what the wallets lost is what the invoices say
they paid) and that the books verify.

Then the usage answers invoices are built from, `bench/usage_rollups.py` (its own
processes): the summary and the per-meter usage over a month holding 1,000,000 events of
one customer, from the rollups and, in the same run, from the raw events.
`--usage-args` passes it flags (e.g. "--events 200000"); `--invoices-only` skips it.

    .venv/bin/python bench/invoicing.py [--seconds 10] [--concurrency 32] [--users 1000]
                                        [--invoices-only] [--usage-args "..."]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402

from bench.common import (  # noqa: E402
    Result,
    billing_env,
    closed_loop,
    free_port,
    gateway_over,
    infrastructure,
    secret_key,
    verify_books,
)
from bench.money import baseline  # noqa: E402

WALLET = 10_000_000  # cents deposited for each customer: every invoice can be paid
LINES = [{"type": "subscription", "description": "Pro plan", "amount": 2000},
         {"type": "usage", "meterId": "mtr_api", "description": "API calls", "amount": 345}]
DUE = sum(line["amount"] for line in LINES)


async def invoices(base: str, auth: dict[str, str], concurrency: int, seconds: float,
                   users: int) -> Result:
    api = base + "/api/v1/billing"
    async with aiohttp.ClientSession(headers=auth) as http:
        for u in range(users):
            async with http.post(api + "/deposit", json={"user": f"bench/u{u}",
                                                         "amount": WALLET}) as r:
                assert r.status == 201, await r.text()

        async def collect(n: int) -> bool:
            async with http.post(api + "/invoices", json={
                    "userId": f"bench/u{n % users}", "lineItems": LINES}) as r:
                invoice = await r.json()
            async with http.post(f"{api}/invoices/{invoice['id']}/finalize") as r:
                await r.read()
            async with http.post(f"{api}/invoices/{invoice['id']}/pay") as r:
                paid = await r.json()
            return r.status == 200 and paid["invoice"]["status"] == "paid"

        return await closed_loop("invoice create+finalize+pay", concurrency, seconds, collect)


async def main(seconds: float, concurrency: int, users: int) -> None:
    async with infrastructure() as (nats_url, database_url):
        env = billing_env(nats_url, database_url, BILLING_PORT=str(free_port()))
        async with gateway_over(env, "ledger", "invoicing") as base:
            auth = {"Authorization": f"Bearer {await secret_key(database_url)}"}
            base_result = await baseline(database_url, concurrency, seconds)
            collected = await invoices(base, auth, concurrency, seconds, users)
            conn = await asyncpg.connect(database_url)
            paid, paid_sum = await conn.fetchrow(
                "select count(*), coalesce(sum(amount_paid), 0) from invoicing.invoices"
                " where status = 'paid'")
            attempts = await conn.fetchval("select count(*) from invoicing.collection_attempts")
            wallets = await conn.fetchval(
                "select count(*) from ledger.transactions where type = 'withdraw'")
            await conn.close()
            verified = await verify_books(env)
            async with aiohttp.ClientSession(headers=auth) as http:
                lost = 0
                for u in range(users):
                    async with http.get(base + "/api/v1/billing/balance",
                                        params={"user": f"bench/u{u}"}) as r:
                        lost += WALLET - (await r.json())["balance"]
    print(f"\ninvoicing, {concurrency} concurrent clients, {seconds:.0f} s each")
    for result in (base_result, collected):
        print(result.line())
    print(f"invoices collected: {collected.rps:,.0f}/s"
          f" ({collected.rps / base_result.rps:.2f} × commit baseline; three requests each)")
    print(f"invoices paid: {paid} ({paid_sum} cents), attempts {attempts}, wallet withdrawals"
          f" {wallets}; wallets lost {lost} cents: "
          f"{'collected once' if lost == paid_sum == paid * DUE else 'MISMATCH'}")
    print(verified)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--invoices-only", action="store_true")
    parser.add_argument("--usage-args", default="")
    args = parser.parse_args()
    import uvloop

    uvloop.run(main(args.seconds, args.concurrency, args.users))
    if not args.invoices_only:
        usage = Path(__file__).resolve().with_name("usage_rollups.py")
        sys.exit(subprocess.run([sys.executable, str(usage),
                                 *shlex.split(args.usage_args)]).returncode)
