"""Journal messages: the general double-entry ledger (ledger.md §2.9) that the payments
service posts to. Accounts, multi-leg entries, holds and per-account balances; bus only, no
HTTP routes (platform-internal).

Amounts are integers in the currency's minor unit. A posting's `amount` is signed: positive
is a debit, negative a credit; the postings of an entry sum to zero in each currency.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from contracts import limits
from contracts.common import Int64, Metadata, Params
from contracts.endpoint import Endpoint
from contracts.limits import Code, Id, Name, Notes, UserId

Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]  # RFC 3339 with an offset

# ---- requests -------------------------------------------------------------------------


class JournalAccountCreateParams(Params):
    name: Name = ""
    type: Code = ""  # asset | liability | equity | revenue | expense
    currency: Code = ""  # default usd
    normalBalance: Code = ""  # debit | credit; default from the type
    metadata: limits.Metadata | None = None

    def __post_init__(self) -> None:
        limits.require_small_json("metadata", self.metadata)


class JournalAccountEnsureParams(Params):
    """Find the account by name, else create it (an existing account is returned as is)."""

    name: Name = ""
    type: Code = ""
    currency: Code = ""


class JournalAccountGetParams(Params):
    id: Id = ""  # by id, or
    name: Name = ""  # by name


class JournalPostingParams(Params):
    accountId: Id = ""
    amount: Int64 = 0  # positive = debit, negative = credit
    currency: Code = ""  # default usd


class JournalEntryPostParams(Params):
    # The same key with the same entry replays the stored entry; with another entry it is
    # refused (409). Empty: no deduplication.
    idempotencyKey: str = ""  # up to 255 characters (checked by the journal)
    description: Notes = ""
    paymentIntentId: Id = ""
    refundId: Id = ""
    payoutId: Id = ""
    transferId: Id = ""
    disputeId: Id = ""
    metadata: limits.Metadata | None = None
    postings: list[JournalPostingParams] = []

    def __post_init__(self) -> None:
        limits.require_small_json("metadata", self.metadata)


class JournalEntryGetParams(Params):
    id: Id = ""


class JournalEntryListParams(Params):
    accountId: Id = ""  # entries with a posting on this account
    paymentIntentId: Id = ""
    refundId: Id = ""
    payoutId: Id = ""
    transferId: Id = ""
    disputeId: Id = ""
    createdAfter: Timestamp | None = None  # exclusive
    createdBefore: Timestamp | None = None  # exclusive
    limit: int = 0  # ≤ 0: the default; capped (limits.JOURNAL_ENTRIES_PAGE)
    offset: int = 0

    def __post_init__(self) -> None:
        limits.require_instant("createdAfter", self.createdAfter)
        limits.require_instant("createdBefore", self.createdBefore)


class JournalBalanceGetParams(Params):
    accountId: Id = ""
    currency: Code = ""  # default usd


class JournalHoldCreateParams(Params):
    accountId: Id = ""
    amount: Int64 = 0
    currency: Code = ""  # default usd
    paymentIntentId: Id = ""
    expiresAt: Timestamp | None = None  # must be in the future; default 7 days from now

    def __post_init__(self) -> None:
        limits.require_instant("expiresAt", self.expiresAt)


class JournalHoldCaptureParams(Params):
    id: Id = ""
    amount: Int64 = 0  # <= 0 captures the whole hold


class JournalHoldIdParams(Params):
    """Void or get a hold."""

    id: Id = ""


class JournalPaymentParams(Params):
    paymentIntentId: Id = ""
    amount: Int64 = 0
    currency: Code = ""
    customerId: UserId = ""
    fees: Int64 = 0


class JournalRefundParams(Params):
    refundId: Id = ""
    amount: Int64 = 0
    currency: Code = ""
    customerId: UserId = ""


class JournalPayoutParams(Params):
    payoutId: Id = ""
    amount: Int64 = 0
    currency: Code = ""
    merchantId: UserId = ""


class JournalDisputeParams(Params):
    disputeId: Id = ""
    amount: Int64 = 0
    currency: Code = ""
    customerId: UserId = ""
    # "" opens the dispute (the amount is held from the customer); "won" gives it back,
    # "lost" writes it off. Each is posted once per dispute.
    outcome: Code = ""


# ---- results --------------------------------------------------------------------------


class JournalAccount(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    type: str
    currency: str
    normalBalance: str
    createdAt: str
    metadata: Metadata | None = None


class JournalPosting(msgspec.Struct):
    id: str
    entryId: str
    accountId: str
    amount: int
    currency: str
    createdAt: str


class JournalEntry(msgspec.Struct, omit_defaults=True):
    id: str
    description: str
    postings: list[JournalPosting]
    createdAt: str
    idempotencyKey: str | None = None
    paymentIntentId: str | None = None
    refundId: str | None = None
    payoutId: str | None = None
    transferId: str | None = None
    disputeId: str | None = None
    metadata: Metadata | None = None
    # True when the idempotency key had already posted this very entry: nothing new was
    # written, the stored entry is returned (reply status 200 instead of 201).
    replayed: bool = False


class JournalEntryList(msgspec.Struct):
    entries: list[JournalEntry]  # oldest first (created_at, id)
    count: int


class JournalBalance(msgspec.Struct, omit_defaults=True):
    """Balances are signed like postings (debit positive). `heldBalance` is a magnitude and
    `availableBalance` is `postedBalance` with the holds taken off in the account's normal
    direction: posted − held for debit-normal accounts, posted + held for credit-normal
    ones (a customer owed 10000 with 3000 held has available −7000)."""

    accountId: str
    currency: str
    postedBalance: int
    pendingBalance: int  # always 0 (reserved, as in the reference)
    heldBalance: int
    availableBalance: int
    updatedAt: str | None = None  # omitted before any activity


class JournalHold(msgspec.Struct, omit_defaults=True):
    id: str
    accountId: str
    amount: int
    currency: str
    status: str  # pending | captured | voided | expired
    expiresAt: str
    createdAt: str
    updatedAt: str
    paymentIntentId: str | None = None
    capturedEntryId: str | None = None
    capturedAmount: int | None = None


class JournalHoldCaptured(msgspec.Struct):
    hold: JournalHold
    entry: JournalEntry


# ---- endpoints -----------------------------------------------------
# Bus only, no HTTP routes: callers are platform services (payments) and operators.

ACCOUNT_CREATE = Endpoint("billing.ledger.journal.account.create", JournalAccountCreateParams,
                          JournalAccount)
ACCOUNT_ENSURE = Endpoint("billing.ledger.journal.account.ensure", JournalAccountEnsureParams,
                          JournalAccount)
ACCOUNT_GET = Endpoint("billing.ledger.journal.account.get", JournalAccountGetParams,
                       JournalAccount)
BALANCE_GET = Endpoint("billing.ledger.journal.balance.get", JournalBalanceGetParams,
                       JournalBalance)

ENTRY_POST = Endpoint("billing.ledger.journal.entry.post", JournalEntryPostParams,
                      JournalEntry)
ENTRY_GET = Endpoint("billing.ledger.journal.entry.get", JournalEntryGetParams, JournalEntry)
ENTRY_LIST = Endpoint("billing.ledger.journal.entry.list", JournalEntryListParams,
                      JournalEntryList)

HOLD_CREATE = Endpoint("billing.ledger.journal.hold.create", JournalHoldCreateParams,
                       JournalHold)
HOLD_CAPTURE = Endpoint("billing.ledger.journal.hold.capture", JournalHoldCaptureParams,
                        JournalHoldCaptured)
HOLD_VOID = Endpoint("billing.ledger.journal.hold.void", JournalHoldIdParams, JournalHold)
HOLD_GET = Endpoint("billing.ledger.journal.hold.get", JournalHoldIdParams, JournalHold)

# High-level operations: each posts one entry under a derived idempotency key.
PAYMENT_RECORD = Endpoint("billing.ledger.journal.payment.record", JournalPaymentParams,
                          JournalEntry)  # payment:<pi>
REFUND_RECORD = Endpoint("billing.ledger.journal.refund.record", JournalRefundParams,
                         JournalEntry)  # refund:<id>
PAYOUT_RECORD = Endpoint("billing.ledger.journal.payout.record", JournalPayoutParams,
                         JournalEntry)  # payout:<id>
DISPUTE_RECORD = Endpoint("billing.ledger.journal.dispute.record", JournalDisputeParams,
                          JournalEntry)  # dispute:<id>
