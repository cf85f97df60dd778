"""Ledger messages: balances, deposits and usage debits.

Field names are the HTTP API's (camelCase), so a params struct is both the REST body /
ZAP params and the bus payload, and a result struct is the JSON the client reads.
"""

from __future__ import annotations

import msgspec

from contracts import limits
from contracts.common import Int64, Metadata, Params
from contracts.endpoint import Endpoint
from contracts.limits import Code, Id, Name, Notes, Tags, UserId

# ---- requests -------------------------------------------------------------------------


class BalanceQuery(Params):
    user: UserId = ""
    currency: Code = ""


class DepositParams(Params):
    user: UserId = ""
    currency: Code = ""
    amount: Int64 = 0
    notes: Notes = ""
    tags: Tags = ""
    expiresIn: Int64 = 0  # days; <= 0 means no expiry
    metadata: limits.Metadata | None = None

    def __post_init__(self) -> None:
        limits.require_small_json("metadata", self.metadata)


class TopupCreditParams(Params):
    """Money a customer paid through payments, credited once per top-up (bus only: the
    payments service sends it, from its outbox of ledger postings)."""

    topupId: Id = ""  # the natural key: a top-up is credited once
    user: UserId = ""
    currency: Code = ""
    amount: Int64 = 0
    provider: Code = ""  # stripe | square | offline
    providerRef: Id = ""  # the provider's payment id
    paymentIntentId: Id = ""


class TopupReversalParams(Params):
    """A refunded top-up's credit taken back from the balance before the provider refunds
    it (only what is still available), or given back (`restore`) when the provider refused
    the refund. Once each per refund (bus only: payments sends it)."""

    refundId: Id = ""  # the natural key
    user: UserId = ""
    currency: Code = ""
    amount: Int64 = 0
    restore: bool = False


class UsageRecordParams(Params):
    user: UserId = ""
    currency: Code = ""
    amount: Int64 = 0
    model: Name = ""
    provider: Name = ""
    requestId: Id = ""
    status: Code = ""
    clientIp: Code = ""
    promptTokens: Int64 = 0
    completionTokens: Int64 = 0
    totalTokens: Int64 = 0
    premium: bool = False
    stream: bool = False


class UsageListParams(Params):
    user: UserId = ""
    currency: Code = ""
    limit: int = 0  # ≤ 0: the default; capped (limits.USAGE_PAGE)
    offset: int = 0


class WithdrawParams(Params):
    user: UserId = ""
    currency: Code = ""
    amount: Int64 = 0
    notes: Notes = ""
    tags: Tags = ""


class RefundParams(Params):
    user: UserId = ""
    currency: Code = ""
    amount: Int64 = 0
    originalTransactionId: Id = ""
    notes: Notes = ""


class StarterCreditParams(Params):
    user: UserId = ""


class TierQuery(Params):
    user: UserId = ""
    tier: Code = ""  # honoured only for callers allowed to mint (a tier is worth money)
    model: Name = ""


class StatusQuery(Params):
    user: UserId = ""
    tier: Code = ""


class TransactionListParams(Params):
    user: UserId = ""
    currency: Code = ""
    limit: int = 0  # ≤ 0: the default; capped (limits.TRANSACTIONS_PAGE)
    offset: int = 0


# ---- results --------------------------------------------------------------------------


class Balance(msgspec.Struct):
    user: str
    currency: str
    balance: int
    holds: int
    available: int


class BalanceEntry(msgspec.Struct):
    currency: str
    balance: int
    holds: int
    available: int


class BalanceAll(msgspec.Struct):
    user: str
    balances: list[BalanceEntry]


class DepositResult(msgspec.Struct, omit_defaults=True):
    transactionId: str
    user: str
    amount: int
    currency: str
    type: str
    tags: str  # required, so always emitted (even when empty), as the reference does
    expiresAt: str | None = None  # omitted when the deposit never expires


class TopupCredited(msgspec.Struct):
    transactionId: str
    user: str
    amount: int
    currency: str
    balance: int  # the customer's balance after the credit (holds not subtracted)


class TopupReversed(msgspec.Struct):
    transactionId: str
    user: str
    amount: int
    currency: str
    balance: int  # the customer's balance after it


