"""Credit-grant subjects (to be merged into contracts/subjects.py)."""

LEDGER_CREDIT_GRANT_CREATE = "billing.ledger.credit_grant.create"
LEDGER_CREDIT_GRANT_VOID = "billing.ledger.credit_grant.void"
LEDGER_CREDIT_GRANT_LIST = "billing.ledger.credit_grant.list"
LEDGER_CREDIT_BALANCE_GET = "billing.ledger.credit_balance.get"
LEDGER_CREDIT_BALANCE_BREAKDOWN = "billing.ledger.credit_balance.breakdown"
# Bus only (no HTTP route): used by invoicing to apply credits to an amount due.
LEDGER_CREDIT_GRANT_BURN = "billing.ledger.credit_grant.burn"
LEDGER_CREDIT_GRANT_PREVIEW = "billing.ledger.credit_grant.preview"
