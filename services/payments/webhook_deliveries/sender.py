"""The webhook sender: works through endpoints' delivery queues (payments.md §6.4, §6.5).

Each replica claims endpoints whose queue is due (a lease on the endpoint's row, so one
sender at a time works on an endpoint, and a dead sender's endpoints are taken over when
its lease lapses) and runs through each: its waiting deliveries in order, one POST at a
time, stopping at the first failure (the rest wait behind it, §6.5 in order). Many
endpoints run at once, up to `concurrency`, over connections kept alive per host
(`posting.Poster`, one per mode). A run's attempts and what they settled are written in
one statement at its end; a sender that dies before that sends them again (at least once;
receivers deduplicate by event id or delivery id).

Live endpoints reach public addresses only: the live poster's resolver refuses names that
resolve to loopback, private or link-local addresses (SSRF).

`clock` is the deliveries' time (schedules, attempts' times): tests move it forward three
days without waiting. The signature's `t` is always the real time, which receivers check.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import asyncpg
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from contracts.ids import now as real_now
from contracts.webhooks import SIGNATURE_HEADER, WEBHOOK_ENDPOINT_DISABLED, sign
from services.payments.common import event, service_scope
from services.payments.webhook_deliveries import domain, store
from services.payments.webhook_deliveries.posting import Poster
from services.payments.webhook_endpoints.domain import public_host, unseal, view
from services.runtime.encryption import SecretBox, SecretsError

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=2)  # a run that has not settled by then is presumed dead
RUN_BUDGET_S = 30.0  # a run takes no new delivery after this (well within the lease)
USER_AGENT = "billing-webhooks/1"


class PublicResolver(AbstractResolver):
    """Resolves names to public addresses only (live endpoints)."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if any(not ipaddress.ip_address(r["host"]).is_global for r in found):
            raise OSError(errno.EACCES, f"{host} resolves to a private address")
        return found

    async def close(self) -> None:
        await self._inner.close()


