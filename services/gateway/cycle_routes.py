"""Billing-cycle routes (metering-invoicing.md §8.1; subscriptions.md §3.1.7).

`cycle/run` and `cycle/run-user` collect money on the customers' behalf: the `mint` class
(conventions §10.3); `cycle/run-all` runs every organization: `platform` only. `run` and
`run-all` take no body; `run-user` names its user in `userId`. Renew takes no body and honours
`Idempotency-Key` (renewing twice bills once anyway: one invoice per period)."""

from __future__ import annotations

from contracts import cycle
from services.gateway.routing import Route

CYCLE_ROUTES: tuple[Route, ...] = (
    Route("POST", "/billing/cycle/run", cycle.CYCLE_RUN, "mint", source="optional",
          user_field=None),
    Route("POST", "/billing/cycle/run-user", cycle.CYCLE_RUN_USER, "mint", user_field="userId"),
    Route("POST", "/billing/cycle/run-all", cycle.CYCLE_RUN_ALL, "platform", source="optional",
          user_field=None),
    Route("POST", "/billing/subscriptions/{id}/renew", cycle.SUBSCRIPTION_RENEW, "admin",
          source="optional", user_field=None, idempotent=True),
)
