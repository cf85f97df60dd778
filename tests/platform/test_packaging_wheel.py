"""The wheel deploys: built from the sources, installed non-editable into a fresh virtualenv
(nothing of the checkout on its path), `billing migrate` creates every table of every
service on a fresh database, and `billing dev` from that install answers."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from services.runtime import db
from services.runtime.embedded import EmbeddedNats, free_port
from services.specs import migrations
from tests.support import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

KEY_LINE = re.compile(r"test-mode secret key: (\S+)")
_CREATE_TABLE = re.compile(r"create\s+table\s+(?:if\s+not\s+exists\s+)?([\w{}]+)\.(\w+)",
                           re.IGNORECASE)


def _expected_tables() -> set[tuple[str, str]]:
    """(schema, table) for every `create table` in the migrations of every schema the
    platform owns (services.specs); the runtime's tables are made in each of them."""

    def tables(folder: Path) -> set[str]:
        return {m.group(2) for f in folder.glob("*.sql")
                for m in _CREATE_TABLE.finditer(f.read_text())}

    runtime = tables(db.RUNTIME_MIGRATIONS)
    expected = {(schema, t) for schema, folder in migrations() for t in tables(folder) | runtime}
    assert {"gateway", "ledger", "metering"} <= {s for s, _ in expected} and runtime
    return expected


def _run(*cmd: str | Path, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done


def _build_and_install(work: Path) -> Path:
    """The wheel built from a copy of the sources (the checkout stays clean), installed into a
    plain virtualenv with its dependencies. Returns the venv's bin directory."""
    source = work / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("contracts", "services"):
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    env = _env(work)  # PYTHONPATH would show pip the checkout as `billing` already installed
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", work / "dist", source,
         env=env)
    wheel = next((work / "dist").glob("billing-*.whl"))
    _run(sys.executable, "-m", "venv", work / "venv", env=env)
    bin_dir = work / "venv" / "bin"
    _run(bin_dir / "python", "-m", "pip", "install", "-q", wheel, env=env)
    return bin_dir


def _env(work: Path, **extra: str) -> dict[str, str]:
    """No PYTHONPATH (it would reach the checkout) and no catalog override."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "NATS_URL", "DATABASE_URL", "BILLING_PLANS_DIR",
                        "COMMERCE_PLANS_DIR", "VIRTUAL_ENV")}
    # Its platform shares the server with the suite's own.
    env.update(BILLING_DATA_DIR=str(work / "data"), BILLING_DB_POOL_SIZE="4", **extra)
    return env


async def test_the_wheel_migrates_and_serves_from_a_fresh_virtualenv(postgres_url, tmp_path):
    work = tmp_path
    bin_dir = await asyncio.to_thread(_build_and_install, work)
    # The install is what runs: not the checkout.
    where = await asyncio.to_thread(
        _run, bin_dir / "python", "-c", "import services; print(services.__file__)",
        cwd=work, env=_env(work))
    assert str(work / "venv") in where.stdout, where.stdout

    name = f"billing_wheel_{secrets.token_hex(4)}"
    database = db.with_database(postgres_url, name)
    nats_server = EmbeddedNats(work / "nats")  # its own: two ledgers on one bus would share
    nats_server.start()                          # the suite's queue groups
    proc = None
    try:
        migrated = await asyncio.to_thread(_run, bin_dir / "billing", "migrate", cwd=work,
                                           env=_env(work, DATABASE_URL=database))
        assert "ledger:" in migrated.stdout and "metering:" in migrated.stdout
        conn = await asyncpg.connect(database)
        try:
            present = {(r["table_schema"], r["table_name"]) for r in await conn.fetch(
                "select table_schema, table_name from information_schema.tables")}
        finally:
            await conn.close()
        missing = _expected_tables() - present
        assert not missing, f"tables missing after `billing migrate`: {sorted(missing)}"

        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            str(bin_dir / "billing"), "dev", "--port", str(port), cwd=work,
            env=_env(work, DATABASE_URL=database, NATS_URL=nats_server.url),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        key = await asyncio.wait_for(_printed_key(proc), timeout=90)
        auth = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as http:
            async with http.get("/healthz") as r:
                assert r.status == 200 and (await r.json())["status"] == "ok"
            async with http.post("/api/v1/billing/deposit", headers=auth,
                                 json={"user": "dev/alice", "amount": 300}) as r:
                assert r.status == 201, await r.text()
            async with http.get("/api/v1/billing/balance", headers=auth,
                                params={"user": "dev/alice"}) as r:
                assert r.status == 200 and (await r.json())["balance"] == 300
            async with http.get("/api/v1/dns/plans", headers=auth) as r:  # the shipped catalog
                assert r.status == 200 and len(await r.json()) == 3
            async with http.get("/openapi.json") as r:
                assert r.status == 200 and (await r.json())["openapi"].startswith("3.1")
            async with http.get("/docs/swagger-ui-bundle.js") as r:  # assets from a package
                assert r.status == 200 and len(await r.read()) > 100_000
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        nats_server.stop()
        conn = await asyncpg.connect(db.with_database(postgres_url, "postgres"))
        try:
            await conn.execute(f'drop database if exists "{name}" with (force)')
        finally:
            await conn.close()


async def _printed_key(proc: asyncio.subprocess.Process) -> str:
    output: list[str] = []
    key = None
    while True:
        line = (await proc.stdout.readline()).decode()
        if not line:
            raise AssertionError("billing dev exited:\n" + "".join(output))
        output.append(line)
        match = KEY_LINE.search(line)
        if match:
            key = match.group(1)
        if "try: curl" in line:
            assert key, "".join(output)
            return key
