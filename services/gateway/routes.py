"""The route tables: REST (method, path) and ZAP methods → endpoints. Each area keeps its
routes beside its own (`credit_routes`, `alert_routes`, …); they are joined here."""

from __future__ import annotations

from contracts import ledger
from services.gateway.account_routes import ACCOUNT_ROUTES
from services.gateway.alert_routes import ALERT_ROUTES
from services.gateway.credit_routes import CREDIT_ROUTES
from services.gateway.cycle_routes import CYCLE_ROUTES
from services.gateway.gift_routes import GIFT_ROUTES
from services.gateway.invoicing_routes import INVOICING_ROUTES
from services.gateway.metering_routes import METERING_ROUTES
from services.gateway.payments_routes import PAYMENT_ROUTES
from services.gateway.portal_routes import PORTAL_ROUTES
from services.gateway.routing import Route
from services.gateway.subscription_items_routes import ITEMS_ROUTES
from services.gateway.subscriptions_routes import SUBSCRIPTIONS_ROUTES

LEDGER_ROUTES: tuple[Route, ...] = (
    Route("GET", "/billing/balance", ledger.BALANCE_GET, "admin", source="query"),
    Route("GET", "/billing/balance/all", ledger.BALANCE_ALL, "admin", source="query"),
    Route("POST", "/billing/deposit", ledger.DEPOSIT_CREATE, "mint", idempotent=True,
          status=201),
    Route("POST", "/billing/usage", ledger.USAGE_RECORD, "admin", idempotent=True,
          status=201),
    Route("GET", "/billing/usage", ledger.USAGE_LIST, "admin", source="query"),
    Route("GET", "/billing/transactions", ledger.TRANSACTION_LIST, "user", source="query"),
    Route("POST", "/billing/withdraw", ledger.WITHDRAW_CREATE, "user", idempotent=True,
          status=201, other_user_message="cannot withdraw from another user's account"),
    Route("POST", "/billing/refund", ledger.REFUND_CREATE, "mint", idempotent=True,
          status=201),
    Route("POST", "/billing/credit", ledger.STARTER_CREDIT_CLAIM, "user", idempotent=True,
          status=201),
    Route("GET", "/billing/tier", ledger.TIER_GET, "admin", source="query"),
    Route("GET", "/billing/tier-check", ledger.TIER_CHECK, "admin", source="query"),
    Route("GET", "/billing/status", ledger.STATUS_GET, "user", source="query"),
)

ROUTES = (LEDGER_ROUTES + CREDIT_ROUTES + ALERT_ROUTES + METERING_ROUTES + INVOICING_ROUTES
          + PAYMENT_ROUTES + SUBSCRIPTIONS_ROUTES + ITEMS_ROUTES + CYCLE_ROUTES
          + GIFT_ROUTES + ACCOUNT_ROUTES + PORTAL_ROUTES)

_BY_NAME = {r.name: r for r in ROUTES}

# ZAP shares the REST routes' endpoints, access and params: one implementation.
ZAP_METHODS: dict[str, Route] = {
    "billing.getBalance": _BY_NAME["GET /billing/balance"],
    "billing.getBalanceAll": _BY_NAME["GET /billing/balance/all"],
    "billing.getUsage": _BY_NAME["GET /billing/usage"],
    "billing.recordUsage": _BY_NAME["POST /billing/usage"],
    "billing.deposit": _BY_NAME["POST /billing/deposit"],
}

ZAP_ROUTE = Route("POST", "/billing/zap", None, "admin", user_field=None)
