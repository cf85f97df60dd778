"""Where a top-up's CPU goes: CPU seconds per top-up of each process of the platform
(gateway, payments, ledger, PostgreSQL's backends of the bench's database, NATS), read from
/proc before and after a run of `POST /billing/topup/token` (Linux only). The sum is what a
top-up costs the machine: on 2 cores, 2,000 top-ups/s leave 1 ms for all of them.

PostgreSQL's own processes are shown apart, not in the sum: autovacuum (its workers are
short-lived: their CPU is read from what the postmaster reaped), the WAL writer, the
checkpointer. They work for every database of the cluster.

    .venv/bin/python bench/topup_cpu.py [--seconds 10] [--concurrency 32]

With NATS_URL / DATABASE_URL set they must run on this machine (their CPU is read here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # noqa: E402

from bench.common import (  # noqa: E402
    billing_env,
    drive,
    free_port,
    gateway_over,
    infrastructure,
    secret_key,
)

TICKS = os.sysconf("SC_CLK_TCK")
BODY = json.dumps({"sourceId": "cnon:{n}-bench", "amountCents": 100, "userId": "bench/u{u}"})


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (None: gone meanwhile)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None


def cpu_seconds(pid: int) -> float:
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / TICKS  # u + s


def postgres_own_seconds(postmaster: int, backends: list[int]) -> float:
    """CPU of the cluster's own processes: the postmaster, its children other than
    `backends`, and the children it reaped (autovacuum workers, ended sessions)."""
    fields = _stat(postmaster)
    if fields is None:
        return 0.0
    reaped = (int(fields[13]) + int(fields[14])) / TICKS  # cutime + cstime
    children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True,
                              text=True).stdout.split()
    return cpu_seconds(postmaster) + reaped + sum(
        cpu_seconds(int(pid)) for pid in children if int(pid) not in backends)


def service_pids() -> dict[str, list[int]]:
    """This bench's own service processes, by name (a service may run in several)."""
    children = subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True,
                              text=True).stdout.split()
    found: dict[str, list[int]] = {}
    for pid in map(int, children):
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"serve" in cmd:
            found.setdefault(cmd[cmd.index(b"serve") + 1].decode(), []).append(pid)
    return found


def nats_pid(nats_url: str) -> list[int]:
    port = nats_url.rsplit(":", 1)[1]
    listening = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True,
                               text=True).stdout
    return [int(p) for p in re.findall(r"pid=(\d+)", listening)][:1]


OWN = "postgres own"  # PostgreSQL's own processes, in `cpu_now`'s result


async def cpu_now(conn: asyncpg.Connection, nats_url: str) -> dict[str, float]:
    """CPU seconds spent so far by each service (its processes together), PostgreSQL's
    backends of the bench's database and NATS; and (`postgres own`) by PostgreSQL's own
    processes."""
    backends = [r["pid"] for r in await conn.fetch(
        "select pid from pg_stat_activity where datname = current_database()"
        " and pid <> pg_backend_pid()")]
    groups = {**service_pids(), "postgres": backends, "nats": nats_pid(nats_url)}
    spent = {name: sum(map(cpu_seconds, pids)) for name, pids in groups.items()}
    mine = _stat(await conn.fetchval("select pg_backend_pid()"))
    if mine is not None:  # a backend's parent is the postmaster
        spent[OWN] = postgres_own_seconds(int(mine[1]), backends)
    return spent


def cpu_lines(before: dict[str, float], after: dict[str, float], ops: int, seconds: float,
              what: str) -> list[str]:
    """CPU per operation of each process group between two `cpu_now`, and of them all;
    then PostgreSQL's own processes, apart."""
    def line(name: str, spent: float) -> str:
        return (f"  {name:13s} {spent / ops * 1e6:6.0f} µs per {what}"
                f"  ({spent / seconds * 100:4.0f} % of a core)")

    groups = [n for n in after if n != OWN]
    lines = [line(n, after[n] - before.get(n, 0.0)) for n in groups]
    total = sum(after[n] - before.get(n, 0.0) for n in groups)
    lines.append(f"  {'all':13s} {total / ops * 1e6:6.0f} µs per {what}")
    if OWN in after and OWN in before:
        lines.append(line(OWN, after[OWN] - before[OWN])
                     + "  (not in all: autovacuum, WAL writer, checkpointer)")
    return lines


async def main(seconds: float, concurrency: int) -> None:
    async with infrastructure() as (nats_url, database_url):
        env = billing_env(nats_url, database_url, BILLING_PORT=str(free_port()))
        async with gateway_over(env, "ledger", "payments") as base:
            auth = {"Authorization": f"Bearer {await secret_key(database_url)}"}
            url = f"{base}/api/v1/billing/topup/token"
            await drive("warm-up", url, concurrency=concurrency, seconds=3, method="POST",
                        headers=auth, body=BODY, users=1000)
            conn = await asyncpg.connect(database_url)
            commits = ("select xact_commit + xact_rollback from pg_stat_database"
                       " where datname = current_database()")
            xacts_before = await conn.fetchval(commits)
            before = await cpu_now(conn, nats_url)
            result = await drive("POST /billing/topup/token", url, concurrency=concurrency,
                                 seconds=seconds, method="POST", headers=auth, body=BODY,
                                 users=1000)
            after = await cpu_now(conn, nats_url)
            await asyncio.sleep(0.6)  # the statistics collector reports every 500 ms
            xacts = await conn.fetchval(commits) - xacts_before
            await conn.close()
    ok = result.requests - result.errors
    print(f"\ntop-ups, {concurrency} concurrent clients, {seconds:.0f} s")
    print(result.line())
    print("\n".join(cpu_lines(before, after, ok, result.seconds, "top-up")))
    print(f"  database transactions: {xacts / ok:.3f} per top-up (fewer: larger batches)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    import uvloop

    uvloop.run(main(args.seconds, args.concurrency))
