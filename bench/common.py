"""Shared pieces of the benchmarks: infrastructure, processes and an HTTP load driver."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from services.runtime import db
from services.runtime.embedded import EmbeddedNats, EmbeddedPostgres, free_port

ROOT = Path(__file__).resolve().parents[1]
PEPPER = "bench-pepper"


@asynccontextmanager
async def infrastructure():
    """NATS and a fresh PostgreSQL database: the configured ones, else embedded."""
    async with AsyncExitStack() as stack:
        scratch = Path(tempfile.mkdtemp(prefix="billing-bench-", dir="/tmp"))
        scratch.chmod(0o755)
        stack.callback(shutil.rmtree, scratch, True)  # last: after the servers stop
        nats_url = os.environ.get("NATS_URL")
        if not nats_url:
            nats = EmbeddedNats(scratch / "nats")
            nats.start()
            stack.callback(nats.stop)
            nats_url = nats.url
        server_url = os.environ.get("DATABASE_URL")
        if not server_url:
            pg = EmbeddedPostgres(scratch / "pg")
            pg.start()
            stack.callback(pg.stop)
            server_url = pg.url("postgres")
        database = db.with_database(server_url, f"billing_bench_{secrets.token_hex(4)}")
        await db.ensure_database(database)
        stack.push_async_callback(_drop, server_url, database)
        yield nats_url, database


async def _drop(server_url: str, database: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(db.with_database(server_url, "postgres"))
    try:
        await conn.execute(f'drop database if exists "{database.rsplit("/", 1)[1]}" with (force)')
    finally:
        await conn.close()


def spawn(*args: str, env: dict[str, str]) -> subprocess.Popen:
    """A service of the bench's own. Its warnings go to the bench's stderr: a pipe nobody
    reads would block the service once it filled."""
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.DEVNULL)


def billing_env(nats_url: str, database_url: str, **extra: str) -> dict[str, str]:
    return {"NATS_URL": nats_url, "DATABASE_URL": database_url, "BILLING_KEY_PEPPER": PEPPER,
            "BILLING_LOG_LEVEL": "WARNING", **extra}


def stop(processes: list[subprocess.Popen]) -> None:
    for p in processes:
        p.terminate()
    for p in processes:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


@asynccontextmanager
async def gateway_over(env: dict[str, str], *services: str):
    """`services` in processes of their own, then the gateway in front of them: the
    gateway's base URL once it answers, every process stopped afterwards."""
    running = [spawn("-m", "services.cli", "serve", name, env=env) for name in services]
    try:
        await asyncio.sleep(1.0)  # they migrate and subscribe before the gateway asks them
        running.insert(0, spawn("-m", "services.cli", "serve", "gateway", env=env))
        base = f"http://127.0.0.1:{env['BILLING_PORT']}"
        await wait_http(base + "/readyz")
        yield base
    finally:
        stop(running)


async def closed_loop(name: str, concurrency: int, seconds: float,
                      operation: Callable[[int], Awaitable[bool]]) -> Result:
    """`concurrency` clients, each doing `operation(n)` again and again for `seconds` (n
    counts the operations, every client its own); an operation answers whether it went
    right. For operations of several requests, which a load generator cannot chain."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(n: int) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            if not await operation(n):
                errors += 1
            latencies.append((time.perf_counter() - started) * 1000)
            n += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    return Result(name, len(latencies), errors, time.perf_counter() - started, latencies)


async def verify_books(env: dict[str, str]) -> str:
    """What `billing ledger verify` says in the end (its last line)."""
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.cli", "ledger", "verify"],
        env={**os.environ, **env}, capture_output=True, text=True, cwd=ROOT)
    return done.stdout.strip().splitlines()[-1] if done.stdout else done.stderr.strip()


async def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} never became ready")
            await asyncio.sleep(0.2)


async def secret_key(database_url: str, org_name: str = "bench") -> str:
    from services.gateway import store

    pool = await db.create_pool(database_url, min_size=1, max_size=2)
    try:
        org = await store.provision_org(pool, org_name)
        _, key = await store.create_key(pool, PEPPER, org, livemode=False, kind="secret")
        return key
    finally:
        await pool.close()


@dataclass
class Result:
    name: str
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    fixed: tuple[float, float] | None = None  # (p50, p99) as measured by wrk

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        if self.fixed is not None:
            return self.fixed[0] if p == 0.50 else self.fixed[1]
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")

    def line(self) -> str:
        return (f"{self.name:<34} {self.rps:>9,.0f} req/s   p50 {self.percentile(0.50):6.2f} ms"
                f"   p99 {self.percentile(0.99):6.2f} ms   errors {self.errors}")


WRK_SCRIPT = """
counter = 0
local template = os.getenv("BENCH_BODY")
local users = tonumber(os.getenv("BENCH_USERS"))
math.randomseed(os.time() + math.floor(os.clock() * 1e6))
local run = tostring(math.random(1e9))
request = function()
  counter = counter + 1
  local body = nil
  if template ~= nil and template ~= "" then
    body = string.gsub(template, "{n}", run .. "-" .. tostring(counter))
    body = string.gsub(body, "{u}", tostring(counter % users))
  end
  return wrk.format(os.getenv("BENCH_METHOD"), nil, nil, body)
