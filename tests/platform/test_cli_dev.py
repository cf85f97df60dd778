"""`billing dev` end to end, as a user runs it: once against configured NATS and PostgreSQL
URLs, once with nothing configured (embedded servers). Ctrl-C must stop everything."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from services.runtime import db
from services.runtime.embedded import EmbeddedNats, free_port, port_is_open

pytestmark = pytest.mark.slow

KEY_LINE = re.compile(r"(test|live)-mode secret key: (\S+)")


@pytest.fixture
def started():
    """Every `billing dev` a test starts; killed afterwards even when the test failed."""
    processes: list[asyncio.subprocess.Process] = []
    yield processes
    for proc in processes:
        if proc.returncode is None:
            proc.kill()


async def _start_dev(started: list, env: dict[str, str], port: int
                     ) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "dev", "--port", str(port),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    started.append(proc)
    keys: dict[str, str] = {}
    output = []

    async def read_until_ready() -> None:
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError("billing dev exited:\n" + "".join(output))
            output.append(line)
            match = KEY_LINE.search(line)
            if match:
                keys[match.group(1)] = match.group(2)
            if "try: curl" in line:
                return

    await asyncio.wait_for(read_until_ready(), timeout=90)
    return proc, keys


async def _stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return await asyncio.wait_for(proc.wait(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "DATABASE_URL")}
    env["BILLING_DB_POOL_SIZE"] = "4"  # beside the suite's own platform on one server
    env.update(extra)
    return env


async def _deposit_and_read(base: str, key: str, read_key: str) -> int:
    async with aiohttp.ClientSession(base_url=base) as http:
        headers = {"Authorization": f"Bearer {key}"}
        async with http.post("/api/v1/billing/deposit", headers=headers,
                             json={"user": "dev/alice", "amount": 250}) as r:
            assert r.status == 201, await r.text()
        async with http.get("/api/v1/billing/balance", params={"user": "dev/alice"},
                            headers={"Authorization": f"Bearer {read_key}"}) as r:
            assert r.status == 200
            return (await r.json())["balance"]


async def test_dev_with_configured_urls(started, postgres_url, tmp_path):
    # Its own NATS: the suite's platform shares the suite's server, and two ledgers in one
    # queue group would split the requests between two databases.
    nats_server = EmbeddedNats(tmp_path / "nats")
    nats_server.start()
    nats_url = nats_server.url
    database = db.with_database(postgres_url, f"billing_dev_{secrets.token_hex(4)}")
    test_key = "sk_test_" + secrets.token_hex(16)
    live_key = "sk_live_" + secrets.token_hex(16)
    env = _env(NATS_URL=nats_url, DATABASE_URL=database, BILLING_DATA_DIR=str(tmp_path),
               BILLING_DEV_SECRET_KEY=test_key, BILLING_DEV_LIVE_SECRET_KEY=live_key,
               BILLING_SERVICE_TOKENS="dev-svc")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        proc, keys = await _start_dev(started, env, port)
        assert keys == {"test": test_key, "live": live_key}
        assert await _deposit_and_read(base, test_key, test_key) == 250
        assert await _deposit_and_read(base, live_key, test_key) == 250  # modes stay apart
        assert await _stop(proc) == 0
        assert not port_is_open(port)
        # Restarting keeps the same keys and the money.
        proc, keys = await _start_dev(started, env, port)
        assert keys["test"] == test_key
        assert await _deposit_and_read(base, test_key, test_key) == 500
        async with aiohttp.ClientSession(base_url=base) as http, http.get(
                "/api/v1/billing/balance", params={"user": "dev/alice"},
                headers={"Authorization": "Bearer dev-svc", "X-IAM-Org": "dev"}) as r:
            assert (await r.json())["balance"] == 250  # live money, via the service token
        assert await _stop(proc) == 0
    finally:
        nats_server.stop()
        conn = await asyncpg.connect(db.with_database(postgres_url, "postgres"))
        await conn.execute(
            f'drop database if exists "{database.rsplit("/", 1)[1]}" with (force)')
        await conn.close()


async def test_dev_with_nothing_configured_starts_embedded_servers(started):
    data_dir = Path(tempfile.mkdtemp(prefix="billing-dev-", dir="/tmp"))
    data_dir.chmod(0o755)
    port = free_port()
    try:
        proc, keys = await _start_dev(started, _env(BILLING_DATA_DIR=str(data_dir)), port)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(base_url=base) as http, http.get("/readyz") as r:
            assert r.status == 200
        assert keys["test"].startswith("sk_test_")
        assert await _deposit_and_read(base, keys["test"], keys["test"]) == 250
        pg_port = int((data_dir / "pg" / "postmaster.pid").read_text().splitlines()[3])
        assert await _stop(proc) == 0
        assert not port_is_open(pg_port), "embedded PostgreSQL left running"
        # The same data directory comes back with the same key and the same money.
        proc, again = await _start_dev(started, _env(BILLING_DATA_DIR=str(data_dir)), port)
        assert again["test"] == keys["test"]
        assert await _deposit_and_read(base, keys["test"], keys["test"]) == 500
        assert await _stop(proc) == 0
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
