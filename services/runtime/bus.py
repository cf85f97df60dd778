"""A service on the bus: FastStream NATS responders with msgspec envelopes.

`Service.handler(subject, Params)` registers a request/reply handler in the service's queue
group. The runtime decodes `Request[Params]`, refuses expired deadlines, continues the
caller's trace, runs the handler (inside a database transaction with idempotency when asked),
and encodes the `Reply`. Handlers stay thin: decode is done for them, they call the domain.

FastStream's broker owns the connection (servers, reconnects, lifecycle). Request/reply
subjects are subscribed on that connection directly: FastStream's per-message pipeline
(context scopes, middlewares, log context, subject parsing) was about a third of the
ledger's CPU on the billing gate, and the runtime already does decoding, deadlines and
tracing itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import nats
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from contracts import ErrorCode, RawReply, Reply, Request, Scope
from contracts.errors import Failure, internal, invalid
from contracts.limits import limit_exceeded
from services.runtime import db, idempotency, telemetry
from services.runtime.config import Settings
from services.runtime.idempotency import STORED_ERROR_STATUSES, IdempotencyKeys, is_client_key
from services.runtime.outbox import OutboxRelay
from services.runtime.requests import Requester

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
_decode_raw_reply = msgspec.json.Decoder(RawReply).decode
_BAD_REQUEST = _encode(Reply(error=Failure(ErrorCode.INVALID_REQUEST, 400,
                                           "invalid request body").error))
_PAST_DEADLINE = _encode(Reply(error=Failure(ErrorCode.UNAVAILABLE, 503,
                                             "deadline exceeded").error))
_INTERNAL = _encode(Reply(error=internal()))
_REPLY_TOO_LARGE = _encode(Reply(error=Failure(
    ErrorCode.REPLY_TOO_LARGE, 500,
    "the reply is too large to send; ask for less (a smaller limit)").error))
_INVALID_KEY = _encode(Reply(error=Failure(ErrorCode.INVALID_REQUEST, 400,
                                           "invalid idempotency key").error))


def created(result: Any) -> Reply:
    """A 201 reply (creates and ledger writes)."""
    return Reply(result=result, status=201)


def nats_servers(url: str) -> list[str]:
    return [u.strip() for u in url.split(",") if u.strip()]


class Service:
    """One billing service: its queue group, its handlers and its database schema."""

    def __init__(self, name: str, settings: Settings, *, migrations: Path | None = None,
                 max_in_flight: int = 1024):
        self.name = name
        self.settings = settings
        self.migrations = migrations
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task] = set()
        self._handlers: list[tuple[str, Callable[[Msg], Awaitable[None]]]] = []
        self._subscriptions: list[Subscription] = []
        self._nc: nats.NATS | None = None
        self._requests: Requester | None = None
        self._jobs: list[tuple[float, Callable[[], Awaitable[None]]]] = []
        self._job_tasks: list[asyncio.Task] = []
        self.every(3600, self.forget_old_idempotency_keys)
        self.pool: asyncpg.Pool | None = None
        self.relay: OutboxRelay | None = None
        self.keys = IdempotencyKeys(name)
        self.broker = NatsBroker(nats_servers(settings.nats_url), name=f"billing-{name}")

    # ---- registration -------------------------------------------------------------------

    def handler(self, subject: str, params: type, *, transaction: bool = False,
                ) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        """Register `fn(scope, params)` for `subject`.

        With `transaction=True` it is `fn(scope, params, conn)`, run in one database
        transaction and idempotent under the scope's key. A handler may return a result, a
        `Reply`, or `bytes` (a reply it encoded itself).
        """
        decode = msgspec.json.Decoder(Request[params]).decode

        def register(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def respond(msg: Msg) -> None:
                try:
                    reply = await self._respond(msg, decode, fn, transaction, subject)
                    if msg.reply:
                        await self._send_reply(msg.reply, reply, subject)
                finally:
                    self._in_flight.release()

            async def on_request(msg: Msg) -> None:
                # nats-py hands a subscription's messages over one at a time; each becomes
                # its own task so database round trips overlap. The semaphore is the
                # back-pressure: at the limit, dispatch waits and NATS buffers.
                await self._in_flight.acquire()
                task = asyncio.create_task(respond(msg))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

            self._handlers.append((subject, on_request))
            return fn

        return register

    async def _send_reply(self, to: str, reply: bytes, subject: str) -> None:
        """Publish `reply`, or a small error reply when it cannot go: the caller then gets
        a prompt error instead of waiting for its timeout. (Not msg.respond(): that would
        echo the request's headers.)"""
        if len(reply) > self._nc.max_payload:
            log.warning("%s: reply of %d bytes is over the bus limit (%d)", subject,
                        len(reply), self._nc.max_payload)
            reply = _REPLY_TOO_LARGE
        try:
            await self._nc.publish(to, reply)
        except Exception:
            log.exception("%s: could not send the reply", subject)
            with contextlib.suppress(Exception):
                await self._nc.publish(to, _INTERNAL)

    def every(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        """Run `job` every `seconds` while the service runs (sweepers, relays). Replicas
        all run it, so a job must be safe to run concurrently (row locks, SKIP LOCKED)."""
        self._jobs.append((seconds, job))

    async def forget_old_idempotency_keys(self) -> None:
        if self.pool is not None:
            await self.keys.prune(self.pool, datetime.now(UTC) - idempotency.RETENTION)

    async def _repeat(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await job()
            except Exception:
                log.exception("%s: periodic job %r failed", self.name, job)
            await asyncio.sleep(seconds)

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self.settings.database_url:
            self.pool = await db.create_pool(self.settings.database_url)
            async with self.pool.acquire() as conn:
                await db.migrate(conn, self.name, self.migrations)
        await self.broker.start()
        self._nc = nc = self.broker.connection
        self._requests = Requester(nc)
        await self._requests.start()
        self._subscriptions = [
            await nc.subscribe(subject, queue=self.name, cb=on_request)
            for subject, on_request in self._handlers]
        if self.pool is not None:  # publishes the events this service's handlers add
            self.relay = OutboxRelay(self.name, self.pool, self.settings.database_url,
                                     nats_servers(self.settings.nats_url))
            await self.relay.start()
        self._job_tasks = [asyncio.create_task(self._repeat(seconds, job))
                           for seconds, job in self._jobs]

    async def stop(self) -> None:
        for task in self._job_tasks:
            task.cancel()
        await asyncio.gather(*self._job_tasks, return_exceptions=True)
        for subscription in self._subscriptions:  # take no new requests
            await subscription.unsubscribe()
        self._subscriptions = []
        if self._tasks:  # let requests already taken finish and reply
            await asyncio.wait(self._tasks, timeout=10)
        await self.broker.stop()
        if self.relay is not None:
            await self.relay.stop()
            self.relay = None
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    async def ask(self, subject: str, scope: Scope, params: Any, *, timeout: float = 2.0,
                  ) -> RawReply | None:
        """Ask another service; None when nobody answers in time (the caller decides what
        absence means, e.g. "no payment method" while payments is not deployed)."""
        assert self._requests is not None, f"{self.name}: not started"
        try:
            msg = await self._requests.request(subject, _encode(Request(scope, params)),
                                               timeout=timeout)
        except (NoRespondersError, NatsTimeout):
            return None
        return _decode_raw_reply(msg.data)

    # ---- request handling ---------------------------------------------------------------

    async def _respond(self, msg: Msg, decode: Callable[[bytes], Request],
                       fn: Callable[..., Awaitable[Any]], transaction: bool,
                       subject: str) -> bytes:
        try:
            request = decode(msg.data)
        except msgspec.ValidationError as e:
            limit = limit_exceeded(e, prefix="params.")  # named, as the gateway does
            return _BAD_REQUEST if limit is None else _encode(Reply(error=invalid(*limit).error))
        except msgspec.DecodeError:
            return _BAD_REQUEST
        scope = request.scope
        # Whoever sent it (the gateway checks too), a key is a client's: derived keys
        # (`idempotency.derived_key`) stay out of reach.
        if scope.idempotency_key is not None and not is_client_key(scope.idempotency_key):
            return _INVALID_KEY
        if scope.deadline_ms and time.time() * 1000 > scope.deadline_ms:
            return _PAST_DEADLINE
        with telemetry.server_span(subject, msg.headers):
            try:
                if transaction:
                    return await self._in_transaction(scope, request.params, fn)
                result = await fn(scope, request.params)
                # bytes: a reply the handler encoded itself (batched writers, replays)
                return result if isinstance(result, bytes) else _encode(_as_reply(result))
            except Failure as failure:
                return _encode(Reply(error=failure.error))
            except Exception:
                log.exception("%s failed (request %s)", subject, scope.request_id)
                return _INTERNAL

    async def _in_transaction(self, scope: Scope, params: Any,
                              fn: Callable[..., Awaitable[Any]]) -> bytes:
        assert self.pool is not None, f"{self.name}: no database configured"
        async with self.pool.acquire() as conn, conn.transaction():
            if not scope.idempotency_key:
                return _encode(_as_reply(await fn(scope, params, conn)))
            stored = await self.keys.begin(conn, scope)
            if stored is not None:
                return stored
            try:
                async with conn.transaction():  # savepoint: a refusal keeps the key row only
                    reply = _as_reply(await fn(scope, params, conn))
            except Failure as failure:
                # Only final outcomes are stored; anything else releases the key.
                if failure.error.retryable or failure.error.status not in STORED_ERROR_STATUSES:
                    raise
                reply = Reply(error=failure.error)
            reply.replayed = True
            await self.keys.complete(conn, scope, _encode(reply))
            reply.replayed = False
            return _encode(reply)


def _as_reply(result: Any) -> Reply:
    return result if isinstance(result, Reply) else Reply(result=result)
