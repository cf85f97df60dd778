"""The subscriptions service's reader of payments' provider events
(`billing.events.provider.>`: the verified webhook deliveries payments forwards, published
by its outbox relay). Subscription and invoice events are applied (`handlers.apply`), each in its
own transaction; the others are not ours and pass. One durable consumer shared by the
service's replicas, resumed where it stopped; an event delivered again finds its
(processor, event id) applied and changes nothing."""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from contracts import events
from contracts.errors import Failure
from contracts.provider_events import ProviderEventParams
from services.runtime.bus import nats_servers
from services.runtime.scopes import service_scope
from services.runtime.service import Context
from services.runtime.streams import EventReader
from services.subscriptions.reconcile.handlers import apply

log = logging.getLogger(__name__)

_decode = msgspec.json.Decoder(events.Event).decode
_FIELDS = frozenset(ProviderEventParams.__struct_fields__)
_OURS = ("provider.subscription.", "provider.invoice.")


class ProviderEvents(EventReader):
    durable = "subscriptions-provider-events"
    subjects = events.subject("provider.>")
    what = "provider subscription events"

    def __init__(self, ctx: Context, **options: Any):
        super().__init__(nats_servers(ctx.settings.nats_url), **options)
        self._ctx = ctx

    async def write(self, msgs: list[Any]) -> None:
        for msg in msgs:
            try:
                event = _decode(msg.data)
                if not event.type.startswith(_OURS):
                    continue
                params = msgspec.convert({k: v for k, v in event.data.items() if k in _FIELDS},
                                         ProviderEventParams)
            except (msgspec.DecodeError, msgspec.ValidationError, AttributeError) as error:
                log.error("provider event %s (%s) is not one; dropped: %s",
                          (msg.headers or {}).get("Nats-Msg-Id", "?"), msg.subject, error)
                continue
            try:
                async with self._ctx.pool.acquire() as conn, conn.transaction():
                    await apply(conn, service_scope(event.orgId, event.livemode), params)
            except Failure as refused:  # never applicable, whatever we do
                log.error("provider event %s refused: %s", event.id, refused)
