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

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from contracts import events
from services.payments.events import domain, store
from services.payments.webhook_deliveries import store as deliveries
from services.payments.webhook_deliveries.domain import deliveries_for
from services.runtime.streams import EventReader

log = logging.getLogger(__name__)

class EventLog(EventReader):
    durable = "payments-event-log"
    subjects = events.SUBJECT_PREFIX + ">"
    what = "billing events"

    def __init__(self, pool: Callable[[], asyncpg.Pool], nats_servers: list[str], *,
                 clock: Callable[[], datetime], queued: Callable[[], None], **options):
        super().__init__(nats_servers, **options)
        self._pool = pool
        self._clock = clock  # the deliveries' (the sender's)
        self._queued = queued  # deliveries were queued: tell the sender

    async def write(self, msgs: list[Any]) -> None:
        """Log the events and queue their deliveries (in one transaction)."""
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
                new, endpoints = await store.log(conn, list(read.values()))
                owed = deliveries_for(new, endpoints)
                if owed:
                    await deliveries.add(conn, owed, self._clock())
                    queued = True
        if queued:
            self._queued()
