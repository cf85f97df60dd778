"""What a provider's subscription or invoice event says of the subscription it backs, pure
(subscriptions.md §2.7 OURS, payments.md §5.4): read from Stripe's or Square's object into
our statuses and periods, and the change it makes to a subscription. No I/O.

Stripe sends `customer.subscription.*` (normalized `subscription.created|updated|canceled`,
the object a subscription) and `invoice.paid|payment_failed` (an invoice, its subscription in
`subscription`); Square sends `subscription.created|updated` (a subscription) and
`invoice.payment_made` (normalized `invoice.paid`) / `invoice.scheduled_charge_failed` (an
invoice, its subscription in `subscription_id`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from typing import Any

from contracts.errors import invalid
from contracts.provider_events import ProviderEventParams

log = logging.getLogger(__name__)

PROVIDERS = ("stripe", "square")
CANCELED, ACTIVE, PAST_DUE = "canceled", "active", "past_due"
# The statuses a provider-backed subscription may take (§1.3.1 OURS); Stripe's are ours.
STATUSES = frozenset({"trialing", ACTIVE, PAST_DUE, CANCELED, "unpaid", "incomplete",
                      "incomplete_expired", "paused"})
_SQUARE_STATUSES = {"ACTIVE": ACTIVE, "CANCELED": CANCELED, "DEACTIVATED": CANCELED,
                    "PENDING": "trialing", "PAUSED": "paused"}
# An invoice paid brings these back to active; any other status is the provider's to move.
_REVIVED_BY_PAYMENT = frozenset({PAST_DUE, "unpaid", "incomplete"})
_INVOICE_PAID = frozenset({"invoice.paid"})
_INVOICE_FAILED = frozenset({"invoice.payment_failed", "invoice.scheduled_charge_failed"})


@dataclass(frozen=True, slots=True)
class News:
    """What one event says of one provider subscription; None fields: not said."""

    provider_id: str
    status: str | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    cancel_at_period_end: bool | None = None
    canceled_at: datetime | None = None
    ended_at: datetime | None = None
    trial_start: datetime | None = None
    trial_end: datetime | None = None
    invoice: str = ""  # paid | failed: an invoice event (it moves the status only)


def processor(p: ProviderEventParams) -> str:
    """The provider the event came from; 400 for a request that names none of ours or no
    event (a bus caller's mistake: payments always names both)."""
    name = p.provider.strip().lower()
    if name not in PROVIDERS:
        raise invalid("provider must be stripe or square", "provider")
    if not p.providerEventId.strip():
        raise invalid("providerEventId is required", "providerEventId")
    return name


def news(p: ProviderEventParams, now: datetime) -> News | None:
    """The event's news of a subscription; None for an event about none (another kind, an
    invoice of no subscription, an object without an id)."""
    obj, kind = p.object, p.type
    if kind in _INVOICE_PAID or kind in _INVOICE_FAILED:
        sub = _invoice_subscription(obj)
        return News(sub, invoice="paid" if kind in _INVOICE_PAID else "failed") if sub else None
    if not kind.startswith("subscription."):
        return None
    provider_id = _str(obj, "id")
    if not provider_id:
        return None
    if p.provider == "square":
        said = _square(provider_id, obj)
    else:
        said = _stripe(provider_id, obj)
    if kind == "subscription.canceled":  # Stripe's deleted: over, whatever its status says
        return replace(said, status=CANCELED, ended_at=said.ended_at or now,
                       canceled_at=said.canceled_at or now)
    return said


def changes(row: Mapping[str, Any], said: News) -> dict[str, Any]:
    """The columns `said` changes of the subscription `row` (only those that differ)."""
    if said.invoice == "paid":
        wanted: dict[str, Any] = {"status": ACTIVE} if row["status"] in _REVIVED_BY_PAYMENT else {}
    elif said.invoice == "failed":
        wanted = {"status": PAST_DUE} if row["status"] in (ACTIVE, "trialing") else {}
    else:
        wanted = {column: value for column, value in (
            ("status", said.status), ("period_start", said.period_start),
            ("period_end", said.period_end), ("cancel_at_period_end", said.cancel_at_period_end),
            ("canceled_at", said.canceled_at), ("ended_at", said.ended_at),
            ("trial_start", said.trial_start), ("trial_end", said.trial_end),
        ) if value is not None}
        if wanted.get("status") == CANCELED:
            wanted["canceled"] = True
    return {k: v for k, v in wanted.items() if row[k] != v}


def event_of(before: str, after: str) -> str:
    """The subscription event a provider's change is announced as (the REST paths' names)."""
    if after != before and after in (CANCELED, PAST_DUE, "unpaid"):
        return after
    if before == CANCELED and after != CANCELED:
        return "reactivated"
    return "updated"


def _stripe(provider_id: str, obj: Mapping[str, Any]) -> News:
    status = _str(obj, "status")
    cancel_at_end = obj.get("cancel_at_period_end")
    return News(
        provider_id, _known(status, status),
        _epoch(obj, "current_period_start"), _epoch(obj, "current_period_end"),
        cancel_at_end if isinstance(cancel_at_end, bool) else None,
        _epoch(obj, "canceled_at"), _epoch(obj, "ended_at"),
        _epoch(obj, "trial_start"), _epoch(obj, "trial_end"))


def _square(provider_id: str, obj: Mapping[str, Any]) -> News:
    """Square states days, not instants: a period ends at the start (UTC) of the day it is
    charged up to."""
    status = _str(obj, "status")
    return News(provider_id, _known(status, _SQUARE_STATUSES.get(status)),
                period_end=_day(obj, "charged_through_date"),
                canceled_at=_day(obj, "canceled_date"))


def _known(said: str, ours: str | None) -> str | None:
    if ours in STATUSES:
        return ours
    if said:
        log.warning("provider subscription status %r is not one of ours; ignored", said)
    return None


def _invoice_subscription(obj: Mapping[str, Any]) -> str:
    """The provider subscription an invoice is of: Stripe's `subscription` (an id, or the
    expanded object), or its `parent.subscription_details` in newer API versions; Square's
    `subscription_id`."""
    sub = obj.get("subscription")
    if isinstance(sub, dict):
        sub = sub.get("id")
    if not sub:
        parent = obj.get("parent")
        details = parent.get("subscription_details") if isinstance(parent, dict) else None
        sub = details.get("subscription") if isinstance(details, dict) else None
    return sub if isinstance(sub, str) and sub else _str(obj, "subscription_id")


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _epoch(obj: Mapping[str, Any], key: str) -> datetime | None:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return None
    return datetime.fromtimestamp(value, UTC)


def _day(obj: Mapping[str, Any], key: str) -> datetime | None:
    try:
        return datetime.combine(date.fromisoformat(_str(obj, key)), time(), UTC)
    except ValueError:
        return None
