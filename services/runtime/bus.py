"""A service on the bus: FastStream NATS responders with msgspec envelopes.

`Service(spec, settings)` subscribes the spec's handlers (`services.runtime.service`) in the
service's queue group. The runtime decodes `Request[Params]`, refuses expired deadlines,
continues the caller's trace, runs the handler (inside a database transaction with
idempotency when asked) with the service's `Context`, and encodes the `Reply`. Handlers
stay thin: decode is done for them, they call the domain.

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
from typing import Any

import asyncpg
import msgspec
import nats
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from contracts import ErrorCode, RawReply, Reply, Request, Scope
from contracts.errors import Failure, internal, invalid
from contracts.limits import limit_exceeded
from services.runtime import db, idempotency, telemetry
from services.runtime.config import Settings
from services.runtime.idempotency import STORED_ERROR_STATUSES, IdempotencyKeys, is_client_key
from services.runtime.outbox import OutboxRelay
from services.runtime.requests import Requester
from services.runtime.service import Context, Handler, ServiceSpec

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


def paged(result: Any, total: int, offset: int, count: int) -> Reply:
    """A page of `count` items from `offset` of a list of `total` (conventions §10.6)."""
    return Reply(result=result, total=total, more=offset + count < total)


def nats_servers(url: str) -> list[str]:
    return [u.strip() for u in url.split(",") if u.strip()]


class Service:
    """One billing service running its spec: its queue group, handlers, jobs and schema."""

    def __init__(self, spec: ServiceSpec, settings: Settings, *, max_in_flight: int = 1024):
        self.spec = spec
        self.name = spec.name
        self.settings = settings
        self.migrations = spec.migrations
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task] = set()
        self._subscriptions: list[Subscription] = []
        self._nc: nats.NATS | None = None
        self._requests: Requester | None = None
        self._jobs = [(3600.0, forget_old_idempotency_keys), (2.0, analyze_fresh_tables), *(
            (job.seconds(settings) if callable(job.seconds) else job.seconds, job.run)
            for job in spec.jobs)]
        self._job_tasks: list[asyncio.Task] = []
        self.relay: OutboxRelay | None = None
        self.keys = IdempotencyKeys(spec.name)
        self.ctx = Context(self)
        self.broker = NatsBroker(nats_servers(settings.nats_url), name=f"billing-{spec.name}")

    @property
    def pool(self) -> asyncpg.Pool | None:
        return self.ctx.pool

    def _on_request(self, handler: Handler) -> Callable[[Msg], Awaitable[None]]:
        decode = msgspec.json.Decoder(Request[handler.endpoint.params]).decode
        subject, fn, transaction, ctx = (handler.endpoint.subject, handler.fn,
                                         handler.transaction, self.ctx)

        async def respond(msg: Msg) -> None:
            try:
                reply = await self._respond(msg, decode, ctx, fn, transaction, subject)
                if msg.reply:
                    await self._send_reply(msg.reply, reply, subject)
            finally:
                self._in_flight.release()

        async def on_request(msg: Msg) -> None:
            # nats-py hands a subscription's messages over one at a time; each becomes its
            # own task so database round trips overlap. The semaphore is the back-pressure:
            # at the limit, dispatch waits and NATS buffers.
            await self._in_flight.acquire()
            task = asyncio.create_task(respond(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return on_request

    async def _send_reply(self, to: str, reply: bytes, subject: str) -> None:
        """Publish `reply`, or a small error reply when it cannot go: the caller then gets
        a prompt error instead of waiting for its timeout. (Not msg.respond(): that would
        echo the request's headers.)"""
        try:
            await self._nc.publish(to, reply)
        except MaxPayloadError:  # nats-py checks the size before sending anything
            log.warning("%s: reply of %d bytes is over the bus limit (%d)", subject,
                        len(reply), self._nc.max_payload)
            await self._send_reply(to, _REPLY_TOO_LARGE, subject)
        except Exception:
            log.exception("%s: could not send the reply", subject)
            with contextlib.suppress(Exception):
                await self._nc.publish(to, _INTERNAL)


    async def _repeat(self, seconds: float, job: Callable[[Context], Awaitable[None]]) -> None:
        while True:
            try:
                await job(self.ctx)
            except Exception:
                log.exception("%s: periodic job %r failed", self.name, job)
            await asyncio.sleep(seconds)

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self.settings.database_url and self.migrations is not None:
            self.ctx.pool = pool = await db.create_pool(
                self.settings.database_url, max_size=self.settings.db_pool_size)
            async with pool.acquire() as conn:
                await db.migrate(conn, self.name, self.migrations)
        await self.broker.start()
        self._nc = nc = self.broker.connection
        self._requests = Requester(nc)
        await self._requests.start()
        if self.spec.bootstrap is not None:
            await self.spec.bootstrap(self.ctx)
        self._subscriptions = [
            await nc.subscribe(h.endpoint.subject, queue=self.name, cb=self._on_request(h))
            for h in self.spec.handlers.handlers]
        if self.pool is not None:  # publishes the events this service's handlers add
            self.relay = OutboxRelay(self.name, self.pool, nats_servers(self.settings.nats_url))
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
        for stop in reversed(self.ctx.stops):  # what the bootstrap started
            await stop()
        self.ctx.stops = []
        await self.broker.stop()
        if self.relay is not None:
            await self.relay.stop()
            self.relay = None
        if self.pool is not None:
            await self.pool.close()
            self.ctx.pool = None

    async def request(self, subject: str, scope: Scope, params: Any, *,
                      timeout: float = 2.0) -> RawReply | None:
        """One request, its reply undecoded; None when nobody answers in time. Handlers use
        the typed `ctx.ask(endpoint, ...)` built on this."""
        assert self._requests is not None, f"{self.name}: not started"
        try:
            msg = await self._requests.request(subject, _encode(Request(scope, params)),
                                               timeout=timeout)
        except (NoRespondersError, NatsTimeout):
            return None
        return _decode_raw_reply(msg.data)

    # ---- request handling ---------------------------------------------------------------

    async def _respond(self, msg: Msg, decode: Callable[[bytes], Request], ctx: Context,
                       fn: Callable[..., Awaitable[Any]], transaction: bool,
                       subject: str) -> bytes:
        try:
            request = decode(msg.data)
        except msgspec.ValidationError as e:
            limit = limit_exceeded(e, prefix="params.")  # named, as the gateway does
            return _BAD_REQUEST if limit is None else _encode(Reply(error=invalid(*limit).error))
        except (msgspec.DecodeError, RecursionError):  # RecursionError: absurdly deep nesting
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
                    return await self.in_transaction(ctx, scope, request.params, fn)
                result = await fn(ctx, scope, request.params)
                # bytes: a reply the handler encoded itself (batched writers, replays)
                return result if isinstance(result, bytes) else _encode(_as_reply(result))
            except Failure as failure:
                return _encode(Reply(error=failure.error))
            except Exception:
                log.exception("%s failed (request %s)", subject, scope.request_id)
                return _INTERNAL

    async def in_transaction(self, ctx: Context, scope: Scope, params: Any,
                             fn: Callable[..., Awaitable[Any]]) -> bytes:
        assert self.pool is not None, f"{self.name}: no database configured"
        async with self.pool.acquire() as conn, conn.transaction():
            if not scope.idempotency_key:
                return _encode(_as_reply(await fn(ctx, scope, params, conn)))
            stored = await self.keys.begin(conn, scope)
            if stored is not None:
                return stored
            try:
                async with conn.transaction():  # savepoint: a refusal keeps the key row only
                    reply = _as_reply(await fn(ctx, scope, params, conn))
            except Failure as failure:
                # Only final outcomes are stored; anything else releases the key.
                if failure.error.retryable or failure.error.status not in STORED_ERROR_STATUSES:
                    raise
                reply = Reply(error=failure.error)
            return await self.keys.remember(conn, scope, reply)


async def forget_old_idempotency_keys(ctx: Context) -> None:
    if ctx.pool is not None:
        await ctx.keys.prune(ctx.pool, datetime.now(UTC) - idempotency.RETENTION)


async def analyze_fresh_tables(ctx: Context) -> None:
    if ctx.pool is not None:
        await db.analyze_fresh_tables(ctx.pool, ctx.name)


def _as_reply(result: Any) -> Reply:
    return result if isinstance(result, Reply) else Reply(result=result)
