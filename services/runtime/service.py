"""What a service is made of, declared once in `services/<name>/__init__.py` as `SPEC`:
its handlers (module-level functions registered on a `Router`), its periodic jobs, its
migrations and a bootstrap that builds its state. `services.specs.NAMES` lists them; the
platform, the CLI and the packaging loop over that list (services/README.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from contracts import Scope
from contracts.endpoint import Endpoint
from contracts.errors import Failure
from services.runtime.config import Settings
from services.runtime.idempotency import IdempotencyKeys

if TYPE_CHECKING:
    import asyncpg

    from services.runtime.bus import Service
    from services.runtime.outbox import LogPublished

R = TypeVar("R")
HandlerFn = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Handler:
    endpoint: Endpoint
    fn: HandlerFn  # fn(ctx, scope, params) or, in a transaction, fn(ctx, scope, params, conn)
    transaction: bool = False


class Router:
    """The handlers of a service, or of one area of it, registered where they are defined;
    a service's router includes its areas' (FastStream's routers, without the framework)."""

    def __init__(self, *include: Router):
        self.handlers: list[Handler] = [h for router in include for h in router.handlers]

    def handler(self, endpoint: Endpoint, *, transaction: bool = False,
                ) -> Callable[[HandlerFn], HandlerFn]:
        """Register `fn(ctx, scope, params)` for `endpoint`.

        With `transaction=True` it is `fn(ctx, scope, params, conn)`, run in one database
        transaction and idempotent under the scope's key (`Context.transaction`).
        A handler may return a result, a `Reply`, or `bytes` (a reply it encoded itself)."""
        def register(fn: HandlerFn) -> HandlerFn:
            self.handlers.append(Handler(endpoint, fn, transaction))
            return fn

        return register


@dataclass(frozen=True, slots=True)
class Job:
    """`run(ctx)` every `seconds` (or `seconds(settings)`) while the service runs. Replicas
    all run it, so a job must be safe to run concurrently (row locks, SKIP LOCKED)."""

    seconds: float | Callable[[Settings], float]
    run: Callable[[Context], Awaitable[None]]


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # ledger | metering | ...: queue group, database schema, outbox owner
    handlers: Router
    migrations: Path | None  # services/<name>/migrations; None: no database (bus-only tools)
    # Builds the service's state onto `ctx.state` once the pool and the bus are up (caches,
    # batchers, consumers); what must be stopped is handed to `ctx.on_stop`.
    bootstrap: Callable[[Context], Awaitable[None]] | None = None
    jobs: tuple[Job, ...] = ()


class Context:
    """What every handler and job of a service receives: its pool, settings, idempotency
    keys, a typed `ask` to other services, and the state its bootstrap built."""

    def __init__(self, service: Service):
        self._service = service
        self.name = service.name
        self.settings: Settings = service.settings
        self.keys: IdempotencyKeys = service.keys
        self.pool: asyncpg.Pool | None = None
        self.state: Any = None
        self.stops: list[Callable[[], Awaitable[None]]] = []
        # Set by a bootstrap that logs the service's own events as its relay publishes them
        # (`OutboxRelay.log_published`).
        self.log_published: LogPublished | None = None

    def on_stop(self, stop: Callable[[], Awaitable[None]]) -> None:
        """Run `stop()` when the service stops (before its pool closes), last added first."""
        self.stops.append(stop)

    async def transaction(self, scope: Scope, params: Any, fn: HandlerFn) -> bytes:
        """The encoded reply of `fn(ctx, scope, params, conn)` run as a `transaction=True`
        handler is: in one database transaction, idempotent under the scope's key. For a
        handler that batches requests without a key and takes the others this way."""
        return await self._service.in_transaction(self, scope, params, fn)

    async def ask(self, endpoint: Endpoint[Any, R], scope: Scope, params: Any, *,
                  timeout: float = 2.0, batched: bool = False) -> R | None:
        """The other service's result; its refusal raised as the same `Failure`; None when
        nobody answers in time (the caller decides what absence means, e.g. "no payment
        method" while payments is not deployed). `batched`: in one message with the other
        batched asks of that service made meanwhile (concurrent requests' asks); for reads
        and writes under a key only, as a batch refused whole is sent again, each alone."""
        reply = await self._service.request(endpoint.subject, scope, params, timeout=timeout,
                                            batched=batched)
        if reply is None:
            return None
        if reply.error is not None:
            raise Failure.of(reply.error)
        if endpoint.decode_result is None:
            return None
        return endpoint.decode_result(reply.result)



