"""What the tests share: one HTTP client, one bus client, scope and id makers, a poller,
stand-ins for services not built yet.

Plain functions over the `http` session and the `nc` connection that conftest.py's
fixtures give; a test module keeps only what is its own (its paths, its helpers in billing
terms). HTTP calls answer (status, JSON body, headers)."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats
import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NotFoundError

from contracts import Actor, Request, Scope, events, journal
from contracts.errors import Failure
from services.runtime.bus import Service
from services.runtime.config import Settings
from services.runtime.service import Router, ServiceSpec

ROOT = Path(__file__).resolve().parents[1]  # the repository
API = "/api/v1/billing"
PLATFORM = Actor(kind="service", role="platform", may_mint=True)  # a service that may mint

Reply = tuple[int, Any, Any]  # status, JSON body (None when empty), response headers


# ---- HTTP ---------------------------------------------------------------------------------


async def request(http: aiohttp.ClientSession, method: str, path: str,
                  headers: dict[str, str] | None = None, body: Any = None, *,
                  raw: bytes | None = None, lenient: bool = False, **kw: Any) -> Reply:
    """The one HTTP call: `body` goes as JSON, `raw` as those bytes instead; `lenient`
    answers a body that is not JSON as its text instead of failing."""
    if raw is not None:
        kw["data"] = raw
    elif body is not None:
        kw["json"] = body
    async with http.request(method, path, headers=headers or {}, **kw) as r:
        if lenient:
            text = await r.text()
            try:
                decoded = await r.json(content_type=None)
            except ValueError:
                decoded = text
            return r.status, decoded, r.headers
        data = await r.read()
        return r.status, (await r.json() if data.strip() else None), r.headers


async def post(http: aiohttp.ClientSession, path: str, body: Any, headers: dict[str, str],
               *, prefix: str = API, **kw: Any) -> Reply:
    """POST `body` as JSON (or `raw=` bytes) to `prefix + path`."""
    return await request(http, "POST", prefix + path, headers, body, **kw)


async def get(http: aiohttp.ClientSession, path: str, headers: dict[str, str], *,
              prefix: str = API, **params: Any) -> Reply:
    """GET `prefix + path` with `params` as the query."""
    return await request(http, "GET", prefix + path, headers, params=params)


# ---- the bus ------------------------------------------------------------------------------

_encode = msgspec.json.Encoder().encode


def scope(org_id: str, *, livemode: bool = False, actor: Actor = PLATFORM,
          key: str | None = None, fingerprint: str | None = None,
          org_name: str | None = None, request_id: str | None = None,
          deadline_ms: int = 0) -> Scope:
    """A request's scope as the gateway would send it (`key`: an idempotency key, sent
    with the fingerprint `fp` unless another is given); the org's name is its id."""
    return Scope(org_id=org_id, org_name=org_id if org_name is None else org_name,
                 livemode=livemode, actor=actor,
                 request_id=request_id or secrets.token_hex(8), idempotency_key=key,
                 fingerprint=fingerprint or (key and "fp"), deadline_ms=deadline_ms)


class Bus:
    """One organization and mode talking to the services over NATS, as another service
    does: replies come back as the decoded envelope (a dict)."""

    def __init__(self, nc: Any, org_id: str | None = None, livemode: bool = False):
        self.nc = nc
        self.org_id = org_id or f"t-{secrets.token_hex(6)}"
        self.livemode = livemode

    async def ask(self, subject: str, params: Any, key: str | None = None, *,
                  actor: Actor = PLATFORM) -> dict:
        """The whole reply envelope."""
        sent = Request(scope(self.org_id, livemode=self.livemode, actor=actor, key=key), params)
        msg = await self.nc.request(subject, _encode(sent), timeout=30)
        return msgspec.json.decode(msg.data)

    async def ok(self, subject: str, params: Any, key: str | None = None, **kw: Any) -> dict:
        """The result of a request that must succeed."""
        reply = await self.ask(subject, params, key, **kw)
        assert "error" not in reply, reply
        return reply["result"]

    async def error(self, subject: str, params: Any, key: str | None = None,
                    **kw: Any) -> tuple[int, str]:
        """(status, message) of a request that must fail."""
        reply = await self.ask(subject, params, key, **kw)
        assert "error" in reply, reply
        return reply["error"]["status"], reply["error"]["message"]


@asynccontextmanager
async def bus_service(settings: Settings, router: Router | None = None) -> AsyncIterator[Service]:
    """A service of the test's own on the bus, as payments will be: it asks the others
    directly (no gateway between) and answers what `router` declares."""
    running = Service(ServiceSpec(f"test-{secrets.token_hex(3)}", router or Router(), None),
                      Settings.from_env({"NATS_URL": settings.nats_url}))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


# ---- the platform -------------------------------------------------------------------------


