"""Invoicing: how fast period invoices are built, finalized and collected from wallets.

Two phases. In the first, each operation is one invoice: `POST /billing/invoices` (a draft with a plan line and a
usage line), `POST …/finalize`, `POST …/pay` (the waterfall: the customer's credit grants,
customer balance and wallet, which holds enough), from concurrent clients through the
gateway, with ledger, invoicing and gateway in their own processes. In the same run, the
baseline of `bench/money.py` (single-row asyncpg commits). Afterwards it checks that every
invoice answered paid was collected once (what the wallets lost is what the invoices say
they paid).

In the second, each operation is one subscription's period invoice asked over the bus, as
the subscriptions service asks (`INVOICE_RENEW_PERIOD`: built, finalized and collected in
one request), from concurrent bus clients: a new subscription each time, its customer's
wallet funded. It checks that every period was invoiced once, collected by one attempt and
paid, and that the wallets lost what those invoices say they paid, and prints the CPU each
process spent per invoice (read from /proc, as `bench/topup_cpu.py`). In the end the books
must verify.

Then the usage answers invoices are built from, `bench/usage_rollups.py` (its own
processes): the summary and the per-meter usage over a month holding 1,000,000 events of
one customer, from the rollups and, in the same run, from the raw events.
`--usage-args` passes it flags (e.g. "--events 200000"); `--invoices-only` skips it.

    .venv/bin/python bench/invoicing.py [--seconds 10] [--concurrency 32] [--users 1000]
                                        [--invoices-only] [--usage-args "..."]
                                        [--phases http,renew]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import msgspec  # noqa: E402
import nats  # noqa: E402

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
from bench.topup_cpu import cpu_lines, cpu_now  # noqa: E402
from contracts import Actor, Request, Scope  # noqa: E402
from contracts.invoicing import INVOICE_RENEW_PERIOD, PeriodInvoiceParams  # noqa: E402

WALLET = 10_000_000  # cents deposited for each customer: every invoice can be paid
LINES = [{"type": "subscription", "description": "Pro plan", "amount": 2000},
         {"type": "usage", "meterId": "mtr_api", "description": "API calls", "amount": 345}]
DUE = sum(line["amount"] for line in LINES)
PLAN_PRICE = 2000  # cents a period of the subscriptions renewed over the bus
PLATFORM = Actor(kind="service", role="platform", may_mint=True)  # as subscriptions asks


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


async def fund(base: str, auth: dict[str, str], users: list[str]) -> None:
    async with aiohttp.ClientSession(headers=auth) as http:
        for u in users:
            async with http.post(base + "/api/v1/billing/deposit",
                                 json={"user": u, "amount": WALLET}) as r:
                assert r.status == 201, await r.text()


async def renewals(nats_url: str, org_id: str, concurrency: int, seconds: float,
                   users: int) -> Result:
    """Period invoices of new subscriptions (plan 2000 a period, no usage), asked over the
    bus; an operation went right when its invoice was made and paid by this request."""
    nc = await nats.connect(nats_url)
    encode, decode = msgspec.json.Encoder().encode, msgspec.json.Decoder().decode
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    start = end - timedelta(days=30)
    run = f"{datetime.now(UTC):%H%M%S}"

    async def renew(n: int) -> bool:
        request = Request(Scope(org_id=org_id, org_name=org_id, livemode=False,
                                actor=PLATFORM, request_id=f"req_bench{n}"),
                          PeriodInvoiceParams(
                              subscriptionId=f"sub_bench{run}_{n}", userId=f"bench/r{n % users}",
                              planId="pro", planName="Pro", price=PLAN_PRICE, periodStart=start,
                              periodEnd=end))
        msg = await nc.request(INVOICE_RENEW_PERIOD.subject, encode(request), timeout=30)
        answer = decode(msg.data).get("result")
        return (answer is not None and answer["created"] and answer["collection"]["success"]
                and answer["invoice"]["status"] == "paid")

    try:
        return await closed_loop("renew period (bus) build+final+pay", concurrency, seconds,
                                 renew)
    finally:
        await nc.close()


async def renewals_checked(conn: asyncpg.Connection, users: int) -> str:
    """Every period invoiced once, collected once, paid; the wallets lost what was paid."""
    invoices, periods, paid, paid_sum = await conn.fetchrow(
        "select count(*), count(distinct (subscription_id, period_start)),"
        " count(*) filter (where status = 'paid'), coalesce(sum(amount_paid), 0)"
        " from invoicing.invoices where origin = 'renewal'")
    attempts = await conn.fetchval(
        "select count(*) from invoicing.collection_attempts a join invoicing.invoices i"
        " on i.id = a.invoice_id where i.origin = 'renewal'")
    withdrawn, lost = await conn.fetchrow(
        "select count(*), coalesce(sum(amount), 0) from ledger.transactions"
        " where type = 'withdraw' and user_id like 'bench/r%'")
    once = (invoices == periods == paid == attempts == withdrawn
            and lost == paid_sum == paid * PLAN_PRICE)
    return (f"renewals: {invoices} invoices for {periods} periods, {paid} paid ({paid_sum}"
            f" cents), {attempts} attempts, {withdrawn} wallet withdrawals ({lost} cents):"
            f" {'each paid once' if once else 'MISMATCH'}")


async def main(seconds: float, concurrency: int, users: int, phases: list[str]) -> None:
    lines: list[str] = []
    async with infrastructure() as (nats_url, database_url):
        env = billing_env(nats_url, database_url, BILLING_PORT=str(free_port()))
        async with gateway_over(env, "ledger", "metering", "invoicing") as base:
            auth = {"Authorization": f"Bearer {await secret_key(database_url)}"}
            base_result = await baseline(database_url, concurrency, seconds)
            lines.append(f"\ninvoicing, {concurrency} concurrent clients, {seconds:.0f} s each")
            lines.append(base_result.line())
            conn = await asyncpg.connect(database_url)
            if "http" in phases:
                lines += await http_phase(base, auth, conn, concurrency, seconds, users,
                                          base_result)
            if "renew" in phases:
                await fund(base, auth, [f"bench/r{u}" for u in range(users)])
                org_id = await conn.fetchval("select org_id from ledger.transactions limit 1")
                before = await cpu_now(conn, nats_url)
                renewed = await renewals(nats_url, org_id, concurrency, seconds, users)
                after = await cpu_now(conn, nats_url)
                lines.append(renewed.line())
                lines.append(f"period invoices renewed: {renewed.rps:,.0f}/s"
                             f" ({renewed.rps / base_result.rps:.2f} × commit baseline; one"
                             " bus request each)")
                lines += cpu_lines(before, after, renewed.requests - renewed.errors,
                                   renewed.seconds, "invoice")
                lines.append(await renewals_checked(conn, users))
            await conn.close()
            lines.append(await verify_books(env))
    print("\n".join(lines))


async def http_phase(base: str, auth: dict[str, str], conn: asyncpg.Connection,
                     concurrency: int, seconds: float, users: int, base_result: Result,
                     ) -> list[str]:
    collected = await invoices(base, auth, concurrency, seconds, users)
    paid, paid_sum = await conn.fetchrow(
        "select count(*), coalesce(sum(amount_paid), 0) from invoicing.invoices"
        " where status = 'paid' and origin <> 'renewal'")
    attempts = await conn.fetchval("select count(*) from invoicing.collection_attempts")
    wallets = await conn.fetchval(
        "select count(*) from ledger.transactions where type = 'withdraw'")
    async with aiohttp.ClientSession(headers=auth) as http:
        lost = 0
        for u in range(users):
            async with http.get(base + "/api/v1/billing/balance",
                                params={"user": f"bench/u{u}"}) as r:
                lost += WALLET - (await r.json())["balance"]
    return [collected.line(),
            f"invoices collected: {collected.rps:,.0f}/s"
            f" ({collected.rps / base_result.rps:.2f} × commit baseline; three requests each)",
            f"invoices paid: {paid} ({paid_sum} cents), attempts {attempts}, wallet withdrawals"
            f" {wallets}; wallets lost {lost} cents: "
            f"{'collected once' if lost == paid_sum == paid * DUE else 'MISMATCH'}"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--invoices-only", action="store_true")
    parser.add_argument("--usage-args", default="")
    parser.add_argument("--phases", default="http,renew",
                        help="http: create+finalize+pay; renew: period invoices over the bus")
    args = parser.parse_args()
    import uvloop

    uvloop.run(main(args.seconds, args.concurrency, args.users, args.phases.split(",")))
    if not args.invoices_only:
        usage = Path(__file__).resolve().with_name("usage_rollups.py")
        sys.exit(subprocess.run([sys.executable, str(usage),
                                 *shlex.split(args.usage_args)]).returncode)
