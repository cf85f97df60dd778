"""The route tables: REST (method, path) and ZAP methods → bus subjects, with each route's
access class, parameter struct and where its target user is named."""

from __future__ import annotations

from dataclasses import dataclass

from contracts import subjects
from contracts.ledger import (
    BalanceQuery,
    DepositParams,
    TransactionListParams,
    UsageListParams,
    UsageRecordParams,
)

# Access classes (conventions §10.3) and the roles each admits. `mint` is decided by the
# caller's `may_mint` (mint policy), not by role alone.
ROLES_ALLOWED = {
    "public": frozenset({"platform", "admin", "user", "publishable"}),
    "user": frozenset({"platform", "admin", "user"}),
    "admin": frozenset({"platform", "admin"}),
    "platform": frozenset({"platform"}),
}


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str  # below the prefix, aiohttp syntax for path parameters
    subject: str
    access: str  # public | user | admin | mint | platform
    params: type  # the msgspec struct the body or query decodes into
    source: str = "body"  # "body" or "query"
    user_field: str | None = "user"  # the param naming the target user, scoped for role user
    idempotent: bool = False  # honours Idempotency-Key
    other_user_message: str = "cannot access another user's account"

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


ROUTES: tuple[Route, ...] = (
    Route("GET", "/billing/balance", subjects.LEDGER_BALANCE_GET, "admin", BalanceQuery,
          source="query"),
    Route("GET", "/billing/balance/all", subjects.LEDGER_BALANCE_ALL, "admin", BalanceQuery,
          source="query"),
    Route("POST", "/billing/deposit", subjects.LEDGER_DEPOSIT_CREATE, "mint", DepositParams,
          idempotent=True),
    Route("POST", "/billing/usage", subjects.LEDGER_USAGE_RECORD, "admin", UsageRecordParams,
          idempotent=True),
    Route("GET", "/billing/usage", subjects.LEDGER_USAGE_LIST, "admin", UsageListParams,
          source="query"),
    Route("GET", "/billing/transactions", subjects.LEDGER_TRANSACTION_LIST, "user",
          TransactionListParams, source="query"),
)

_BY_NAME = {r.name: r for r in ROUTES}

# ZAP shares the REST routes' subjects, access and params: one implementation.
ZAP_METHODS: dict[str, Route] = {
    "billing.getBalance": _BY_NAME["GET /billing/balance"],
    "billing.getBalanceAll": _BY_NAME["GET /billing/balance/all"],
    "billing.getUsage": _BY_NAME["GET /billing/usage"],
    "billing.recordUsage": _BY_NAME["POST /billing/usage"],
    "billing.deposit": _BY_NAME["POST /billing/deposit"],
}

ZAP_ROUTE = Route("POST", "/billing/zap", "", "admin", dict, user_field=None)
