"""Spend alert routes (ledger.md §3.18–§3.21), `user` class (conventions §10.3).

An end user is pinned to themselves through `user` (list) and `userId` (create); alerts
reached by id are checked against the caller by the ledger (someone else's → 404)."""

from __future__ import annotations

from contracts.alert_subjects import (
    LEDGER_SPEND_ALERT_CREATE,
    LEDGER_SPEND_ALERT_DELETE,
    LEDGER_SPEND_ALERT_LIST,
    LEDGER_SPEND_ALERT_UPDATE,
)
from contracts.alerts import (
    SpendAlertCreateParams,
    SpendAlertDeleteParams,
    SpendAlertListParams,
    SpendAlertUpdateParams,
)
from services.gateway.routing import Route

ALERT_ROUTES: tuple[Route, ...] = (
    Route("GET", "/billing/spend-alerts", LEDGER_SPEND_ALERT_LIST, "user",
          SpendAlertListParams, source="query"),
    Route("POST", "/billing/spend-alerts", LEDGER_SPEND_ALERT_CREATE, "user",
          SpendAlertCreateParams, user_field="userId"),
    Route("PATCH", "/billing/spend-alerts/{id}", LEDGER_SPEND_ALERT_UPDATE, "user",
          SpendAlertUpdateParams, user_field=None),
    # No body to read: the id comes from the path.
    Route("DELETE", "/billing/spend-alerts/{id}", LEDGER_SPEND_ALERT_DELETE, "user",
          SpendAlertDeleteParams, source="query", user_field=None),
)