class WithdrawResult(msgspec.Struct):
    transactionId: str
    user: str
    amount: int
    currency: str
    type: str
    tags: str


class StarterCreditResult(msgspec.Struct):
    transactionId: str
    user: str
    amount: int
    currency: str
    type: str
    tags: str
    expiresAt: str


class RefundResult(msgspec.Struct):
    transactionId: str
    user: str
    amount: int
    currency: str
    type: str
    tags: str
    originalTransactionId: str


class TierConfig(msgspec.Struct):
    name: str
    displayName: str
    maxAgents: int
    unlimitedAgents: bool
    dailyCreditsCents: int
    allowedModels: list[str]


class TierBalance(msgspec.Struct):
    currency: str
    prepaidAvailable: int
    dailyRemaining: int
    effectiveAvailable: int


class TierResult(msgspec.Struct):
    user: str
    tier: TierConfig
    balance: TierBalance


class TierSummary(msgspec.Struct):
    name: str
    displayName: str
    allowedModels: list[str]
    maxAgents: int


class TierCheckResult(msgspec.Struct, omit_defaults=True):
    user: str
    tier: TierSummary
    model: str | None = None
    allowed: bool | None = None


class BillingStatus(msgspec.Struct):
    """The billing gate. `hasPaymentMethod`: what payments' events told the ledger."""

    user: str
    hasPaymentMethod: bool
    creditBalance: int
    tier: str


class UsageResult(msgspec.Struct):
    transactionId: str
    user: str
    amount: int
    currency: str
    type: str


class UsageSkipped(msgspec.Struct):
    user: str
    amount: int
    status: str


class UsageItem(msgspec.Struct):
    transactionId: str
    amount: int
    currency: str
    notes: str
    metadata: Metadata
    createdAt: str


class UsageList(msgspec.Struct):
    user: str
    count: int
    usage: list[UsageItem]


class TransactionItem(msgspec.Struct, omit_defaults=True):
    id: str
    type: str
    amount: int
    currency: str
    createdAt: str
    tags: str = ""
    notes: str = ""
    metadata: Metadata | None = None
    expiresAt: str | None = None


class TransactionList(msgspec.Struct):
    transactions: list[TransactionItem]
    count: int  # all matching transactions, before paging
    user: str


# ---- endpoints -----------------------------------------------------

BALANCE_GET = Endpoint("billing.ledger.balance.get", BalanceQuery, Balance)
BALANCE_ALL = Endpoint("billing.ledger.balance.all", BalanceQuery, BalanceAll)
DEPOSIT_CREATE = Endpoint("billing.ledger.deposit.create", DepositParams, DepositResult)
TOPUP_CREDIT = Endpoint("billing.ledger.topup.credit", TopupCreditParams, TopupCredited)
TOPUP_REVERSE = Endpoint("billing.ledger.topup.reverse", TopupReversalParams, TopupReversed)
# A debit answers UsageResult; a zero amount answers UsageSkipped (same fields but status).
USAGE_RECORD = Endpoint("billing.ledger.usage.record", UsageRecordParams, UsageResult)
USAGE_LIST = Endpoint("billing.ledger.usage.list", UsageListParams, UsageList)
TRANSACTION_LIST = Endpoint("billing.ledger.transaction.list", TransactionListParams,
                            TransactionList)
WITHDRAW_CREATE = Endpoint("billing.ledger.withdraw.create", WithdrawParams, WithdrawResult)
# Bus-only (invoicing's wallet leg): the amount, or what the wallet has available when
# that is less (402 when nothing is); under the request's key, which it requires.
WITHDRAW_AVAILABLE = Endpoint("billing.ledger.withdraw.available", WithdrawParams,
                              WithdrawResult)
REFUND_CREATE = Endpoint("billing.ledger.refund.create", RefundParams, RefundResult)
STARTER_CREDIT_CLAIM = Endpoint("billing.ledger.starter_credit.claim", StarterCreditParams,
                                StarterCreditResult)
TIER_GET = Endpoint("billing.ledger.tier.get", TierQuery, TierResult)
TIER_CHECK = Endpoint("billing.ledger.tier.check", TierQuery, TierCheckResult)
STATUS_GET = Endpoint("billing.ledger.status.get", StatusQuery, BillingStatus)