end
"""


async def drive(name: str, url: str, *, concurrency: int, seconds: float, method: str = "GET",
                headers: dict[str, str] | None = None, body: str | None = None,
                users: int = 1, rate: float | None = None) -> Result:
    """Keep `concurrency` requests in flight for `seconds`; with `rate`, start that many
    requests a second instead (open loop, at most `concurrency` at once). In `body`, `{n}`
    becomes a token unique to each request and `{u}` one of `users` numbers. Uses wrk when
    installed and no rate is set (a C load generator leaves the CPU to the system under
    test), else an aiohttp client."""
    if shutil.which("wrk") and rate is None:
        return await _drive_wrk(name, url, concurrency=concurrency, seconds=seconds,
                                method=method, headers=headers or {}, body=body, users=users)
    counter = itertools.count()
    run = secrets.token_hex(4)

    def body_for() -> str:
        n = next(counter)
        return body.replace("{n}", f"{run}-{n}").replace("{u}", str(n % users))

    return await _drive_python(name, url, concurrency=concurrency, seconds=seconds,
                               method=method, headers=headers,
                               body_for=body_for if body else None, rate=rate)


async def _drive_wrk(name: str, url: str, *, concurrency: int, seconds: float, method: str,
                     headers: dict[str, str], body: str | None, users: int) -> Result:
    return await drive_script(name, url, WRK_SCRIPT, concurrency=concurrency, seconds=seconds,
                              headers=headers, env={"BENCH_METHOD": method,
                                                    "BENCH_BODY": body or "",
                                                    "BENCH_USERS": str(users)})


async def drive_script(name: str, url: str, script: str, *, concurrency: int, seconds: float,
                       headers: dict[str, str] | None = None,
                       env: dict[str, str] | None = None) -> Result:
    """wrk running a Lua `script` of the caller's (its settings passed in `env`)."""
    path = Path(tempfile.mkstemp(suffix=".lua")[1])
    path.write_text(script)
    args = ["wrk", "-t1", f"-c{concurrency}", f"-d{int(seconds)}s", "--latency", "-s",
            str(path), url, "-H", "Content-Type: application/json"]
    for k, v in (headers or {}).items():
        args += ["-H", f"{k}: {v}"]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})})
    out = (await proc.communicate())[0].decode()
    path.unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    latencies = {p: _ms(re.search(rf"\s{p}%\s+([\d.]+\w+)", out).group(1))
                 for p in ("50", "99")}
    return Result(name, requests, errors, requests / rps if rps else seconds, [],
                  fixed=(latencies["50"], latencies["99"]))


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


async def _drive_python(name: str, url: str, *, concurrency: int, seconds: float,
                        method: str = "GET", headers: dict[str, str] | None = None,
                        body_for=None, rate: float | None = None) -> Result:
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=connector) as http:
        deadline = time.perf_counter() + seconds

        async def one() -> None:
            nonlocal errors
            data = body_for() if body_for else None
            started = time.perf_counter()
            async with http.request(method, url, headers=headers, data=data) as r:
                await r.read()
                if r.status >= 300:
                    errors += 1
            latencies.append((time.perf_counter() - started) * 1000)

        async def worker() -> None:
            while time.perf_counter() < deadline:
                await one()

        async def paced() -> None:
            in_flight: set[asyncio.Task] = set()
            n = 0
            while (now := time.perf_counter()) < deadline:
                if (due := started + n / rate) > now:
                    await asyncio.sleep(due - now)
                n += 1
                task = asyncio.create_task(one())
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            await asyncio.gather(*in_flight)

        started = time.perf_counter()
        await (paced() if rate else asyncio.gather(*[worker() for _ in range(concurrency)]))
        elapsed = time.perf_counter() - started
    return Result(name, len(latencies), errors, elapsed, latencies)


__all__ = ["Result", "billing_env", "drive", "drive_script", "free_port", "infrastructure", "secret_key",
           "spawn", "stop", "wait_http"]
