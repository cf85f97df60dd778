"""The route tables: REST (method, path) and ZAP methods → bus subjects. Each area keeps
its routes beside its own (`credit_routes`, `alert_routes`, …); they are joined here."""

from __future__ import annotations

from contracts import subjects
from contracts.ledger import (
    BalanceQuery,
    DepositParams,
    RefundParams,
    StarterCreditParams,
    StatusQuery,
    TierQuery,
    TransactionListParams,
    UsageListParams,
    UsageRecordParams,
    WithdrawParams,
)
from services.gateway.alert_routes import ALERT_ROUTES
from services.gateway.credit_routes import CREDIT_ROUTES
from services.gateway.metering_routes import METERING_ROUTES
from services.gateway.routing import Route

LEDGER_ROUTES: tuple[Route, ...] = (
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
    Route("POST", "/billing/withdraw", subjects.LEDGER_WITHDRAW_CREATE, "user", WithdrawParams,
          idempotent=True, other_user_message="cannot withdraw from another user's account"),
    Route("POST", "/billing/refund", subjects.LEDGER_REFUND_CREATE, "mint", RefundParams,
          idempotent=True),
    Route("POST", "/billing/credit", subjects.LEDGER_STARTER_CREDIT_CLAIM, "user",
          StarterCreditParams, idempotent=True),
    Route("GET", "/billing/tier", subjects.LEDGER_TIER_GET, "admin", TierQuery, source="query"),
    Route("GET", "/billing/tier-check", subjects.LEDGER_TIER_CHECK, "admin", TierQuery,
          source="query"),
    Route("GET", "/billing/status", subjects.LEDGER_STATUS_GET, "user", StatusQuery,
          source="query"),
)

ROUTES = LEDGER_ROUTES + CREDIT_ROUTES + ALERT_ROUTES + METERING_ROUTES

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
