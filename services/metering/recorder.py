"""Meter-event batches on the synchronous path, written together.

Batches that arrive together are written by one statement — one round trip for their keys
and events, one commit — and each keeps its own outcome: per event `created` or `duplicate`,
or its own refusal when the shared write fails. A request with an `Idempotency-Key` header
is written on its own, with its reply stored in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import msgspec

from contracts import Reply, Scope
from contracts.metering import AcceptedBatch, AcceptedEvent, EventOutcome, RecordedEvents
from services.metering import store
from services.runtime.batching import MicroBatcher, isolating_failures
from services.runtime.idempotency import IdempotencyKeys

_encode = msgspec.json.Encoder().encode

Batch = tuple[Scope, list[AcceptedEvent]]


class EventRecorder:
    def __init__(self, pool: Callable[[], asyncpg.Pool], keys: IdempotencyKeys, *,
                 max_batches: int = 32):
        self._pool = pool
        self._keys = keys
        # Up to `max_batches` requests (100 events each at most) per statement.
        self._together = MicroBatcher(isolating_failures(
            self._write_together, what="meter events", request_id=lambda b: b[0].request_id,
            committed=self._committed), max_batch=max_batches)

    async def record(self, scope: Scope, events: list[AcceptedEvent]) -> bytes:
        """The encoded 201 reply, once the batch has committed."""
        if scope.idempotency_key:
            return await self._record_keyed(scope, events)
        return await self._together((scope, events))

    async def _write_together(self, batches: list[Batch]) -> list[bytes]:
        # One transaction: the rare follow-up read of keys taken meanwhile (`write_events`)
        # happens before the commit, so a failure after the commit is the commit's own.
        async with self._pool().acquire() as conn, conn.transaction():
            ids = await store.write_events(conn, [
                AcceptedBatch("", scope.org_id, scope.livemode, events)
                for scope, events in batches])
        return [_encode(Reply(result=outcome(events, stored), status=201))
                for (_, events), stored in zip(batches, ids, strict=True)]

    async def _committed(self, batches: list[Batch]) -> list[bytes | None]:
        """The replies of the batches a failed write stored anyway: their event ids were
        chosen before it (`accept_batch`), so a stored batch has an event under its own id.
        A batch with none (not stored, or every event a duplicate) is simply written again."""
        stored = await store.stored_events(self._pool(), [
            AcceptedBatch("", scope.org_id, scope.livemode, events) for scope, events in batches])
        return [_encode(Reply(result=outcome(events, ids), status=201))
                if any(i == e.id for i, e in zip(ids, events, strict=True)) else None
                for (_, events), ids in zip(batches, stored, strict=True)]

    async def _record_keyed(self, scope: Scope, events: list[AcceptedEvent]) -> bytes:
        async with self._pool().acquire() as conn, conn.transaction():
            stored = await self._keys.begin(conn, scope)
            if stored is not None:
                return stored
            [ids] = await store.write_events(
                conn, [AcceptedBatch("", scope.org_id, scope.livemode, events)])
            reply = Reply(result=outcome(events, ids), status=201, replayed=True)
            await self._keys.complete(conn, scope, _encode(reply))
        reply.replayed = False
        return _encode(reply)


def outcome(events: list[AcceptedEvent], ids: list[str]) -> RecordedEvents:
    return RecordedEvents(
        [EventOutcome(stored_id, "created" if stored_id == e.id else "duplicate")
         for e, stored_id in zip(events, ids, strict=True)], len(events))
