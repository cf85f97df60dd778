"""Provider subscription events (subscriptions.md §2.7 OURS): what payments reports of a
subscription or invoice at Stripe or Square, applied to the local subscription it backs.
Payments publishes every verified delivery as `billing.events.provider.<type>` (the data
below); the subscriptions service reads them, and answers the same apply on the bus."""

from __future__ import annotations

from typing import Any

import msgspec

from contracts.common import Params
from contracts.endpoint import Endpoint
from contracts.limits import Code, Id, Name


class ProviderEventParams(Params):
    """The `data` of a `provider.<type>` event, as payments publishes it."""

    provider: Code = ""  # stripe | square: the processor
    providerEventId: Id = ""
    type: Name = ""  # normalized: subscription.updated, invoice.paid, ...
    providerType: Name = ""  # as the provider wrote it
    account: Id = ""
    source: Code = ""
    object: dict[str, Any] = {}  # the provider's object the event is about


class ProviderEventApplied(msgspec.Struct, kw_only=True, omit_defaults=True):
    applied: bool  # the event changed a subscription of ours
    subscriptionId: str | None = None
    duplicate: bool = False  # this (processor, event id) was applied before


PROVIDER_EVENT_APPLY = Endpoint("billing.subscriptions.provider_event.apply",
                                ProviderEventParams, ProviderEventApplied)
