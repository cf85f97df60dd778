"""Top-ups survive faults at every step (the issue's fault tests): the provider failing
after it charged, the payments process killed with SIGKILL after the provider charged, after
the charge was recorded but before the ledger credited it, and after the ledger credited it
but before payments answered. Each time, once payments runs again: the provider charged
once, the balance was credited once, the books verify, and the client's retry with its key
gets the answer.

Payments and the ledger run as processes of their own (`python -m services.cli serve`) on a
NATS server and a database of this test's; Stripe is the local wire-format server of
test_stripe_adapter.py, reached through the platform's environment credentials."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import msgspec
import nats
import pytest
from aiohttp import web

from contracts.envelope import Request
from contracts.payments import TOPUP_TOKEN, TopupTokenParams
from services.runtime import db
from services.runtime.embedded import EmbeddedNats, free_port
from tests.payments.test_stripe_adapter import API_KEY, FakeStripe, Recorded, fixture
from tests.support import ROOT, eventually, ledger_verify, scope

pytestmark = pytest.mark.slow

ORG = "org_faults"
AMOUNT = 2500


class FlakyStripe(FakeStripe):
    """Stripe that, on a charge, can answer 500 after charging (`fail_after_charging`
    times; Stripe keeps the charge under its key), and can call `on_charge` (a crash) once
    the charge exists."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_after_charging = 0
        self.on_charge = None

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/v1/payment_intents" and request.method == "POST":
            key = request.headers.get("Idempotency-Key", "")
            if key not in self.replays:
                form = dict(await request.post())
                rec = Recorded("POST", request.path, dict(request.headers),
                               {k: str(v) for k, v in form.items()})
                self.requests.append(rec)
                self.replays[key] = self.answer(rec)  # charged: Stripe has it now
                if self.on_charge is not None:
                    crash, self.on_charge = self.on_charge, None
                    crash()
            if self.fail_after_charging:  # the SDK's retry of the same key fails too
                self.fail_after_charging -= 1
                return web.json_response(fixture("api_error"), status=500)
        return await super().handle(request)


class Cluster:
    def __init__(self, postgres_url: str):
        self.scratch = Path(tempfile.mkdtemp(prefix="billing-topup-faults-", dir="/tmp"))
        self.nats = EmbeddedNats(self.scratch / "nats", port=free_port())
        self.postgres_url = postgres_url
        self.database_url = db.with_database(postgres_url,
                                             f"billing_topup_{secrets.token_hex(4)}")
        self.stripe = FlakyStripe()
        self.processes: dict[str, subprocess.Popen] = {}
        self.runner: web.AppRunner | None = None
        self.stripe_url = ""
        self.pool: asyncpg.Pool | None = None
        self.nc: nats.NATS | None = None

    async def start(self) -> None:
        self.nats.start()
        await db.ensure_database(self.database_url)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.stripe.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.stripe_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        await self.start_service("ledger")
        await self.start_service("payments")
        self.pool = await db.create_pool(self.database_url, min_size=1, max_size=2)
        self.nc = await nats.connect(self.nats.url)

    async def start_service(self, name: str) -> None:
        proc, log = self._spawn(name)
        deadline = time.monotonic() + 30
        while f"billing {name} running".encode() not in log.read_bytes():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"{name} did not start"
            await asyncio.sleep(0.05)

    def _spawn(self, name: str) -> tuple[subprocess.Popen, Path]:
        log = self.scratch / f"{name}-{secrets.token_hex(2)}.log"
        env = {**os.environ, "NATS_URL": self.nats.url, "DATABASE_URL": self.database_url,
               "STRIPE_SECRET_KEY": API_KEY, "STRIPE_API_BASE": self.stripe_url,
               "PAYMENTS_RECOVERY_SECONDS": "1", "BILLING_LOG_LEVEL": "INFO"}
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", name],
                                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.processes[name] = proc
        return proc, log

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown of any kind."""
        proc = self.processes[name]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    async def top_up(self, user: str, key: str, timeout: float = 15) -> dict:
        request = Request(scope(ORG, key=key), TopupTokenParams(
            sourceId="pm_card_visa", amountCents=AMOUNT, userId=user))
        try:
            msg = await self.nc.request(TOPUP_TOKEN.subject, msgspec.json.encode(request),
                                        timeout=timeout)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            return {"error": {"status": 0, "message": "no answer"}}
        return msgspec.json.decode(msg.data)

    async def credited(self, user: str) -> list[int]:
        return [r["amount"] for r in await self.pool.fetch(
            "select amount from ledger.transactions where user_id = $1 and tags = 'topup'",
            user)]

    def charges(self, user: str) -> int:
        """Distinct charges Stripe made for this user's top-ups (replays are not charges:
        they carry a charge's idempotency key again)."""
        return len({r.key for r in self.stripe.requests
                    if r.path == "/v1/payment_intents"
                    and user in r.form.get("description", "")})

    async def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
            if proc.poll() is None:
                proc.kill()
        if self.nc is not None:
            await self.nc.close()
        if self.pool is not None:
            await self.pool.close()
        if self.runner is not None:
            await self.runner.cleanup()
        self.nats.stop()
        conn = await asyncpg.connect(db.with_database(self.postgres_url, "postgres"))
        try:
            await conn.execute(
                f'drop database if exists "{self.database_url.rsplit("/", 1)[1]}" with (force)')
        finally:
            await conn.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


