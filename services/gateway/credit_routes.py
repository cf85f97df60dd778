"""Credit-grant routes (ledger.md §3.13–§3.17).

Create and void mint or take away credit: class `mint`, honouring Idempotency-Key. The reads
are class `user`: an end user is pinned to their own `userId`. Burn and preview have no
route: invoicing calls them on the bus.
"""

from __future__ import annotations

from contracts import credits
from services.gateway.routing import Route

CREDIT_ROUTES: tuple[Route, ...] = (
    Route("POST", "/billing/credit-grants", credits.CREDIT_GRANT_CREATE, "mint",
          user_field="userId", idempotent=True, status=201),
    # No body: the id comes from the path (a query-sourced struct ignores whatever body
    # a client sends).
    Route("POST", "/billing/credit-grants/{id}/void", credits.CREDIT_GRANT_VOID, "mint",
          source="query", user_field=None, idempotent=True),
    Route("GET", "/billing/credit-grants", credits.CREDIT_GRANT_LIST, "user", source="query",
          user_field="userId"),
    Route("GET", "/billing/credit-balance", credits.CREDIT_BALANCE_GET, "user",
          source="query", user_field="userId"),
    Route("GET", "/billing/credit-balance/breakdown", credits.CREDIT_BALANCE_BREAKDOWN,
          "user", source="query", user_field="userId"),
)
