"""The cycle's reader of invoicing's events (`billing.events.invoice.*`): a past-due
period whose invoice is paid (`/pay`, a provider) or voided (forgiven, Q3) outside the cycle
ends its dunning and the subscription moves on (subscriptions.md §1.3.3), exactly once: the
claim is settled in the transaction that advances the period, so an event delivered again
finds nothing left to do.

One durable JetStream consumer shared by the service's replicas, resumed where it stopped."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import msgspec

from contracts import events
from services.runtime.bus import nats_servers
from services.runtime.service import Context
from services.runtime.streams import EventReader
from services.subscriptions.cycle import runner

log = logging.getLogger(__name__)

SETTLING = ("invoice.paid", "invoice.voided")


class _Invoice(msgspec.Struct):
    id: str = ""
    subscriptionId: str = ""
    periodStart: str = ""
    status: str = ""


class _Event(msgspec.Struct):
    type: str
    orgId: str
    livemode: bool
    data: _Invoice


_decode = msgspec.json.Decoder(_Event).decode


class InvoiceEvents(EventReader):
    durable = "subscriptions-cycle-invoices"
    # Only the events that settle a period: the others (created, finalized, payment
    # failures: three times as many in a cycle) are not delivered at all.
    subjects = tuple(events.subject(t) for t in SETTLING)
    what = "invoice events"

    def __init__(self, ctx: Context, **options: Any):
        super().__init__(nats_servers(ctx.settings.nats_url), **options)
        self._ctx = ctx

    async def write(self, msgs: list[Any]) -> None:
        """Settle the past-due periods whose invoices the events paid or voided."""
        settled: list[runner.Settled] = []
        for msg in msgs:
            try:
                event = _decode(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as error:
                log.error("invoice event %s is not one; dropped: %s", msg.subject, error)
                continue
            invoice = event.data
            if event.type not in SETTLING or not invoice.subscriptionId:
                continue
            try:
                start = datetime.fromisoformat(invoice.periodStart)
            except ValueError:
                continue  # not a period invoice
            settled.append(runner.Settled(event.orgId, event.livemode, invoice.subscriptionId,
                                          start, invoice.id, invoice.status))
        if settled:
            await runner.settled_outside(self._ctx, settled)

