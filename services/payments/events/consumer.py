"""Payments' reader of every billing event (`billing.events.>`, published by each service's
outbox relay): it keeps the event log and queues the webhook deliveries each event owes.
The provider events payments makes of webhooks it receives are logged as they are stored
(`keep`, in the intake's transaction); those it forwards to other services come back from
the stream, found logged.

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

# How many ids of events this process logged as it made them are kept until the stream brings
# them back (another replica's reader may take them instead: the oldest are forgotten).
MADE_KEPT = 10_000


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
        self._made: dict[str, bool] = {}  # see `made`, oldest first

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
        for event_id in [event_id for event_id in read if self._made.pop(event_id, False)]:
            del read[event_id]  # logged by this process as it made it: no read needed
        if read and all(e.type.startswith(domain.LOGGED_AS_MADE) for e in read.values()):
            # Logged as payments made them, found by one read, without the write lock.
            logged = await store.logged(self._pool(), list(read))
            read = {event_id: e for event_id, e in read.items() if event_id not in logged}
        queued = False
        if read:
            async with self._pool().acquire() as conn, conn.transaction():
                queued = await self.keep(conn, list(read.values()), serialized=True)
        if queued:
            self._queued()

    async def keep(self, conn: asyncpg.Connection, events: list[domain.Logged], *,
                   serialized: bool = False) -> bool:
        """Log the events in the caller's transaction and queue the deliveries the new ones
        owe, under the write lock (so that deliveries are queued in commit order); whether
        any were (then `wake()` once committed). Also for the events payments logs as it
        makes them (webhooks_in), which take the lock only when they owe deliveries;
        the stream's fetches are `serialized` from their first write."""
        if not events:
            return False
        new, endpoints = await store.log(conn, events, serialized=serialized)
        owed = deliveries_for(new, endpoints)
        if not owed:
            return False
        if not serialized:
            await store.serialize(conn)
        await deliveries.add(conn, owed, self._clock())
        return True

    def made(self, event_ids: list[str]) -> None:
        """Events this process logged as it made them, committed, that the stream brings
        back (those forwarded): the fetch that brings them here finds them logged without
        reading the log."""
        made = self._made
        for event_id in event_ids:
            made[event_id] = True
        while len(made) > MADE_KEPT:
            del made[next(iter(made))]

    def wake(self) -> None:
        """Deliveries were queued by `keep`: tell the sender."""
        self._queued()
