"""The invoice preview: how fast the gateway answers `POST /billing/invoice-preview` and
`GET /billing/invoices/upcoming` for a customer with usage on several meters, each priced
by a different model, and a credit grant (gateway, ledger, metering and invoicing each in
their own process, as deployed). Each answer is three bus requests behind the gateway:
metering's per-meter aggregates, the rules from invoicing's table, the ledger's credit
preview. Prints requests/s and p50/p99 per concurrency level.

    .venv/bin/python bench/preview.py [--seconds 10] [--concurrency 16,32] [--events 2000]

NATS_URL / DATABASE_URL are used when set, else embedded servers are started.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    billing_env,
    drive,
    free_port,
    gateway_over,
    infrastructure,
    secret_key,
)

USER = "bench/alice"
RULES = [  # one meter per model
    {"unitPrice": 2},
    {"model": "tiered", "tiers": [{"upTo": 100, "price": 10}, {"upTo": 500, "price": 5},
                                  {"upTo": 0, "price": 1, "flat": 100}]},
    {"model": "volume", "tiers": [{"upTo": 100, "price": 10}, {"upTo": 0, "price": 5}]},
    {"model": "package", "unitPrice": 500, "packageSize": 100},
    {"unitPriceDecimal": "0.0015"},
]


async def populate(base: str, auth: dict[str, str], events: int) -> None:
    """The meters and their rules, `events` events per meter over the last ten days for
    the customer, and a credit grant."""
    start = datetime.now(UTC) - timedelta(days=10)
    async with aiohttp.ClientSession(base, headers=auth) as http:
        async def post(path: str, body: dict) -> dict:
            async with http.post(f"/api/v1/billing/{path}", json=body) as r:
                answer = await r.json()
                assert r.status == 201, answer
                return answer

        for i, rule in enumerate(RULES):
            meter = await post("meters", {"name": f"Meter {i}", "eventName": f"bench_{i}"})
            await post("pricing-rules", {"meterId": meter["id"], **rule})
            step = timedelta(days=10) / events
            batches = [[{"meterId": meter["id"], "userId": USER, "value": 1 + n % 7,
                         "timestamp": (start + step * n).isoformat()}
                        for n in range(b, min(b + 100, events))]
                       for b in range(0, events, 100)]
            for batch in batches:
                await post("meter-events", {"events": batch})
        await post("credit-grants", {"userId": USER, "name": "bench", "amountCents": 1000})


async def main(seconds: float, levels: list[int], events: int) -> None:
    async with infrastructure() as (nats_url, database_url):
        env = billing_env(nats_url, database_url, BILLING_PORT=str(free_port()))
        async with gateway_over(env, "ledger", "metering", "invoicing") as base:
            auth = {"Authorization": f"Bearer {await secret_key(database_url)}"}
            await populate(base, auth, events)
            today = datetime.now(UTC).date()
            preview = json.dumps({"userId": USER,
                                  "periodStart": str(today - timedelta(days=10)),
                                  "periodEnd": str(today + timedelta(days=1))})
            upcoming = f"{base}/api/v1/billing/invoices/upcoming?userId={USER}"
            await drive("warm-up", upcoming, concurrency=levels[0], seconds=2, headers=auth)
            results = {}
            for level in levels:
                results[level] = [
                    await drive("POST /billing/invoice-preview",
                                f"{base}/api/v1/billing/invoice-preview", method="POST",
                                body=preview, concurrency=level, seconds=seconds,
                                headers=auth),
                    await drive("GET /billing/invoices/upcoming", upcoming,
                                concurrency=level, seconds=seconds, headers=auth),
                ]
    for level, rows in results.items():
        print(f"\ninvoice preview, {len(RULES)} meters × {events} events, {level} concurrent "
              f"clients, {seconds:.0f} s each")
        for result in rows:
            print(result.line())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", default="16,32",
                        help="comma-separated concurrency levels")
    parser.add_argument("--events", type=int, default=2000, help="events per meter")
    args = parser.parse_args()
    import uvloop

    uvloop.run(main(args.seconds, [int(c) for c in args.concurrency.split(",")], args.events))
