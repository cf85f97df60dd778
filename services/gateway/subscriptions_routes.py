"""Subscriptions routes (subscriptions.md §0.1, §0.2, §3.1, §3.4).

The plans are `public` (any credential, publishable keys too; the pipeline adds the public
cache headers to successes). Subscriptions are `admin`; creating or upgrading to a paid plan
also needs the right to mint, which the service checks (§3.1.1 step 5). Changes honour
`Idempotency-Key`. Cancel's body is optional: one that does not decode means "at the
period's end" (§3.1.5); reactivate takes no body."""

from __future__ import annotations

from contracts import subscriptions
from services.gateway.routing import Route

SUBSCRIPTIONS_ROUTES: tuple[Route, ...] = (
    Route("GET", "/billing/plans", subscriptions.PLAN_LIST, "public", source="query",
          user_field=None),
    Route("GET", "/billing/plans/{id}", subscriptions.PLAN_GET, "public", source="query",
          user_field=None),
    Route("POST", "/billing/subscriptions", subscriptions.SUBSCRIPTION_CREATE, "admin",
          user_field="userId", idempotent=True, status=201),
    Route("GET", "/billing/subscriptions", subscriptions.SUBSCRIPTION_LIST, "admin",
          source="query", user_field="userId"),
    Route("GET", "/billing/subscriptions/{id}", subscriptions.SUBSCRIPTION_GET, "admin",
          source="query", user_field=None),
    Route("PATCH", "/billing/subscriptions/{id}", subscriptions.SUBSCRIPTION_UPDATE, "admin",
          user_field=None, idempotent=True),
    Route("POST", "/billing/subscriptions/{id}/cancel", subscriptions.SUBSCRIPTION_CANCEL,
          "admin", source="optional", user_field=None, idempotent=True),
    Route("POST", "/billing/subscriptions/{id}/reactivate",
          subscriptions.SUBSCRIPTION_REACTIVATE, "admin", source="optional", user_field=None,
          idempotent=True),
)
