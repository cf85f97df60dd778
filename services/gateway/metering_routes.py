"""Metering routes (metering-invoicing.md §3, ledger.md §3.22–§3.24).

Meters, meter events, summaries and DNS usage are class `admin`; the DNS plans are `public`
(any valid credential, publicly cacheable). `POST /billing/meter-events` with
`Prefer: respond-async` is taken by `services.gateway.ingest` (its route's kind is `ingest`).
User ids (`userId` of the summary, `user` of DNS) are canonicalised like every other user id;
the events' `userId`s are canonicalised by the shared batch rules.
"""

from __future__ import annotations

from contracts import metering
from services.gateway.routing import Route

METERING_ROUTES: tuple[Route, ...] = (
    Route("POST", "/billing/meters", metering.METER_CREATE, "admin", user_field=None,
          status=201),
    Route("GET", "/billing/meters", metering.METER_LIST, "admin", source="query",
          user_field=None),
    # The id comes from the path.
    Route("GET", "/billing/meters/{id}", metering.METER_GET, "admin", source="query",
          user_field=None),
    Route("POST", "/billing/meter-events", metering.EVENTS_RECORD, "admin", user_field=None,
          idempotent=True, status=201, kind="ingest"),
    Route("GET", "/billing/meter-events/summary", metering.EVENTS_SUMMARY, "admin",
          source="query", user_field="userId"),
    Route("POST", "/dns/usage", metering.DNS_USAGE_RECORD, "admin", idempotent=True,
          status=201),
    Route("GET", "/dns/usage/summary", metering.DNS_USAGE_SUMMARY, "admin", source="query"),
    Route("GET", "/dns/plans", metering.DNS_PLAN_LIST, "public", source="query",
          user_field=None),
)
