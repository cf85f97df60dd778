"""Spend alert routes (ledger.md §3.18–§3.21), `user` class (conventions §10.3).

An end user is pinned to themselves through `user` (list) and `userId` (create); alerts
reached by id are checked against the caller by the ledger (someone else's → 404)."""

from __future__ import annotations

from contracts import alerts
from services.gateway.routing import Route

ALERT_ROUTES: tuple[Route, ...] = (
    Route("GET", "/billing/spend-alerts", alerts.SPEND_ALERT_LIST, "user", source="query"),
    Route("POST", "/billing/spend-alerts", alerts.SPEND_ALERT_CREATE, "user",
          user_field="userId", status=201),
    Route("PATCH", "/billing/spend-alerts/{id}", alerts.SPEND_ALERT_UPDATE, "user",
          user_field=None),
    # No body to read: the id comes from the path.
    Route("DELETE", "/billing/spend-alerts/{id}", alerts.SPEND_ALERT_DELETE, "user",
          source="query", user_field=None, status=204),
)
