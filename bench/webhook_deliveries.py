"""Outbound webhooks: how many deliveries a second payments sends, how soon after the event,
and what an outage of the receiver costs.

Payments runs in its own process (its event log reads `billing.events.>`, its sender POSTs);
a receiver in another process checks each `Commerce-Signature` and records what came, when.
This process publishes events straight onto the stream, as services' outbox relays do.

1. baseline: this process POSTs signed events at the receiver itself (how fast the receiver
   is: a bare aiohttp handler doing the HMAC check);
2. throughput: `--events` events, each to `--endpoints` endpoints, published at once;
   deliveries/s from the first publish to the last delivery, and the CPU time per delivery
   of payments, PostgreSQL and NATS (read from /proc, as `bench/topup_cpu.py` does);
3. latency: events paced at `--rate`/s for `--seconds`, spread over 4 endpoints (one event
   type each); event `created` → received, p50/p99;
4. outage: the receiver answers 503 for `--outage` seconds while events keep coming at
   `--outage-rate`/s; then it is up, and the backlog drains (after each endpoint's next
   scheduled retry: 1 minute ±10 % after its first failure, or when that one fell inside
   the outage, 5 minutes ±10 % after it: the wait covers both). Nothing may be lost, and each
   endpoint must see its events in publishing order (a redelivery may repeat one).

    .venv/bin/python bench/webhook_deliveries.py [--endpoints 20] [--events 2000]
        [--rate 1000] [--seconds 10] [--outage 60] [--outage-rate 200]   (--outage 0: none)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import msgspec  # noqa: E402
import nats  # noqa: E402
from aiohttp import web  # noqa: E402

from bench.common import billing_env, infrastructure, spawn, stop  # noqa: E402
from bench.topup_cpu import cpu_lines, cpu_now  # noqa: E402
from contracts import Actor, Request, Scope, events  # noqa: E402
from contracts.ids import new_id, now, rfc3339  # noqa: E402
from contracts.webhooks import (  # noqa: E402
    SIGNATURE_HEADER,
    WEBHOOK_ENDPOINT_CREATE,
    WebhookEndpointCreateParams,
    sign,
    verify,
)
from services.runtime.embedded import free_port  # noqa: E402
from services.runtime.encryption import new_key  # noqa: E402

ORG = "bench-webhooks"
LATENCY_TYPES = ("invoice.created", "invoice.finalized", "invoice.voided",
                 "invoice.payment_failed")
_encode = msgspec.json.Encoder().encode


# ---- the receiver (its own process) ----------------------------------------------------------


def receiver(port: int) -> None:
    secrets: dict[str, str] = {}
    got: dict[str, list[tuple[int, float]]] = {}  # path -> (event n, latency ms)
    state = {"down": False, "refused": 0, "bad": 0}

    async def deliver(request: web.Request) -> web.Response:
        body = await request.read()
        name = request.match_info["name"]
        if state["down"]:
            state["refused"] += 1
            return web.Response(status=503)
        secret = secrets.get(name)
        try:
            if secret is not None:
                verify(request.headers.get(SIGNATURE_HEADER, ""), body, secret)
        except ValueError:
            state["bad"] += 1
            return web.Response(status=400)
        event = json.loads(body)
        sent = event["data"]["sent"]
        got.setdefault(name, []).append((event["data"]["n"], (time.time() - sent) * 1000))
        return web.Response(text="ok")

    async def control(request: web.Request) -> web.Response:
        action = request.match_info["action"]
        if action == "secrets":
            secrets.update(await request.json())
        elif action in ("down", "up"):
            state["down"] = action == "down"
        elif action == "reset":
            got.clear()
        return web.json_response({"got": got, **state})

    app = web.Application()
    app.router.add_post("/hook/{name}", deliver)
    app.router.add_post("/_/{action}", control)
    import uvloop

    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None,
                loop=uvloop.new_event_loop())


# ---- this process ------------------------------------------------------------------------------


async def control(http: aiohttp.ClientSession, base: str, action: str, body=None) -> dict:
    async with http.post(f"{base}/_/{action}", json=body or {}) as r:
        return await r.json()


async def publish(js, event_type: str, n: int, livemode: bool = False):
    e = events.Event(id=new_id("evt_"), type=event_type, objectType="invoice",
                     objectId=f"in_{n}", orgId=ORG, livemode=livemode, created=rfc3339(now()),
                     data={"n": n, "sent": time.time()})
    return await js.publish_async(events.subject(event_type), _encode(e),
                                  headers={"Nats-Msg-Id": e.id})


async def baseline(http: aiohttp.ClientSession, base: str, seconds: float,
                   concurrency: int = 64) -> float:
    body = _encode({"id": "evt_x", "type": "invoice.paid", "data": {"n": 0, "sent": 0}})
    deadline, done = time.perf_counter() + seconds, 0

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            headers = {SIGNATURE_HEADER: sign(int(time.time()), body, "whsec_bench"),
                       "Content-Type": "application/json"}
            async with http.post(f"{base}/hook/baseline", data=body, headers=headers) as r:
                await r.read()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def wait_for(http, base, expected: int, timeout: float) -> tuple[dict, float]:
    started = time.perf_counter()
    while True:
        state = await control(http, base, "stats")
        if sum(len(v) for v in state["got"].values()) >= expected or (
                time.perf_counter() - started > timeout):
            return state, time.perf_counter() - started
        await asyncio.sleep(0.1)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


def in_order(got: dict[str, list[tuple[int, float]]]) -> tuple[bool, int]:
    """Whether each endpoint saw its events' first copies in publishing order; repeats."""
    ordered, repeats = True, 0
    for received in got.values():
        seen: set[int] = set()
        first = []
        for n, _ in received:
            if n in seen:
                repeats += 1
            else:
                seen.add(n)
                first.append(n)
        ordered = ordered and first == sorted(first)
    return ordered, repeats