@pytest.fixture(scope="module")
async def cluster(postgres_url):
    running = Cluster(postgres_url)
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


async def settled(cluster: Cluster, user: str, key: str) -> dict:
    """The client's retry, until payments answers it (recovery may still be finishing)."""
    async def retry():
        return await cluster.top_up(user, key)
    reply = await eventually(retry, lambda r: "result" in r, timeout=30)
    return reply["result"]


async def check_once(cluster: Cluster, user: str, key: str) -> None:
    result = await settled(cluster, user, key)
    assert await cluster.credited(user) == [AMOUNT]
    assert result["balanceCents"] == AMOUNT
    assert cluster.charges(user) == 1
    again = await cluster.top_up(user, key)
    assert again["result"] == result  # the stored answer
    assert await cluster.credited(user) == [AMOUNT]


async def test_provider_fails_after_charging(cluster):
    """Stripe charges, then answers 500 (twice: the SDK's own retry too): 502 for the
    client, nothing credited yet; the retry with the same key finds the charge."""
    user, key = "acme/failed-after-charging", "topup-fault-1"
    cluster.stripe.fail_after_charging = 2
    first = await cluster.top_up(user, key)
    assert first["error"]["status"] == 502, first
    assert await cluster.credited(user) == []
    await check_once(cluster, user, key)


async def test_killed_after_the_provider_charged(cluster):
    """Payments dies while Stripe answers the charge: nothing of it was recorded here but
    the claim. Restarted, recovery asks Stripe again under the same key and credits once."""
    user, key = "acme/killed-after-charge", "topup-fault-2"
    cluster.stripe.on_charge = lambda: cluster.kill("payments")
    first = await cluster.top_up(user, key, timeout=5)
    assert "result" not in first
    await cluster.start_service("payments")
    await check_once(cluster, user, key)


async def _kill_when_the_ledger_is_asked(cluster: Cluster) -> nats.aio.subscription.Subscription:
    """Kill payments as soon as it sends a top-up credit to the ledger."""
    async def on_credit(msg):
        if "topup" in msg.subject and cluster.processes["payments"].poll() is None:
            cluster.kill("payments")
    return await cluster.nc.subscribe("billing.ledger.>", cb=on_credit)


async def test_killed_before_the_ledger_credited(cluster):
    """The charge and the credit it owes are recorded; payments dies sending the credit,
    and the ledger is down: once both run again, the credit is posted once."""
    user, key = "acme/killed-before-credit", "topup-fault-3"
    cluster.kill("ledger")
    watch = await _kill_when_the_ledger_is_asked(cluster)
    try:
        first = await cluster.top_up(user, key, timeout=5)
        assert "result" not in first
    finally:
        await watch.unsubscribe()
    assert await cluster.credited(user) == []
    await cluster.start_service("ledger")
    await cluster.start_service("payments")
    await check_once(cluster, user, key)


async def test_killed_after_the_ledger_credited(cluster):
    """The ledger credits; payments dies before it records the answer: recovery sends the
    credit again, the ledger recognizes the top-up, nothing is credited twice."""
    user, key = "acme/killed-after-credit", "topup-fault-4"
    watch = await _kill_when_the_ledger_is_asked(cluster)
    try:
        first = await cluster.top_up(user, key, timeout=5)
        assert "result" not in first
    finally:
        await watch.unsubscribe()
    await eventually(lambda: cluster.credited(user), lambda c: c == [AMOUNT], timeout=10)
    await cluster.start_service("payments")
    await check_once(cluster, user, key)


async def test_the_books_verify(cluster):
    assert ledger_verify(cluster.database_url).returncode == 0
