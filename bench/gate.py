"""The billing gate: how fast the gateway answers balance checks.

Drives `GET /billing/balance`, `GET /billing/status` and ZAP `billing.getBalance` through the
gateway (gateway, ledger and payments each in their own process, as deployed), and in the
same run a baseline: a bare aiohttp handler doing one NATS request/reply to a trivial
responder. Prints requests/s, p50/p99 and the ratio to the baseline.

    .venv/bin/python bench/gate.py [--seconds 10] [--concurrency 16,32,64]

Each figure is taken at every concurrency level given: the target (≥ 5,000 requests/s with
p99 ≤ 10 ms) is about throughput at a tail latency, so the curve matters, not one point.

NATS_URL / DATABASE_URL are used when set, else embedded servers are started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    billing_env,
    drive,
    free_port,
    infrastructure,
    secret_key,
    spawn,
    stop,
    wait_http,
)


async def main(seconds: float, levels: list[int]) -> None:
    async with infrastructure() as (nats_url, database_url):
        port = free_port()
        env = billing_env(nats_url, database_url, BILLING_PORT=str(port))
        ledger = spawn("-m", "services.cli", "serve", "ledger", env=env)
        # Payments as deployed: the ledger reads its payment-method events (the status
        # check answers from them, asking payments only until the ledger has caught up).
        payments = spawn("-m", "services.cli", "serve", "payments", env=env)
        await asyncio.sleep(1.0)  # let the services migrate before the gateway starts
        gateway = spawn("-m", "services.cli", "serve", "gateway", env=env)
        base_port = free_port()
        responder = spawn("bench/baseline.py", "responder", nats_url, env={})
        baseline = spawn("bench/baseline.py", "server", nats_url, str(base_port), env={})
        processes = [gateway, ledger, payments, baseline, responder]
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_http(base + "/readyz")
            await wait_http(f"http://127.0.0.1:{base_port}/ready")
            key = await secret_key(database_url)
            auth = {"Authorization": f"Bearer {key}"}
            user = "bench/alice"
            for path in ("balance", "status"):
                await drive("warm-up", f"{base}/api/v1/billing/{path}?user={user}",
                            concurrency=levels[0], seconds=2, headers=auth)
            if payments.poll() is not None:  # else status is measured without payments
                raise SystemExit("payments exited; see its output above")
            zap = json.dumps({"method": "billing.getBalance", "id": "1",
                              "params": {"user": user}})
            results = {}
            for level in levels:
                results[level] = [
                    await drive("baseline (aiohttp + NATS echo)",
                                f"http://127.0.0.1:{base_port}/echo", concurrency=level,
                                seconds=seconds),
                    await drive("GET /billing/balance",
                                f"{base}/api/v1/billing/balance?user={user}",
                                concurrency=level, seconds=seconds, headers=auth),
                    await drive("GET /billing/status",
                                f"{base}/api/v1/billing/status?user={user}",
                                concurrency=level, seconds=seconds, headers=auth),
                    await drive("ZAP billing.getBalance", f"{base}/api/v1/billing/zap",
                                concurrency=level, seconds=seconds, method="POST",
                                headers=auth, body=zap),
                ]
        finally:
            stop(processes)
    for level, rows in results.items():
        print(f"\nbilling gate, {level} concurrent clients, {seconds:.0f} s each")
        for result in rows:
            print(result.line())
        for result in rows[1:]:
            print(f"  {result.name}: {result.rps / rows[0].rps:.2f} × baseline")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", default="16,32,64",
                        help="comma-separated concurrency levels")
    args = parser.parse_args()
    import uvloop

    uvloop.run(main(args.seconds, [int(c) for c in args.concurrency.split(",")]))