async def paced(js, rate: float, seconds: float, types: tuple[str, ...], start_n: int) -> int:
    """Publish at `rate`/s for `seconds`, round-robin over `types`; returns how many."""
    started, n, acks = time.perf_counter(), 0, []
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * rate)
        while n < due:
            acks.append(await publish(js, types[n % len(types)], start_n + n))
            n += 1
        await asyncio.sleep(0.005)
    await asyncio.gather(*acks)
    return n


async def main(args: argparse.Namespace) -> None:
    async with infrastructure() as (nats_url, database_url):
        port = free_port()
        env = billing_env(nats_url, database_url, BILLING_SECRETS_KEY=new_key(),
                          WEBHOOK_CONCURRENCY=str(max(64, args.endpoints + 8)))
        rx = spawn(str(Path(__file__).resolve()), "--receiver", str(port), env={})
        payments = spawn("-m", "services.cli", "serve", "payments", env=env)
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=128)) as http:
                for _ in range(100):
                    try:
                        await control(http, base, "stats")
                        break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)
                scope = Scope(org_id=ORG, org_name=ORG, livemode=False,
                              actor=Actor(kind="service", role="platform"), request_id="bench")
                secrets = {}
                names = ([f"t{i}" for i in range(args.endpoints)]
                         + [f"l{i}" for i in range(len(LATENCY_TYPES))])
                for name in names:
                    kind = ["invoice.paid"] if name[0] == "t" else [
                        LATENCY_TYPES[int(name[1:])]]
                    for _ in range(100):  # payments may still be starting
                        try:
                            msg = await nc.request(WEBHOOK_ENDPOINT_CREATE.subject, _encode(
                                Request(scope, WebhookEndpointCreateParams(
                                    url=f"{base}/hook/{name}", events=kind))), timeout=5)
                            break
                        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                            await asyncio.sleep(0.2)
                    secrets[name] = msgspec.json.decode(msg.data)["result"]["secret"]
                await control(http, base, "secrets", secrets)

                receiver_rps = await baseline(http, base, min(args.seconds, 5))

                # throughput
                await control(http, base, "reset")
                db = await asyncpg.connect(database_url)
                cpu_before = await cpu_now(db, nats_url)
                started = time.perf_counter()
                acks = [await publish(js, "invoice.paid", n) for n in range(args.events)]
                await asyncio.gather(*acks)
                published_s = time.perf_counter() - started
                expected = args.events * args.endpoints
                state, _ = await wait_for(http, base, expected, 120)
                total_s = time.perf_counter() - started
                cpu = cpu_lines(cpu_before, await cpu_now(db, nats_url), expected, total_s,
                                "delivery")
                await db.close()
                got = sum(len(v) for v in state["got"].values())
                throughput = got / total_s

                # latency at a paced rate
                await control(http, base, "reset")
                sent = await paced(js, args.rate, args.seconds, LATENCY_TYPES, 10**6)
                state, _ = await wait_for(http, base, sent, 30)
                latencies = [ms for v in state["got"].values() for _, ms in v]
                lat_ok, _ = in_order(state["got"])

                # outage
                await control(http, base, "reset")
                await control(http, base, "down")
                outage_sent = await paced(js, args.outage_rate, args.outage, LATENCY_TYPES,
                                          2 * 10**6)
                up_at = time.perf_counter()
                refused = (await control(http, base, "up"))["refused"]
                # An endpoint whose 1-minute retry (±10 %) fell inside the outage waits for
                # its 5-minute one: up to 1.1 × 6 minutes after its first failure.
                state, drain_s = await wait_for(http, base, outage_sent,
                                                max(0.0, 1.1 * 360 - args.outage) + 30)
                distinct = sum(len({n for n, _ in v}) for v in state["got"].values())
                ordered, repeats = in_order(state["got"])
                _ = up_at
        finally:
            await nc.close()
            stop([payments, rx])
    print(f"\nwebhook deliveries: {args.endpoints} endpoints, one payments process")
    print(f"baseline: the receiver alone (aiohttp + HMAC check)  {receiver_rps:9,.0f} req/s")
    print(f"throughput: {expected:,} deliveries ({args.events:,} events × {args.endpoints})"
          f" in {total_s:.1f} s (published in {published_s:.1f} s): {throughput:9,.0f}"
          f" deliveries/s, {got:,} received, bad signatures {state['bad']}")
    print("\n".join(cpu))
    print(f"latency at {args.rate:g} events/s for {args.seconds:g} s over"
          f" {len(LATENCY_TYPES)} endpoints: {len(latencies):,}/{sent:,} delivered,"
          f" p50 {percentile(latencies, 0.5):.0f} ms, p99 {percentile(latencies, 0.99):.0f} ms,"
          f" in order: {lat_ok}")
    print(f"outage of {args.outage:g} s at {args.outage_rate:g} events/s: {outage_sent:,} events,"
          f" {refused} attempts refused while down ({max(0, refused - len(LATENCY_TYPES))}"
          f" retries fell inside it, each holding its endpoint 5 more minutes); drained {drain_s:.1f} s after it was up;"
          f" {distinct:,} distinct delivered (lost {outage_sent - distinct}), repeats {repeats},"
          f" in order: {ordered}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--receiver", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--endpoints", type=int, default=20)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--outage", type=float, default=60)
    parser.add_argument("--outage-rate", type=float, default=200)
    args = parser.parse_args()
    if args.receiver:
        receiver(args.receiver)
    else:
        import uvloop

        uvloop.run(main(args))
