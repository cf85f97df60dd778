"""Journal subjects (the double-entry ledger, ledger.md §2.9). Bus only, no HTTP routes:
callers are platform services (payments) and operators. To be merged into
contracts/subjects.py."""

JOURNAL_ACCOUNT_CREATE = "billing.ledger.journal.account.create"
JOURNAL_ACCOUNT_ENSURE = "billing.ledger.journal.account.ensure"
JOURNAL_ACCOUNT_GET = "billing.ledger.journal.account.get"
JOURNAL_BALANCE_GET = "billing.ledger.journal.balance.get"

JOURNAL_ENTRY_POST = "billing.ledger.journal.entry.post"
JOURNAL_ENTRY_GET = "billing.ledger.journal.entry.get"
JOURNAL_ENTRY_LIST = "billing.ledger.journal.entry.list"

JOURNAL_HOLD_CREATE = "billing.ledger.journal.hold.create"
JOURNAL_HOLD_CAPTURE = "billing.ledger.journal.hold.capture"
JOURNAL_HOLD_VOID = "billing.ledger.journal.hold.void"
JOURNAL_HOLD_GET = "billing.ledger.journal.hold.get"

# High-level operations: each posts one entry under a derived idempotency key.
JOURNAL_PAYMENT_RECORD = "billing.ledger.journal.payment.record"  # payment:<pi>
JOURNAL_REFUND_RECORD = "billing.ledger.journal.refund.record"  # refund:<id>
JOURNAL_PAYOUT_RECORD = "billing.ledger.journal.payout.record"  # payout:<id>
JOURNAL_DISPUTE_RECORD = "billing.ledger.journal.dispute.record"  # dispute:<id>
