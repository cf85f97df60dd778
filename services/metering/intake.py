"""Asynchronous meter-event batches that carry an `Idempotency-Key` (`events.accept`).

The key is claimed in metering's key table, where the synchronous path claims it, so one
key means one request whichever way it comes in: inside one transaction the key is claimed
(a stored answer is replayed, another body under it is refused with 422), the batch is
handed to JetStream and acknowledged there, and the 202 answer is stored under the key.
The batch id derives from (organization, mode, key): if the commit fails after the
publish, the retry publishes the same batch again, which JetStream's duplicate window or
else the workers' batch dedup drop — the events are stored once.

Batches without a key never come here: the gateway publishes them itself (no extra round
trip on the hot path), each under a fresh batch id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import asyncpg
import msgspec
import nats

from contracts import Reply, Scope
from contracts.errors import unavailable
from contracts.meter_events import accepted
from contracts.metering import AcceptedBatch, AcceptedEvent
from services.runtime.idempotency import IdempotencyKeys
from services.runtime.meter_stream import publish_batch

_encode = msgspec.json.Encoder().encode


def keyed_batch_id(scope: Scope) -> str:
    """The same key in the same organization and mode always names the same batch."""
    return hashlib.sha256(
        f"{scope.org_id}|{int(scope.livemode)}|{scope.idempotency_key}".encode()).hexdigest()


class KeyedIntake:
    def __init__(self, pool: Callable[[], asyncpg.Pool], keys: IdempotencyKeys,
                 jetstream: Callable[[], Any]):
        self._pool = pool
        self._keys = keys
        self._js = jetstream

    async def accept(self, scope: Scope, batch_id: str, events: list[AcceptedEvent]) -> bytes:
        """The encoded 202 reply (or the answer stored under the key)."""
        async with self._pool().acquire() as conn, conn.transaction():
            stored = await self._keys.begin(conn, scope)
            if stored is not None:
                return stored
            js = self._js()
            if js is None:  # the worker's connection is not up yet
                raise unavailable()
            try:
                await publish_batch(js, AcceptedBatch(batch_id, scope.org_id, scope.livemode,
                                                      events))
            except (nats.errors.Error, TimeoutError):
                raise unavailable() from None  # rolls back: the key is free for the retry
            reply = Reply(result=accepted(events), status=202, replayed=True)
            await self._keys.complete(conn, scope, _encode(reply))
        reply.replayed = False
        return _encode(reply)
