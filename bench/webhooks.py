"""Inbound provider webhooks: how many signed Stripe deliveries a second the gateway and
payments verify, store once and answer, with a tenth of them redelivered.

Events are signed beforehand (Stripe's scheme, the platform's `STRIPE_WEBHOOK_SECRET`) and
posted to `/billing/webhooks/stripe/bench` by concurrent clients: of each ten, eight are
recorded only (`charge.succeeded`), one is forwarded to other services
(`customer.subscription.updated`: an outbox event) and one asks for an intent we do not have
(`payment_intent.succeeded`: the effect's own transaction); one delivery in ten repeats an
event already sent. In the same run, the baseline: a bare aiohttp handler doing the same
signature check (the Stripe SDK's) and nothing else, driven by the same client: wrk when
installed (a C load generator leaves the two cores to the servers; its Lua script cycles
through the signed events, written to a file), else an aiohttp client. Afterwards
it checks that every distinct event was stored once and reached the event log, and prints
what does not vary with the machine's load as much as the rates: how many rows share a
transaction, and the CPU time per delivery of each process (read from /proc as
`bench/topup_cpu.py` does; the outbox relay and the event log run in payments').

Then the outbound side, `bench/webhook_deliveries.py` (its own processes and receiver):
deliveries a second to local receivers, event → delivered latency at a paced rate, and a
receiver's outage drained in order. `--outbound-args` passes it flags (e.g. "--outage 10");
`--inbound-only` skips it.

    .venv/bin/python bench/webhooks.py [--seconds 10] [--concurrency 64] [--inbound-only]
                                       [--outbound-args "..."]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402

from bench.common import (  # noqa: E402
    Result,
    billing_env,
    drive_script,
    free_port,
    gateway_over,
    infrastructure,
    secret_key,
    spawn,
    stop,
    wait_http,
)
from bench.topup_cpu import cpu_lines, cpu_now  # noqa: E402

SECRET = "whsec_bench_secret"
REPLAYS = 0.10
# Every transaction of the bench's database (statements outside one count as one each).
COMMITS = ("select xact_commit + xact_rollback from pg_stat_database"
           " where datname = current_database()")
TYPES = ["charge.succeeded"] * 8 + ["customer.subscription.updated", "payment_intent.succeeded"]


def signed_events(count: int) -> list[tuple[bytes, str]]:
    """(body, Stripe-Signature) of `count` distinct events, signed now (valid for 300 s)."""
    t = int(time.time())
    events = []
    for n in range(count):
        kind = TYPES[n % len(TYPES)]
        body = json.dumps({"id": f"evt_bench_{t}_{n}", "type": kind, "livemode": False,
                           "data": {"object": {"id": f"obj_{n}", "object": "charge",
                                               "amount": 1000, "status": "succeeded"}}},
                          separators=(",", ":")).encode()
        v1 = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        events.append((body, f"t={t},v1={v1}"))
    return events


# Each request: the next fresh event, or one in ten an event already sent. At the end, how
# many fresh ones were sent is written to `BENCH_SENT` (`done` runs in wrk's main Lua state,
# which reads its thread's `fresh`).
WRK_SCRIPT = """
local bodies, signatures = {}, {}
for line in io.lines(os.getenv("BENCH_EVENTS")) do
  local tab = line:find("\t", 1, true)
  bodies[#bodies + 1] = line:sub(1, tab - 1)
  signatures[#signatures + 1] = line:sub(tab + 1)
end
local replays = tonumber(os.getenv("BENCH_REPLAYS"))
fresh = 0
math.randomseed(os.time())
request = function()
  local n
  if fresh > 0 and math.random() < replays then
    n = math.random(fresh)
  else
    fresh = fresh + 1
    n = fresh
  end
  return wrk.format("POST", nil, {["Stripe-Signature"] = signatures[n]}, bodies[n])
end
local threads = {}
setup = function(thread) threads[#threads + 1] = thread end
done = function()
  local sent = 0
  for _, thread in ipairs(threads) do sent = sent + thread:get("fresh") end
  local f = io.open(os.getenv("BENCH_SENT"), "w")
  f:write(tostring(sent))
  f:close()
end
"""


async def deliver(name: str, url: str, events: list[tuple[bytes, str]], concurrency: int,
                  seconds: float) -> tuple[Result, int]:
    """Post fresh events, one in ten an event already sent, for `seconds`; the result and
    how many distinct events were sent (wrk: answered 2xx too, when it counts no errors;
    the last in flight may not be) or answered 2xx (the aiohttp client)."""
    if not shutil.which("wrk"):
        return await _deliver_python(name, url, events, concurrency, seconds)
    with tempfile.TemporaryDirectory() as scratch:
        listed, sent = Path(scratch, "events"), Path(scratch, "sent")
        listed.write_bytes(b"".join(b"%s\t%s\n" % (body, signature.encode())
                                    for body, signature in events))
        result = await drive_script(name, url, WRK_SCRIPT, concurrency=concurrency,
                                    seconds=seconds, env={
                                        "BENCH_EVENTS": str(listed), "BENCH_SENT": str(sent),
                                        "BENCH_REPLAYS": str(REPLAYS)})
        return result, int(sent.read_text())


async def _deliver_python(name: str, url: str, events: list[tuple[bytes, str]],
                          concurrency: int, seconds: float) -> tuple[Result, int]:
    latencies: list[float] = []
    errors = 0
    fresh = iter(range(len(events)))
    sent: list[int] = []
    answered: set[int] = set()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                if sent and random.random() < REPLAYS:
                    n = random.choice(sent)
                else:
                    n = next(fresh)
                    sent.append(n)
                body, signature = events[n]
                started = time.perf_counter()
                async with http.post(url, data=body, headers={
                        "Stripe-Signature": signature,
                        "Content-Type": "application/json"}) as r:
                    await r.read()
                    if r.status >= 300:
                        errors += 1
                    else:
                        answered.add(n)
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Result(name, len(latencies), errors, elapsed, latencies), len(answered)


def baseline_server(port: int) -> None:
    """The baseline: aiohttp, the Stripe SDK's signature check, a fixed answer."""
    import stripe
    import uvloop
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            stripe.WebhookSignature.verify_header(body, request.headers.get(
                "Stripe-Signature", ""), SECRET, tolerance=300)
        except stripe.SignatureVerificationError:
            return web.json_response({"error": "invalid signature"}, status=401)
        return web.json_response({"received": True})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/webhook", handle)
    app.router.add_get("/healthz", healthz)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


async def main(seconds: float, concurrency: int) -> None:
    # Enough fresh events for a fast run (a deliberate overestimate: signing is cheap).
    events = signed_events(int(seconds * 20_000) + 10_000)
    async with infrastructure() as (nats_url, database_url):
        bare_port = free_port()
        env = billing_env(nats_url, database_url, BILLING_PORT=str(free_port()),
                          STRIPE_WEBHOOK_SECRET=SECRET)
        bare = spawn(str(Path(__file__).resolve()), "--baseline-server", str(bare_port), env={})
        try:
            async with gateway_over(env, "ledger", "payments") as base:
                await secret_key(database_url)  # the organization `bench`
                await wait_http(f"http://127.0.0.1:{bare_port}/healthz")
                baseline, _ = await deliver("bare aiohttp + HMAC check",
                                            f"http://127.0.0.1:{bare_port}/webhook", events,
                                            concurrency, seconds)
                conn = await asyncpg.connect(database_url)
                before = await cpu_now(conn, nats_url)
                xacts_before = await conn.fetchval(COMMITS)
                result, distinct = await deliver(
                    "POST /billing/webhooks/stripe/{org}",
                    f"{base}/api/v1/billing/webhooks/stripe/bench", events, concurrency,
                    seconds)
                await asyncio.sleep(1.0)  # the relay and the event log catch up
                after = await cpu_now(conn, nats_url)
                await asyncio.sleep(0.6)  # the statistics collector reports every 500 ms
                xacts = await conn.fetchval(COMMITS) - xacts_before
                stored, rows = await conn.fetchrow(
                    "select count(distinct event_id), count(*)"
                    " from payments.webhook_events_in")
                by_status = dict(await conn.fetch(
                    "select status, count(*) from payments.webhook_events_in group by status"))
                logged = await conn.fetchval(
                    "select count(*) from payments.billing_events where type like 'provider.%'")
                # How many share a transaction: rows no effect updated afterwards (xmin).
                intake_batch = await conn.fetchval(
                    "select count(*)::float / greatest(count(distinct xmin::text), 1)"
                    " from payments.webhook_events_in where type = 'charge.succeeded'")
                log_batch = await conn.fetchval(
                    "select count(*)::float / greatest(count(distinct xmin::text), 1)"
                    " from payments.billing_events where type like 'provider.%'")
                await conn.close()
        finally:
            stop([bare])
    print(f"\ninbound webhooks, {concurrency} concurrent clients, {seconds:.0f} s each,"
          f" {REPLAYS:.0%} redeliveries")
    for r in (baseline, result):
        print(r.line())
    print(f"webhooks: {result.rps / baseline.rps:.2f} × the bare handler")
    print(f"distinct events {'sent' if shutil.which('wrk') else 'answered 2xx'}: {distinct};"
          f" stored: {stored} ({rows} rows); by outcome: {by_status};"
          f" in the event log 1 s later: {logged}")
    whole = stored == rows == logged and (stored == distinct or (
        shutil.which("wrk") and distinct - concurrency <= stored <= distinct))
    print(f"every distinct event stored once and in the event log: {'yes' if whole else 'NO'}")
    print(f"rows per transaction: intake {intake_batch:.1f}, event log {log_batch:.1f};"
          f" database transactions per delivery: {xacts / max(result.requests, 1):.3f}")
    # CPU per delivery of each process (the relay and the event log run in payments'),
    # including the second after the run in which they catch up.
    print("\n".join(cpu_lines(before, after, result.requests - result.errors,
                              result.seconds + 1.0, "delivery")))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--baseline-server", type=int, default=0)
    parser.add_argument("--inbound-only", action="store_true")
    parser.add_argument("--outbound-args", default="")
    args = parser.parse_args()
    if args.baseline_server:
        baseline_server(args.baseline_server)
    else:
        import uvloop

        uvloop.run(main(args.seconds, args.concurrency))
        if not args.inbound_only:
            outbound = Path(__file__).resolve().with_name("webhook_deliveries.py")
            sys.exit(subprocess.run([sys.executable, str(outbound),
                                     *shlex.split(args.outbound_args)]).returncode)
