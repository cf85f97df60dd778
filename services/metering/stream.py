"""The JetStream stream of meter-event batches accepted asynchronously, and the durable
consumer the metering workers share. The gateway (publisher) and the workers both make
sure the stream exists; whoever starts first creates it."""

from __future__ import annotations

from typing import Any

from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from contracts.metering_subjects import (
    METER_EVENTS_CONSUMER,
    METER_EVENTS_PREFIX,
    METER_EVENTS_STREAM,
)

# A retried publish (same batch id) within this window is dropped by JetStream; later
# retries are dropped by the workers' batch dedup in PostgreSQL.
DUPLICATE_WINDOW_S = 120.0


async def ensure_stream(js: Any) -> None:
    """Create the stream if missing; an existing stream is left as operators tuned it."""
    try:
        await js.stream_info(METER_EVENTS_STREAM)
        return
    except NotFoundError:
        pass
    config = StreamConfig(
        name=METER_EVENTS_STREAM, subjects=[METER_EVENTS_PREFIX + ">"],
        # A work queue: a batch leaves the stream once a worker has stored it and acked.
        retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S)
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.stream_info(METER_EVENTS_STREAM)  # another process created it meanwhile


def consumer_config(ack_wait_s: float) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=METER_EVENTS_CONSUMER, name=METER_EVENTS_CONSUMER,
        filter_subject=METER_EVENTS_PREFIX + ">", deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        # A batch fetched by a worker that dies is handed to another after this long.
        ack_wait=ack_wait_s,
        max_deliver=-1,  # never give up on an accepted batch
        max_ack_pending=8192)
