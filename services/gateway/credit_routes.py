"""Credit-grant routes (ledger.md §3.13–§3.17).

Create and void mint or take away credit: class `mint`, honouring Idempotency-Key. The reads
are class `user`: an end user is pinned to their own `userId`. Burn and preview have no
route: invoicing calls them on the bus.
"""

from __future__ import annotations

from contracts import credit_subjects as subjects
from contracts.credits import (
    CreditBalanceQuery,
    CreditBreakdownQuery,
    CreditGrantCreateParams,
    CreditGrantListParams,
    CreditGrantVoidParams,
)
from services.gateway.routing import Route

CREDIT_ROUTES: tuple[Route, ...] = (
    Route("POST", "/billing/credit-grants", subjects.LEDGER_CREDIT_GRANT_CREATE, "mint",
          CreditGrantCreateParams, user_field="userId", idempotent=True),
    # No body: the id comes from the path (a query-sourced struct ignores whatever body
    # a client sends).
    Route("POST", "/billing/credit-grants/{id}/void", subjects.LEDGER_CREDIT_GRANT_VOID,
          "mint", CreditGrantVoidParams, source="query", user_field=None, idempotent=True),
    Route("GET", "/billing/credit-grants", subjects.LEDGER_CREDIT_GRANT_LIST, "user",
          CreditGrantListParams, source="query", user_field="userId"),
    Route("GET", "/billing/credit-balance", subjects.LEDGER_CREDIT_BALANCE_GET, "user",
          CreditBalanceQuery, source="query", user_field="userId"),
    Route("GET", "/billing/credit-balance/breakdown", subjects.LEDGER_CREDIT_BALANCE_BREAKDOWN,
          "user", CreditBreakdownQuery, source="query", user_field="userId"),
)