class Sender:
    def __init__(self, pool: Callable[[], asyncpg.Pool], secrets: SecretBox | None, *,
                 concurrency: int = 64, batch: int = 200, poll_s: float = 0.25,
                 clock: Callable[[], datetime] = real_now,
                 jitter: Callable[[], float] = lambda: random.uniform(-1.0, 1.0)):
        self._pool = pool
        self._secrets = secrets
        self.concurrency = concurrency
        self.batch = batch
        self.poll_s = poll_s
        self.clock = clock
        self.jitter = jitter
        self._posters: dict[bool, Poster] = {}  # by mode
        self._resolver: PublicResolver | None = None
        self._runs: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._resolver = PublicResolver()
        self._posters = {False: Poster(idle_max=self.concurrency, user_agent=USER_AGENT),
                         True: Poster(resolve=self._public_addresses,
                                      idle_max=self.concurrency, user_agent=USER_AGENT)}
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name="webhook-sender")

    async def _public_addresses(self, host: str, port: int) -> list[str]:
        return [r["host"] for r in await self._resolver.resolve(host, port, socket.AF_UNSPEC)]

    async def stop(self) -> None:
        """Stop sending; runs under way are dropped (their leases lapse, another sender
        sends their deliveries again)."""
        self._stopping = True
        tasks = [t for t in (self._task, *self._runs) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        for poster in self._posters.values():
            await poster.close()
        self._posters = {}
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None

    def wake(self) -> None:
        """Look for due queues now (new deliveries were just queued)."""
        self._wake.set()

    # ---- the loop -----------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            free = self.concurrency - len(self._runs)
            claimed = []
            if free > 0:
                try:
                    claimed = await store.claim(self._pool(), self.clock(), free, LEASE)
                except Exception as error:  # the database away: try again shortly
                    log.warning("webhook sender: claiming endpoints failed (%s)", error)
            for endpoint in claimed:
                run = asyncio.create_task(self._run(endpoint))
                self._runs.add(run)
                run.add_done_callback(self._ended)
            if len(claimed) < free:  # nothing more due now: wait for news
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_s)
            elif free <= 0:
                await self._wake.wait()  # a run ends

    def _ended(self, run: asyncio.Task) -> None:
        self._runs.discard(run)
        if not run.cancelled() and run.exception() is not None:
            log.error("webhook run failed", exc_info=run.exception())
        self._wake.set()

    async def _run(self, endpoint: asyncpg.Record) -> None:
        pool = self._pool()
        try:
            waiting = await store.queue(pool, endpoint["id"], self.batch)
            now = self.clock()
            if not waiting or waiting[0]["next_attempt_at"] > now:  # its head waits
                await store.release(pool, endpoint,
                                    waiting[0]["next_attempt_at"] if waiting else None)
                return
            attempts = await self._send_in_order(endpoint, waiting)
            settled = domain.settle(
                attempts, waiting[len(attempts) - 1]["failures"], endpoint["failing_since"],
                len(waiting) == self.batch or len(attempts) < len(waiting), self.clock(),
                self.jitter())
            await store.settle(pool, endpoint, attempts, settled, _announce_disabled)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Whatever it was, the lease lapses and the queue is taken again.
            log.exception("webhook run for endpoint %s failed", endpoint["id"])

    async def _send_in_order(self, endpoint: asyncpg.Record, waiting: list[asyncpg.Record],
                             ) -> list[domain.Attempt]:
        try:
            secrets = [self._unseal(endpoint, "secret_key_id", "secret")]
            if endpoint["previous_key_id"] is not None:  # rotated less than a day ago
                secrets.append(self._unseal(endpoint, "previous_key_id", "previous_secret"))
        except SecretsError as error:
            return [domain.Attempt(waiting[0]["id"], waiting[0]["attempt_count"] + 1,
                                   self.clock(), 0, 0, f"signing secret unavailable: {error}")]
        attempts: list[domain.Attempt] = []
        started = time.monotonic()
        url = URL(endpoint["url"])
        for d in waiting:
            attempt = await self._send(endpoint, url, d, secrets)
            attempts.append(attempt)
            if not attempt.succeeded or time.monotonic() - started > RUN_BUDGET_S:
                break
        return attempts

    def _unseal(self, endpoint: asyncpg.Record, key_id: str, sealed: str) -> str:
        return unseal(self._secrets, endpoint["org_id"], endpoint["livemode"], endpoint["id"],
                      endpoint[key_id], endpoint[sealed])

    async def _send(self, endpoint: asyncpg.Record, url: URL, d: asyncpg.Record,
                    secrets: list[str]) -> domain.Attempt:
        at = self.clock()
        headers = {"Content-Type": "application/json",
                   SIGNATURE_HEADER: sign(int(time.time()), d["body"], *secrets),
                   "Commerce-Event-Type": d["event_type"], "Commerce-Delivery-Id": d["id"]}
        status, error, response = 0, "", b""
        started = time.perf_counter()
        try:
            if endpoint["livemode"] and not public_host(url.host or ""):
                raise OSError(errno.EACCES, "a private address")
            async with asyncio.timeout(domain.TIMEOUT_S):
                status, response = await self._posters[endpoint["livemode"]].post(
                    url, d["body"], headers, domain.RESPONSE_CHARS)
            error = domain.failure_text(status)
        except TimeoutError:
            error = f"no answer within {domain.TIMEOUT_S:g} s"
        except (OSError, ValueError) as e:  # ProtocolError is a ValueError
            error = f"{type(e).__name__}: {e}"[:domain.RESPONSE_CHARS]
        return domain.Attempt(
            d["id"], d["attempt_count"] + 1, at, status,
            round((time.perf_counter() - started) * 1000), error,
            response.decode("utf-8", "replace").replace("\x00", "")[:domain.RESPONSE_CHARS])


async def _announce_disabled(conn: asyncpg.Connection, row: asyncpg.Record) -> None:
    """`webhook_endpoint.disabled`: in the log, and to the organization's other endpoints."""
    await event(conn, service_scope(row["org_id"], row["livemode"]), WEBHOOK_ENDPOINT_DISABLED,
                "webhook_endpoint", row["id"], "", view(row))
    log.warning("webhook endpoint %s disabled: no successful delivery for %s", row["id"],
                domain.GIVE_UP_AFTER)
