"""Metering messages: meters, meter events, usage summaries, DNS usage and plans
(metering-invoicing.md §2.1–§2.2, §3, §10; ledger.md §2.7, §3.22–§3.24).

Field names are the HTTP API's (camelCase), as in contracts/ledger.py. Event objects inside a
batch ignore unknown keys and match key names exactly (only the top level is case-folded).
Per-event structs are `gc=False`: thousands are made a second and none can hold a cycle, so
the garbage collector need not track them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from contracts.catalog import Plan
from contracts.common import Int64, Params
from contracts.endpoint import Endpoint
from contracts.limits import Code, DimensionNames, Id, Name, UserId

# ---- requests -------------------------------------------------------------------------


class MeterCreateParams(Params):
    name: Name = ""
    eventName: Name = ""
    aggregationType: Code = ""
    currency: Code = ""
    dimensions: DimensionNames | None = None


class MeterGetParams(Params):
    id: Id = ""  # from the path


class MeterListParams(Params):
    limit: int = 0  # ≤ 0: the default; capped (limits.METERS_PAGE)
    offset: int = 0


class MeterIdsQuery(Params):
    """The ids of every meter of the caller's organization and mode."""


class MeterFindQuery(Params):
    """The caller's meter for an event name (404 when it has none)."""

    eventName: Name = ""


class MeterEventInput(msgspec.Struct, omit_defaults=True, gc=False):
    # null means absent, as in the reference's binding
    meterId: str | None = None
    userId: str | None = None
    value: Int64 | None = None
    timestamp: str | None = None  # RFC 3339 with offset; absent = when the server accepts it
    idempotency: str | None = None  # dedup key, per organization and mode
    dimensions: dict[str, Any] | None = None


class MeterEventBatch(Params):
    events: list[MeterEventInput] | None = None


class SummaryQuery(Params):
    meterId: Id = ""
    userId: UserId = ""
    periodStart: Code = ""
    periodEnd: Code = ""


class UsageAggregateParams(Params):
    """Per-meter usage of one customer in a window (for invoices). `start`/`end` are
    RFC 3339; empty = unbounded. The end is exclusive unless `endInclusive`."""

    userId: UserId = ""
    start: Code = ""
    end: Code = ""
    endInclusive: bool = False


class DnsUsageParams(Params):
    zone: Name = ""
    user: UserId = ""
    queries: Int64 = 0
    errors: Int64 = 0
    timestamp: Code = ""


class DnsSummaryQuery(Params):
    user: UserId = ""
    period: Code = ""


class DnsPlansQuery(Params):
    pass


# ---- accepted batches (JetStream `billing.meter_events.<org>`, and the store's input) -----


class AcceptedEvent(msgspec.Struct, gc=False, rename={
        "id": "i", "meterId": "m", "userId": "u", "value": "v", "timestamp": "t",
        "idempotency": "k", "dimensions": "d"}):
    """One validated event; `timestamp` in Unix microseconds (UTC). One-letter keys on the
    wire: these travel by the hundred thousand."""

    id: str
    meterId: str
    userId: str
    value: int
    timestamp: int
    idempotency: str
    dimensions: dict[str, Any] | None


class AcceptedBatch(msgspec.Struct, rename={
        "batchId": "b", "orgId": "o", "livemode": "l", "events": "e"}):
    """A batch the gateway acknowledged with 202; `batchId` is also its `Nats-Msg-Id`
    (empty for batches written synchronously)."""

    batchId: str
    orgId: str
    livemode: bool
    events: list[AcceptedEvent]


# ---- results --------------------------------------------------------------------------


class Meter(msgspec.Struct):
    id: str
    name: str
    eventName: str
    aggregationType: str
    currency: str
    dimensions: list[str] | None  # null when not supplied
    createdAt: str


class MeterList(msgspec.Struct):
    meters: list[Meter]
    count: int


class MeterIds(msgspec.Struct):
    ids: list[str]


class EventOutcome(msgspec.Struct, gc=False):
    id: str
    status: str  # created | duplicate | accepted (asynchronous path)


class RecordedEvents(msgspec.Struct):
    events: list[EventOutcome]
    count: int


class Summary(msgspec.Struct):
    meterId: str
    meterName: str
    userId: str
    aggregationType: str
    value: int
    eventCount: int
    periodStart: str  # the query values, echoed
    periodEnd: str


class MeterUsage(msgspec.Struct):
    meterId: str
    meterName: str
    currency: str
    aggregationType: str
    quantity: int
    eventCount: int


class UsageAggregate(msgspec.Struct):
    meters: list[MeterUsage]


class DnsUsageResult(msgspec.Struct):
    recorded: bool
    remaining: int
    limit: int


