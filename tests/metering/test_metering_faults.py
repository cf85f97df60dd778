"""Faults during sustained asynchronous ingestion (`Prefer: respond-async`): a metering worker
killed with SIGKILL, and the NATS server restarted (JetStream file store). Every event the
gateway acknowledged with 202 must end up in PostgreSQL exactly once; while NATS is down the
gateway answers 503 at once.

Each test runs its own NATS server, database and metering worker processes
(`python -m services.cli serve metering`), with the gateway in the test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
import nats
import pytest

from contracts.metering import METER_EVENTS_CONSUMER, METER_EVENTS_STREAM
from services.gateway import store
from services.gateway.app import Gateway
from services.runtime import db
from services.runtime.config import Settings
from services.runtime.embedded import EmbeddedNats, free_port
from tests.support import ROOT, eventually

pytestmark = pytest.mark.slow

PEPPER = "faults-pepper"
ACK_WAIT_S = 2  # a killed worker's batches are redelivered this soon
EVENTS_PER_BATCH = 20


class Cluster:
    """NATS, a database, metering workers and a gateway, for one test."""

    def __init__(self, postgres_url: str):
        self.scratch = Path(tempfile.mkdtemp(prefix="billing-faults-", dir="/tmp"))
        self.nats = EmbeddedNats(self.scratch / "nats", port=free_port())
        self.database_url = db.with_database(postgres_url,
                                             f"billing_faults_{secrets.token_hex(4)}")
        self.postgres_url = postgres_url
        self.workers: list[subprocess.Popen] = []
        self.gateway: Gateway | None = None
        self.pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        self.nats.start()
        await db.ensure_database(self.database_url)
        await self.start_worker()
        self.gateway = Gateway(Settings.from_env({
            "NATS_URL": self.nats.url, "DATABASE_URL": self.database_url,
            "BILLING_PORT": "0", "BILLING_KEY_PEPPER": PEPPER}))
        await self.gateway.start()
        self.pool = await db.create_pool(self.database_url, min_size=1, max_size=2)

    async def start_worker(self) -> subprocess.Popen:
        proc, log = self._spawn_worker()
        deadline = time.monotonic() + 30
        while b"billing metering running" not in log.read_bytes():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "metering worker did not start"
            await asyncio.sleep(0.05)
        return proc

    def _spawn_worker(self) -> tuple[subprocess.Popen, Path]:
        log = self.scratch / f"worker-{len(self.workers)}.log"
        env = {**os.environ, "NATS_URL": self.nats.url, "DATABASE_URL": self.database_url,
               "METERING_ACK_WAIT": str(ACK_WAIT_S), "BILLING_LOG_LEVEL": "INFO"}
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "metering"],
                                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        return proc, log

    async def secret_key(self) -> str:
        org = await store.provision_org(self.gateway.pool, "faults")
        _, key = await store.create_key(self.gateway.pool, PEPPER, org, livemode=False,
                                        kind="secret")
        return key

    async def stored(self) -> tuple[int, set[str]]:
        rows = await self.pool.fetch("select id from metering.events")
        return len(rows), {r["id"] for r in rows}

    async def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
            if proc.poll() is None:
                proc.kill()
        if self.gateway is not None:
            await self.gateway.stop()
        if self.pool is not None:
            await self.pool.close()
        self.nats.stop()
        conn = await asyncpg.connect(db.with_database(self.postgres_url, "postgres"))
        try:
            await conn.execute(
                f'drop database if exists "{self.database_url.rsplit("/", 1)[1]}" with (force)')
        finally:
            await conn.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


@pytest.fixture
async def cluster(postgres_url):
    running = Cluster(postgres_url)
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


class Load:
    """API nodes sending batches asynchronously; a batch refused with 503 (or cut off) is
    sent again as it was, as a client would. Keeps the ids of every acknowledged event."""

    def __init__(self, http: aiohttp.ClientSession, key: str, meter_id: str, clients: int):
        self.http = http
        self.headers = {"Authorization": f"Bearer {key}", "Prefer": "respond-async"}
        self.meter_id = meter_id
        self.clients = clients
        self.acked: list[str] = []
        self.unavailable = 0  # 503 answers
        self.running = True
        self.batches = 0

    async def run(self) -> None:
        await asyncio.gather(*[self._client(c) for c in range(self.clients)])

    async def _client(self, client: int) -> None:
        n = 0
        while self.running:
            n += 1
            # Half the events carry an idempotency key, half rely on their batch's ids.
            events = [{"meterId": self.meter_id, "userId": f"user-{client}", "value": 1,
                       **({"idempotency": f"{client}-{n}-{i}"} if i % 2 else {})}
                      for i in range(EVENTS_PER_BATCH)]
            await self._send({"events": events})
            self.batches += 1

    async def _send(self, body: dict) -> None:
        while True:
            try:
                async with self.http.post("/api/v1/billing/meter-events", json=body,
                                          headers=self.headers) as r:
                    if r.status == 202:
                        self.acked.extend(e["id"] for e in (await r.json())["events"])
                        return
                    assert r.status == 503, await r.text()
                    self.unavailable += 1
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)


async def _meter(http: aiohttp.ClientSession, key: str) -> str:
    async with http.post("/api/v1/billing/meters", json={"name": "Calls", "eventName": "calls"},
                         headers={"Authorization": f"Bearer {key}"}) as r:
        assert r.status == 201, await r.text()
        return (await r.json())["id"]


async def _all_stored(cluster: Cluster, acked: list[str], timeout: float = 30.0) -> set[str]:
    count, ids = await eventually(cluster.stored, lambda stored: set(acked) <= stored[1],
                                  timeout, every=0.2)
    assert count == len(ids), f"{count - len(ids)} events stored twice"
    return ids


async def test_a_worker_killed_mid_ingest_loses_and_duplicates_nothing(cluster):
    key = await cluster.secret_key()
    base = f"http://127.0.0.1:{cluster.gateway.port}"
    async with aiohttp.ClientSession(base_url=base) as http:
        meter_id = await _meter(http, key)
        load = Load(http, key, meter_id, clients=8)
        running = asyncio.create_task(load.run())
        await asyncio.sleep(1.0)
        first = cluster.workers[0]
        assert (await cluster.stored())[0] > 0  # the worker is storing
        # Hold its next write inside its transaction, so the kill lands mid-write with
        # fetched batches not yet acknowledged.
        async with cluster.pool.acquire() as conn, conn.transaction():
            await conn.execute("lock table metering.ingested_batches in exclusive mode")
            while True:  # until it holds batches it fetched and cannot store yet
                if (await _consumer(cluster)).num_ack_pending > 0:
                    break
                await asyncio.sleep(0.05)
            first.kill()  # SIGKILL
            first.wait()
        await cluster.start_worker()
        await asyncio.sleep(1.5)
        load.running = False
        await running
    ids = await _all_stored(cluster, load.acked)
    assert load.acked and len(set(load.acked)) == len(load.acked)
    assert ids == set(load.acked)  # every acknowledged event, once; nothing else
    # The killed worker's batches were delivered again, to the new worker: more deliveries
    # than messages.
    delivered = (await _consumer(cluster)).delivered
    assert delivered.consumer_seq > delivered.stream_seq


async def _consumer(cluster: Cluster):
    nc = await nats.connect(cluster.nats.url)
    try:
        return await nc.jetstream().consumer_info(METER_EVENTS_STREAM, METER_EVENTS_CONSUMER)
    finally:
        await nc.close()


async def test_nats_restart_loses_no_acknowledged_event(cluster):
    key = await cluster.secret_key()
    base = f"http://127.0.0.1:{cluster.gateway.port}"
    async with aiohttp.ClientSession(base_url=base) as http:
        meter_id = await _meter(http, key)
        load = Load(http, key, meter_id, clients=8)
        running = asyncio.create_task(load.run())
        await asyncio.sleep(1.5)
        before_outage = len(load.acked)
        cluster.nats.stop()  # SIGTERM; JetStream keeps its file store
        await asyncio.sleep(0.3)
        # While NATS is down the gateway says so at once.
        started = time.monotonic()
        async with http.post("/api/v1/billing/meter-events", headers=load.headers, json={
                "events": [{"meterId": meter_id, "userId": "probe", "value": 1}]}) as r:
            assert r.status == 503
            assert (await r.json())["error"]["message"] == "service unavailable"
        assert time.monotonic() - started < 0.5
        await asyncio.sleep(0.7)
        cluster.nats.start()
        await asyncio.sleep(2.0)
        load.running = False
        await running
    assert load.unavailable > 0 and before_outage > 0
    assert len(load.acked) > before_outage  # ingestion resumed after the restart
    ids = await _all_stored(cluster, load.acked)
    assert len(set(load.acked)) == len(load.acked)
    assert ids == set(load.acked)
