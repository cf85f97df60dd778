"""Metering routes (metering-invoicing.md §3, ledger.md §3.22–§3.24).

Meters, meter events, summaries and DNS usage are class `admin`; the DNS plans are `public`
(any valid credential, publicly cacheable). `POST /billing/meter-events` with
`Prefer: respond-async` is taken by `services.gateway.ingest` instead of the bus request.
User ids (`userId` of the summary, `user` of DNS) are canonicalised like every other user id;
the events' `userId`s are canonicalised by the shared batch rules.
"""

from __future__ import annotations

from contracts import metering_subjects as subjects
from contracts.metering import (
    DnsPlansQuery,
    DnsSummaryQuery,
    DnsUsageParams,
    MeterCreateParams,
    MeterEventBatch,
    MeterGetParams,
    MeterListParams,
    SummaryQuery,
)
from services.gateway.routing import Route

METERING_ROUTES: tuple[Route, ...] = (
    Route("POST", "/billing/meters", subjects.METERING_METER_CREATE, "admin",
          MeterCreateParams, user_field=None),
    Route("GET", "/billing/meters", subjects.METERING_METER_LIST, "admin", MeterListParams,
          source="query", user_field=None),
    # The id comes from the path.
    Route("GET", "/billing/meters/{id}", subjects.METERING_METER_GET, "admin", MeterGetParams,
          source="query", user_field=None),
    Route("POST", "/billing/meter-events", subjects.METERING_EVENTS_RECORD, "admin",
          MeterEventBatch, user_field=None, idempotent=True),
    Route("GET", "/billing/meter-events/summary", subjects.METERING_EVENTS_SUMMARY, "admin",
          SummaryQuery, source="query", user_field="userId"),
    Route("POST", "/dns/usage", subjects.METERING_DNS_USAGE_RECORD, "admin", DnsUsageParams,
          idempotent=True),
    Route("GET", "/dns/usage/summary", subjects.METERING_DNS_USAGE_SUMMARY, "admin",
          DnsSummaryQuery, source="query"),
    Route("GET", "/dns/plans", subjects.METERING_DNS_PLAN_LIST, "public", DnsPlansQuery,
          source="query", user_field=None),
)
