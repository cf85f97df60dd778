"""Payments' reader of every billing event (`billing.events.>`, published by each service's
outbox relay): it keeps the event log and queues the webhook deliveries each event owes.

One durable JetStream consumer, shared by payments' replicas, resumed where it stopped. A
fetch of events is written in one transaction — the new events, and a delivery for each
enabled endpoint of the event's organization and mode that wants its type — then
acknowledged. An event delivered again (a lost ack, a relay publishing again after the
stream's duplicate window) is found in the log by its id and owes nothing more.

Replicas write their fetches one at a time (an advisory lock), so deliveries are queued in
the order the stream holds their events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
import nats
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from contracts import events
from services.payments.events import domain, store
from services.payments.webhook_deliveries import store as deliveries
from services.payments.webhook_deliveries.domain import deliveries_for
from services.runtime.outbox import ensure_stream
from services.runtime.streams import fetch_ready

log = logging.getLogger(__name__)

CONSUMER = "payments-event-log"
SUBJECTS = events.SUBJECT_PREFIX + ">"
RETRY_DELAY_S = 1.0  # a fetch that could not be written is delivered again after this
_WRITE_LOCK = "select pg_advisory_xact_lock(hashtextextended('payments.event_log', 0))"


class EventLog:
    def __init__(self, pool: Callable[[], asyncpg.Pool], nats_servers: list[str], *,
                 clock: Callable[[], datetime], queued: Callable[[], None],
                 ack_wait_s: float = 30.0, fetch_events: int = 256):
        self._pool = pool
        self._servers = nats_servers
        self._clock = clock  # the deliveries' (the sender's)
        self._queued = queued  # deliveries were queued: tell the sender
        self._ack_wait_s = ack_wait_s
        self._fetch_events = fetch_events
        self._nc: nats.NATS | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._failing = False

    async def start(self) -> None:
        self._nc = await nats.connect(servers=self._servers, name="billing-payments-event-log",
                                      max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        js = self._nc.jetstream()
        await ensure_stream(js)
        try:
            await js.consumer_info(events.STREAM, CONSUMER)
        except NotFoundError:
            with contextlib.suppress(APIError):  # another replica created it meanwhile
                await js.add_consumer(events.STREAM, ConsumerConfig(
                    durable_name=CONSUMER, name=CONSUMER, filter_subject=SUBJECTS,
                    deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=self._ack_wait_s, max_deliver=-1,
                    max_ack_pending=4 * self._fetch_events))
        sub = await js.pull_subscribe_bind(durable=CONSUMER, stream=events.STREAM)
        self._stopping = False
        self._task = asyncio.create_task(self._run(sub), name="payments-event-log")

    async def stop(self) -> None:
        """Stop reading; a fetch being written is rolled back and delivered again later."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._nc is not None:
            await self._nc.close()
            self._nc = None

    async def _run(self, sub: Any) -> None:
        while not self._stopping:
            try:
                msgs = await fetch_ready(sub, self._fetch_events)
            except (NatsTimeout, TimeoutError):
                continue
            except (ConnectionClosedError, NoRespondersError, APIError):
                await asyncio.sleep(0.5)
                continue
            if not msgs:  # nats-py's fetch may end on a status message, with no event
                continue
            try:
                await self.write(msgs)
            except Exception as error:  # the database away: the events come back later
                if not self._failing:  # once per outage, not once per fetch
                    self._failing = True
                    log.warning("writing billing events failed (%s); retrying", error)
                for msg in msgs:
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=RETRY_DELAY_S)
                await asyncio.sleep(RETRY_DELAY_S)

    async def write(self, msgs: list[Any]) -> None:
        """Log the events and queue their deliveries, then acknowledge them."""
        read: dict[str, domain.Logged] = {}
        for msg in msgs:
            try:
                e = domain.read(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as error:
                # Never readable, whatever we do: dropped, and said so once.
                log.error("billing event %s (%s) is not one; dropped: %s",
                          (msg.headers or {}).get("Nats-Msg-Id", "?"), msg.subject, error)
                continue
            read.setdefault(e.id, e)
        queued = False
        if read:
            async with self._pool().acquire() as conn, conn.transaction():
                await conn.execute(_WRITE_LOCK)
                new = await store.log(conn, list(read.values()))
                owed = deliveries_for(new, await deliveries.enabled_endpoints(
                    conn, list({(e.org_id, e.livemode) for e in new}))) if new else []
                if owed:
                    await deliveries.add(conn, owed, self._clock())
                    queued = True
        if self._failing:
            self._failing = False
            log.warning("billing events are written again")
        for msg in msgs:
            await msg.ack()
        if queued:
            self._queued()
