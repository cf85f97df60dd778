"""Asynchronous meter-event batches that carry an `Idempotency-Key` (`events.accept`).

The handler runs like any keyed write (`transaction=True`): the runtime claims the key in
metering's key table, where the synchronous path claims it too, so one key means one
request whichever way it comes in (a stored answer is replayed, another body under it is
refused with 422). Inside that transaction the batch is handed to JetStream and
acknowledged there; the 202 answer is stored under the key at commit. The batch id derives
from (organization, mode, key): if the commit fails after the publish, the retry publishes
the same batch again, which JetStream's duplicate window or else the workers' batch dedup
drop — the events are stored once.

Batches without a key never come here: the gateway publishes them itself (no extra round
trip on the hot path), each under a fresh batch id.
"""

from __future__ import annotations

import hashlib
from typing import Any

import nats

from contracts import Scope
from contracts.errors import unavailable
from contracts.metering import AcceptedBatch
from services.runtime.meter_stream import publish_batch


def keyed_batch_id(scope: Scope) -> str:
    """The same key in the same organization and mode always names the same batch."""
    return hashlib.sha256(
        f"{scope.org_id}|{int(scope.livemode)}|{scope.idempotency_key}".encode()).hexdigest()


async def hand_over(js: Any, batch: AcceptedBatch) -> None:
    """Publish the batch and wait for JetStream's ack; 503 (retryable: the transaction
    rolls back and the key is free again) when it cannot be made durable now."""
    if js is None:  # the workers' connection is not up yet
        raise unavailable()
    try:
        await publish_batch(js, batch)
    except (nats.errors.Error, TimeoutError):
        raise unavailable() from None