def service(platform: Any, name: str) -> Any:
    """The running service called `name` (its pool, its context)."""
    return next(s for s in platform.services if s.name == name)


class Running:
    """The service called `name` as it runs now, whichever replica that is (`service_down`
    replaces it): its attributes (pool, ctx, keys) are read from it at each use."""

    def __init__(self, platform: Any, name: str):
        self._platform = platform
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(service(self._platform, self._name), attribute)


async def org_id_of(platform: Any, org: Any) -> str:
    """The id the gateway gave the organization (what a service's scope carries)."""
    return await platform.gateway.pool.fetchval("select id from gateway.orgs where name = $1",
                                                org.name)


def new_user() -> str:
    """A user id no other test uses."""
    return f"hanzo/u{secrets.token_hex(4)}"


def zulu(ts: datetime) -> str:
    """An RFC 3339 UTC timestamp ending in Z, as clients send them."""
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def eventually(read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool],
                     timeout: float = 5.0, every: float = 0.05) -> Any:
    """What `read()` answers once `done` holds of it, or its last answer at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(every)


# ---- the ledger over HTTP -----------------------------------------------------------------


async def balance(http: aiohttp.ClientSession, org: Any, user: str) -> int:
    """The user's test-mode balance, read with the org's secret key."""
    status, body, _ = await get(http, "/balance", org.auth(), user=user)
    assert status == 200, body
    return body["balance"]


# ---- metering over HTTP -------------------------------------------------------------------

ASYNC = {"Prefer": "respond-async"}  # meter events taken asynchronously, through JetStream


def meter_name(event_name: str) -> str:
    """The name `make_meter` gives a meter: its event name in title case."""
    return event_name.replace("_", " ").title()


async def make_meter(http: aiohttp.ClientSession, org: Any, event_name: str = "api_calls",
                     aggregation: str = "sum", key: str = "sk_test",
                     name: str | None = None) -> str:
    """A new meter's id (named `meter_name(event_name)` unless `name` is given)."""
    status, body, _ = await post(http, "/meters", {
        "name": meter_name(event_name) if name is None else name,
        "eventName": event_name, "aggregationType": aggregation}, org.auth(key))
    assert status == 201, body
    return body["id"]


def ev(meter_id: str, value: int = 1, user: str = "alice", **extra: Any) -> dict:
    """One meter event as a client sends it."""
    return {"meterId": meter_id, "userId": user, "value": value, **extra}


async def record(http: aiohttp.ClientSession, org: Any, events: list, headers=None,
                 key: str = "sk_test") -> Reply:
    """POST a batch of meter events."""
    return await post(http, "/meter-events", {"events": events},
                      {**org.auth(key), **(headers or {})})


async def summary(http: aiohttp.ClientSession, org: Any, meter_id: str, key: str = "sk_test",
                  **query: Any) -> dict:
    """The meter's summary, asserting the read succeeds."""
    status, body, _ = await get(http, "/meter-events/summary", org.auth(key), meterId=meter_id,
                                **query)
    assert status == 200, body
    return body


async def eventually_value(http: aiohttp.ClientSession, org: Any, meter_id: str, expected: Any,
                           timeout: float = 5.0, **query: Any) -> dict:
    """The summary once its value reaches `expected` (asynchronous ingestion)."""
    return await eventually(lambda: summary(http, org, meter_id, **query),
                            lambda body: body["value"] == expected, timeout)


# ---- events -------------------------------------------------------------------------------


async def stream_ready(js: Any, stream: str = events.STREAM) -> None:
    """Wait for a relay to have created the events stream."""
    for _ in range(100):
        try:
            await js.stream_info(stream)
            return
        except NotFoundError:
            await asyncio.sleep(0.05)
    raise AssertionError("the events stream was never created")


async def received(sub: Any, timeout: float = 5.0) -> list:
    """Messages until none arrives for `timeout` seconds."""
    out = []
    while True:
        try:
            out.append(await sub.next_msg(timeout=timeout))
        except NatsTimeout:
            return out


async def pending(pool: Any, schema: str) -> int:
    """Outbox rows of `schema` not published yet."""
    return await pool.fetchval(f"select count(*) from {schema}.outbox where published_at is null")


# ---- payments over HTTP -------------------------------------------------------------------


async def add_payment_method(http: aiohttp.ClientSession, org: Any, user: str,
                             token: str = "tok_visa", key: str = "sk_test") -> dict:
    """A payment method the provider accepted (verified) for `user`, made through the API
    (test mode: the offline provider vaults the token)."""
    status, body, _ = await post(http, "/payment-methods",
                                 {"customerId": user, "providerRef": token}, org.auth(key))
    assert status == 201, body
    return body


