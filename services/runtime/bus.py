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

Requests asked with `batched=True` (`Context.ask`) that a service makes to another in the
same event-loop turn travel as one message to the other's `batch_subject`, which answers
each as if it had come alone (same handler, scope, key and refusal), in one reply: a
billing cycle's collections ask the ledger for dozens of withdrawals at once.
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
from services.runtime.batching import MicroBatcher
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
# A batch: [[subject, request], ...]; its reply: [reply or null, ...] in the same order
# (null: no handler of that subject here, as when nobody answers a request sent alone).
_decode_batch = msgspec.json.Decoder(list[tuple[str, msgspec.Raw]]).decode
_decode_batch_replies = msgspec.json.Decoder(list[msgspec.Raw]).decode
_NULL = b"null"
_MAX_BATCH = 64  # requests in one message: far below the bus's payload limit


def batch_subject(service: str) -> str:
    """Where `service` answers batches of its requests."""
    return f"billing.{service}.requests.batch"


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
        self._responders: dict[str, Callable[[bytes, dict[str, str] | None],
                                             Awaitable[bytes]]] = {}
        self._batches: dict[str, MicroBatcher] = {}  # requests to batch, by service asked
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

    def _responder(self, handler: Handler,
                   ) -> Callable[[bytes, dict[str, str] | None], Awaitable[bytes]]:
        """The encoded reply to a request's data (and headers) for `handler`."""
        decode = msgspec.json.Decoder(Request[handler.endpoint.params]).decode
        subject, fn, transaction, ctx = (handler.endpoint.subject, handler.fn,
                                         handler.transaction, self.ctx)

        def answer(data: bytes, headers: dict[str, str] | None) -> Awaitable[bytes]:
            return self._respond(data, headers, decode, ctx, fn, transaction, subject)

        return answer

    async def _answer_batch(self, data: bytes, headers: dict[str, str] | None) -> bytes:
        """The replies to a batch of requests, each answered as if it had come alone."""
        try:
            batch = _decode_batch(data)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            return _BAD_REQUEST

        async def answer(subject: str, request: msgspec.Raw) -> bytes:
            responder = self._responders.get(subject)
            return _NULL if responder is None else await responder(bytes(request), headers)

        return b"[" + b",".join(await asyncio.gather(*(answer(*item) for item in batch))) + b"]"

    def _on_request(self, answer: Callable[[bytes, dict[str, str] | None], Awaitable[bytes]],
                    subject: str) -> Callable[[Msg], Awaitable[None]]:
        async def respond(msg: Msg) -> None:
            try:
                reply = await answer(msg.data, msg.headers)
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
        self._responders = {h.endpoint.subject: self._responder(h)
                            for h in self.spec.handlers.handlers}
        self._subscriptions = [
            await nc.subscribe(subject, queue=self.name, cb=self._on_request(answer, subject))
            for subject, answer in [*self._responders.items(),
                                    (batch_subject(self.name), self._answer_batch)]]
        if self.pool is not None:  # publishes the events this service's handlers add
            self.relay = OutboxRelay(self.name, self.pool, nats_servers(self.settings.nats_url),
                                     log_published=self.ctx.log_published)
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
                      timeout: float = 2.0, batched: bool = False) -> RawReply | None:
        """One request, its reply undecoded; None when nobody answers in time. Handlers use
        the typed `ctx.ask(endpoint, ...)` built on this. `batched`: sent with the other
        batched requests to the same service made in this event-loop turn, in one
        message (see the module's docstring)."""
        assert self._requests is not None, f"{self.name}: not started"
        request = _encode(Request(scope, params))
        if batched:
            service = subject.split(".")[1]  # billing.<service>.<resource>.<action>
            batch = self._batches.get(service)
            if batch is None:
                batch = self._batches[service] = MicroBatcher(
                    lambda items: self._send_batch(service, items), max_batch=_MAX_BATCH)
            data = await batch((subject, request, timeout))
        else:
            data = await self._send(subject, request, timeout)
        return None if data is None else _decode_raw_reply(data)

    async def _send(self, subject: str, request: bytes, timeout: float) -> bytes | None:
        try:
            return (await self._requests.request(subject, request, timeout=timeout)).data
        except (NoRespondersError, NatsTimeout):
            return None

    async def _send_batch(self, service: str, items: list[tuple[str, bytes, float]],
                          ) -> list[bytes | None]:
        """The replies to requests to `service` (subject, request, timeout), in one message
        when there are several; None for those nobody answered in time."""
        if len(items) == 1:
            return [await self._send(*items[0])]
        body = b"[" + b",".join(b"[" + _encode(subject) + b"," + request + b"]"
                                for subject, request, _ in items) + b"]"
        try:
            msg = await self._requests.request(batch_subject(service), body,
                                               timeout=max(t for *_, t in items))
            replies = _decode_batch_replies(msg.data)
        except NatsTimeout:
            return [None] * len(items)
        except (NoRespondersError, msgspec.ValidationError, msgspec.DecodeError):
            # No replica answers batches (an older version), or one refused the batch whole
            # (its replies together over the bus's limit): each is sent alone.
            return list(await asyncio.gather(*(self._send(*item) for item in items)))
        return [None if r == _NULL else bytes(r) for r in replies]

    # ---- request handling ---------------------------------------------------------------

    async def _respond(self, data: bytes, headers: dict[str, str] | None,
                       decode: Callable[[bytes], Request], ctx: Context,
                       fn: Callable[..., Awaitable[Any]], transaction: bool,
                       subject: str) -> bytes:
        try:
            request = decode(data)
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
        with telemetry.server_span(subject, headers):
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
