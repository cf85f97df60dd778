"""Request/reply subjects: `billing.<service>.<resource>.<action>`; queue group = service."""

# ledger
LEDGER_BALANCE_GET = "billing.ledger.balance.get"
LEDGER_BALANCE_ALL = "billing.ledger.balance.all"
LEDGER_DEPOSIT_CREATE = "billing.ledger.deposit.create"
LEDGER_USAGE_RECORD = "billing.ledger.usage.record"
LEDGER_USAGE_LIST = "billing.ledger.usage.list"
LEDGER_TRANSACTION_LIST = "billing.ledger.transaction.list"
LEDGER_WITHDRAW_CREATE = "billing.ledger.withdraw.create"
LEDGER_REFUND_CREATE = "billing.ledger.refund.create"
LEDGER_STARTER_CREDIT_CLAIM = "billing.ledger.starter_credit.claim"
LEDGER_TIER_GET = "billing.ledger.tier.get"
LEDGER_TIER_CHECK = "billing.ledger.tier.check"
LEDGER_STATUS_GET = "billing.ledger.status.get"

# payments (not built yet: callers treat "no responders" as "no payment method")
PAYMENTS_PAYMENT_METHOD_EXISTS = "billing.payments.payment_method.exists"

# health: every service answers on its own ping subject
def ping(service: str) -> str:
    return f"billing.{service}.health.ping"