async def has_payment_method(http: aiohttp.ClientSession, org: Any, user: str,
                             expected: bool = True, key: str = "sk_test") -> bool:
    """`hasPaymentMethod` in the user's billing status once it is `expected` (else as it is
    after a second). The ledger learns of payment methods from payments' events, a few
    milliseconds after the change: a read right after it may still see the one before."""
    async def read() -> bool:
        status, body, _ = await get(http, "/status", org.auth(key), user=user)
        assert status == 200, body
        return body["hasPaymentMethod"]

    return await eventually(read, lambda seen: seen is expected, timeout=1.0, every=0.005)


async def paid_intent(http: aiohttp.ClientSession, org: Any, amount: int = 5000,
                      key: str = "sk_test") -> dict:
    """A succeeded payment intent of `amount` for a new user, paid with a saved method
    (test mode: the offline provider charges it)."""
    user = new_user()
    method = await add_payment_method(http, org, user, key=key)
    status, created, _ = await post(http, "/payment-intents", {
        "customerId": user, "amount": amount, "paymentMethodId": method["id"]}, org.auth(key))
    assert status == 201, created
    status, paid, _ = await post(http, f"/payment-intents/{created['id']}/confirm", None,
                                 org.auth(key))
    assert (status, paid["status"]) == (200, "succeeded"), paid
    return paid


async def events_of(pool: Any, object_id: str) -> list[str]:
    """The types of the payments events about `object_id`, in outbox order."""
    return [r["type"] for r in await pool.fetch(
        "select type from payments.outbox"
        " where convert_from(payload, 'utf8')::jsonb->>'objectId' = $1 order by seq",
        object_id)]


@asynccontextmanager
async def service_down(platform: Any, name: str) -> AsyncIterator[None]:
    """The service called `name` is stopped while the block runs; then a new replica of it
    starts (and takes its place in the platform)."""
    old = service(platform, name)
    await old.stop()
    try:
        yield
    finally:
        new = Service(old.spec, old.settings)
        await new.start()
        platform.services[platform.services.index(old)] = new


@asynccontextmanager
async def service_with(platform: Any, name: str, settings: Settings) -> AsyncIterator[Service]:
    """The service called `name` runs with `settings` while the block runs (a replica in
    its place); then a replica with its own settings again."""
    old = service(platform, name)
    await old.stop()
    replica = Service(old.spec, settings)
    await replica.start()
    platform.services[platform.services.index(old)] = replica
    try:
        yield replica
    finally:
        await replica.stop()
        new = Service(old.spec, old.settings)
        await new.start()
        platform.services[platform.services.index(replica)] = new


# ---- stand-ins and tools ------------------------------------------------------------------


def refused(fn: Callable[..., Any], *args: Any) -> tuple[int, str]:
    """(status, message) of the Failure that `fn(*args)` raises."""
    with pytest.raises(Failure) as e:
        fn(*args)
    return e.value.error.status, e.value.error.message


@asynccontextmanager
async def responder(nats_url: str, subject: str, answer: Callable[[dict], Any],
                    queue: str = "") -> AsyncIterator[None]:
    """Stands in for a service not built yet while the block runs: answers each request on
    `subject` with `{"result": answer(request)}`."""
    conn = await nats.connect(nats_url)
    try:
        async def respond(msg):
            result = answer(msgspec.json.decode(msg.data))
            await msg.respond(msgspec.json.encode({"result": result}))

        await conn.subscribe(subject, queue=queue, cb=respond)
        await conn.flush()
        yield
    finally:
        await conn.close()


def ledger_verify(database_url: str) -> subprocess.CompletedProcess:
    """`billing ledger verify` against the database, in a process of its own."""
    return subprocess.run([sys.executable, "-m", "services.cli", "ledger", "verify"],
                          env={**os.environ, "DATABASE_URL": database_url},
                          capture_output=True, text=True, timeout=60)


async def journal_entries(platform: Any, nc: Any, org: Any, **query: Any) -> list[dict]:
    """The ledger journal's entries of the org's test mode that match `query`
    (`paymentIntentId`, `refundId`, `payoutId`, `disputeId`, …)."""
    tenant = Bus(nc, await org_id_of(platform, org))
    return (await tenant.ok(journal.ENTRY_LIST.subject,
                            journal.JournalEntryListParams(**query)))["entries"]


class providing:  # noqa: N801 (a context manager, named as a phrase)
    """Every provider the payments service chooses is `provider` while the block runs."""

    def __init__(self, payments_service: Any, provider: Any):
        self.providers, self.provider = payments_service.ctx.state.providers, provider

    def __enter__(self) -> Any:
        async def issuer(scope: Scope, name: str) -> Any:
            return self.provider

        self.providers.issuer = issuer  # the instance's
        return self.provider

    def __exit__(self, *exc: Any) -> None:
        del self.providers.issuer