class DnsSummary(msgspec.Struct, omit_defaults=True):
    user: str
    period: str
    queries: int
    zones: int
    records: int
    limit: int  # the daily limit, whatever the period (reference)
    plan: str
    periodLimit: int | None = None  # ours, month only: the daily limit × days in the month


class PlanLimits(msgspec.Struct, omit_defaults=True):
    """The catalog's recognised limit keys, in the reference's order."""

    requestsPerMinute: int | None = None
    tokensPerMinute: int | None = None
    freeCredit: int | None = None
    maxMembers: int | None = None
    zones: int | None = None
    recordsPerZone: int | None = None
    queriesPerDay: int | None = None
    maxAlerts: int | None = None
    apiRateLimit: int | None = None
    mcpRateLimit: int | None = None


class PlanView(msgspec.Struct, omit_defaults=True):
    """A catalog plan on the wire (subscriptions.md "static plan")."""

    slug: str
    name: str
    description: str
    category: str
    price: int
    priceAnnual: int
    currency: str
    interval: str
    intervalCount: int
    trialPeriodDays: int
    contactSales: bool = False
    popular: bool = False
    features: list[str] | None = None
    limits: PlanLimits | None = None


_LIMIT_KEYS = tuple(PlanLimits.__struct_fields__)


def plan_view(plan: Plan) -> PlanView:
    """A catalog plan as the plans endpoints answer it: prices in cents, 0 for "by contract";
    the reference's `monthly` interval; only the recognised integer limits."""
    limits = None
    if plan.limits:
        limits = PlanLimits(**{k: int(plan.limits[k]) for k in _LIMIT_KEYS
                               if k in plan.limits and not isinstance(plan.limits[k], bool)})
    return PlanView(
        slug=plan.slug, name=plan.name, description=plan.description, category=plan.category,
        price=plan.price_monthly_cents or 0, priceAnnual=plan.price_annual_cents or 0,
        currency=plan.currency, interval="monthly", intervalCount=1, trialPeriodDays=0,
        contactSales=plan.contact_sales, popular=plan.popular,
        features=list(plan.features) or None, limits=limits)


# ---- endpoints -----------------------------------------------------

METER_CREATE = Endpoint("billing.metering.meter.create", MeterCreateParams, Meter)
METER_LIST = Endpoint("billing.metering.meter.list", MeterListParams, MeterList)
METER_GET = Endpoint("billing.metering.meter.get", MeterGetParams, Meter)
EVENTS_RECORD = Endpoint("billing.metering.events.record", MeterEventBatch, RecordedEvents)
EVENTS_SUMMARY = Endpoint("billing.metering.events.summary", SummaryQuery, Summary)
DNS_USAGE_RECORD = Endpoint("billing.metering.dns_usage.record", DnsUsageParams,
                            DnsUsageResult)
DNS_USAGE_SUMMARY = Endpoint("billing.metering.dns_usage.summary", DnsSummaryQuery,
                             DnsSummary)
DNS_PLAN_LIST = Endpoint("billing.metering.dns_plan.list", DnsPlansQuery, list[PlanView])
# Bus only (no HTTP route): the gateway's meter-id cache for the asynchronous path, the
# ledger's back-fill (a meter by event name), and the per-meter usage invoicing prices.
METER_IDS = Endpoint("billing.metering.meter.ids", MeterIdsQuery, MeterIds)
METER_FIND = Endpoint("billing.metering.meter.find", MeterFindQuery, Meter)
USAGE_AGGREGATE = Endpoint("billing.metering.usage.aggregate", UsageAggregateParams,
                           UsageAggregate)
# An asynchronous batch with an `Idempotency-Key`, accepted by metering so the key is
# claimed where the synchronous path claims it (one rule for both ways in).
EVENTS_ACCEPT = Endpoint("billing.metering.events.accept", MeterEventBatch, RecordedEvents)

# JetStream: meter-event batches accepted by the gateway (`Prefer: respond-async`) or copied
# by the ledger (usage debits into `api-usage` meters), stored by metering workers sharing
# one durable pull consumer. Message id (`Nats-Msg-Id`) = batch id.
METER_EVENTS_STREAM = "BILLING_METER_EVENTS"
METER_EVENTS_PREFIX = "billing.meter_events."
METER_EVENTS_CONSUMER = "metering"


def meter_events_subject(org_id: str) -> str:
    return METER_EVENTS_PREFIX + org_id


# Meter-event batches that could not be stored: kept with their error until an operator
# replays or discards them (`billing metering dead-letters`).
METER_EVENTS_DEAD_STREAM = "BILLING_METER_EVENTS_DEAD"
METER_EVENTS_DEAD_PREFIX = "billing.meter_events_dead."
