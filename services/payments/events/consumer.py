"""Payments' event log: every billing event, logged, with the webhook deliveries it owes.

Payments' own events are logged as they are made or published, never read back from the
stream: the provider events it makes of webhooks it receives as they are stored (`keep`,
in the intake's transaction), the others as its outbox relay publishes them
(`log_published`, in the relay's transaction). The other services' events are read from
the stream (`EventLog`, subscribed to their kinds only: `contracts.events.PUBLISHERS`).

One durable JetStream consumer, shared by payments' replicas, resumed where it stopped. A
fetch of events is written in one transaction — the new events, and a delivery for each
enabled endpoint of the event's organization and mode that wants its type — then
acknowledged. An event delivered again (a lost ack, a relay publishing again after the
stream's duplicate window) is found in the log by its id and owes nothing more.

Deliveries are queued under one write lock, so in the order their events were logged."""

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
    subjects = events.published_by_others("payments")
    what = "other services' billing events"

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
                queued = await self.keep(conn, list(read.values()), serialized=True)
        if queued:
            self._queued()

    async def keep(self, conn: asyncpg.Connection, events: list[domain.Logged], *,
                   serialized: bool = False) -> bool:
        """Log the events in the caller's transaction and queue the deliveries the new ones
        owe, under the write lock (so that deliveries are queued in commit order); whether
        any were (then `wake()` once committed). Also for payments' own events (webhooks_in's
        as it makes them, the others' as the relay publishes them), which take the lock only
        when they owe deliveries; the stream's fetches are `serialized` from their first
        write."""
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

    async def log_published(self, conn: asyncpg.Connection, rows: list[asyncpg.Record],
                            ) -> Callable[[], None] | None:
        """Payments' own events, as its outbox relay publishes them (`OutboxRelay`), logged
        in the relay's transaction; `wake` once it commits if they owe deliveries. The
        provider events were logged as they were made."""
        made = [domain.read(r["payload"]) for r in rows
                if not r["type"].startswith(domain.LOGGED_AS_MADE)]
        return self.wake if await self.keep(conn, made) else None

    def wake(self) -> None:
        """Deliveries were queued by `keep`: tell the sender."""
        self._queued()
