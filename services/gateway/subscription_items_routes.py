"""Subscription item and schedule routes (subscriptions.md §3.2, §3.3): every one `admin`
(§0.2). Item writes honour Idempotency-Key (§7 R3), and so do schedule writes (accepted,
R3). Schedules name their customer in `customerId`, canonicalised like every user id;
cancel and release take no body."""

from __future__ import annotations

from contracts import subscription_items as items
from contracts import subscription_schedules as schedules
from services.gateway.routing import Route

ITEMS_ROUTES: tuple[Route, ...] = (
    Route("POST", "/billing/subscription-items", items.SUBSCRIPTION_ITEM_CREATE, "admin",
          user_field=None, idempotent=True, status=201),
    Route("GET", "/billing/subscription-items", items.SUBSCRIPTION_ITEM_LIST, "admin",
          source="query", user_field=None),
    Route("GET", "/billing/subscription-items/{id}", items.SUBSCRIPTION_ITEM_GET, "admin",
          source="query", user_field=None),
    Route("PATCH", "/billing/subscription-items/{id}", items.SUBSCRIPTION_ITEM_UPDATE,
          "admin", user_field=None, idempotent=True),
    Route("DELETE", "/billing/subscription-items/{id}", items.SUBSCRIPTION_ITEM_DELETE,
          "admin", source="query", user_field=None, idempotent=True),
    # ---- schedules ----
    Route("POST", "/billing/subscription-schedules", schedules.SCHEDULE_CREATE, "admin",
          user_field="customerId", idempotent=True, status=201),
    Route("GET", "/billing/subscription-schedules", schedules.SCHEDULE_LIST, "admin",
          source="query", user_field="customerId"),
    Route("GET", "/billing/subscription-schedules/{id}", schedules.SCHEDULE_GET, "admin",
          source="query", user_field=None),
    Route("PATCH", "/billing/subscription-schedules/{id}", schedules.SCHEDULE_UPDATE,
          "admin", user_field=None, idempotent=True),
    Route("POST", "/billing/subscription-schedules/{id}/cancel", schedules.SCHEDULE_CANCEL,
          "admin", source="optional", user_field=None, idempotent=True),
    Route("POST", "/billing/subscription-schedules/{id}/release", schedules.SCHEDULE_RELEASE,
          "admin", source="optional", user_field=None, idempotent=True),
)
