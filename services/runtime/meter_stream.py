"""The JetStream stream of meter-event batches accepted asynchronously, and the durable
consumer the metering workers share. A mechanism shared by its publishers (the gateway;
the ledger's outbox relay publishes its copies there too) and metering's workers; both
make sure the stream exists, whoever starts first creates it. The message itself is a
contract (`contracts.metering.AcceptedBatch`). Batches that cannot be stored go
to a second stream, the dead letters (`dead_letters.py`)."""

from __future__ import annotations

from typing import Any

import msgspec
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from contracts.metering import (
    METER_EVENTS_CONSUMER,
    METER_EVENTS_DEAD_PREFIX,
    METER_EVENTS_DEAD_STREAM,
    METER_EVENTS_PREFIX,
    METER_EVENTS_STREAM,
    AcceptedBatch,
    meter_events_subject,
)

# A retried publish (same batch id) within this window is dropped by JetStream; later
# retries are dropped by the workers' batch dedup in PostgreSQL.
DUPLICATE_WINDOW_S = 120.0


_encode = msgspec.json.Encoder().encode


async def ensure_stream(js: Any) -> None:
    """Create the stream if missing; an existing stream is left as operators tuned it."""
    await _ensure(js, StreamConfig(
        name=METER_EVENTS_STREAM, subjects=[METER_EVENTS_PREFIX + ">"],
        # A work queue: a batch leaves the stream once a worker has stored it and acked.
        retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S))


async def ensure_dead_letter_stream(js: Any) -> None:
    """The dead letters: kept (no limits) until an operator replays or discards them."""
    await _ensure(js, StreamConfig(
        name=METER_EVENTS_DEAD_STREAM, subjects=[METER_EVENTS_DEAD_PREFIX + ">"],
        retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S))


async def _ensure(js: Any, config: StreamConfig) -> None:
    try:
        await js.stream_info(config.name)
        return
    except NotFoundError:
        pass
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.stream_info(config.name)  # another process created it meanwhile


async def publish_batch(js: Any, batch: AcceptedBatch) -> None:
    """Hand an accepted batch to the workers; returns once JetStream has it (durable). The
    batch id is the message id: a retried publish inside the window is dropped."""
    await js.publish(meter_events_subject(batch.orgId), _encode(batch),
                     headers={"Nats-Msg-Id": batch.batchId})


def consumer_config(ack_wait_s: float) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=METER_EVENTS_CONSUMER, name=METER_EVENTS_CONSUMER,
        filter_subject=METER_EVENTS_PREFIX + ">", deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        # A batch fetched by a worker that dies is handed to another after this long.
        ack_wait=ack_wait_s,
        # JetStream never gives up on a batch: the workers bound the attempts themselves and
        # move the batch to the dead letters, where operators see it.
        max_deliver=-1,
        max_ack_pending=8192)
