"""The ledger's reader of payments' payment-method events (`billing.events.payment_method.*`,
published by payments' outbox relay): it keeps `ledger.payment_methods` current, so the
status check answers from the ledger's own table.

One durable JetStream consumer, shared by the ledger's replicas (each event is written by
one of them, into the table they all read) and resumed where it stopped after a restart. A
fetch of events is written in one statement and acknowledged after it: an event delivered
again (a lost ack, a relay publishing again) finds nothing left to change.

How current the table is: an event reaches it a few milliseconds after payments committed
the change (payments' relay is nudged by the change; this consumer's pull is waiting). Until
the consumer has read every event already in the stream — just after a start, or while
writes fail or NATS is away — `current` is False and the status check asks payments too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import asyncpg
import msgspec

from contracts import events
from services.ledger.payment_methods import domain, store
from services.runtime.streams import EventReader

log = logging.getLogger(__name__)


class PaymentMethodEvents(EventReader):
    durable = "ledger-payment-methods"
    subjects = events.subject("payment_method.>")
    what = "payment-method events"

    def __init__(self, pool: Callable[[], asyncpg.Pool], nats_servers: list[str], **options):
        super().__init__(nats_servers, **options)
        self._pool = pool

    async def write(self, msgs: list[Any]) -> None:
        """Record what the events say (in one statement)."""
        states = []
        for msg in msgs:
            try:
                state = domain.read(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as error:
                # Never readable, whatever we do: dropped, and said so once.
                log.error("payment-method event %s (%s) is not one; dropped: %s",
                          (msg.headers or {}).get("Nats-Msg-Id", "?"), msg.subject, error)
                continue
            if state is not None:
                states.append(state)
        if states:
            await store.apply(self._pool(), domain.merged(states))
