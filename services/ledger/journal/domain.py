"""The journal's rules, free of I/O: the general double-entry ledger of ledger.md §2.9, with
the reference's defects (§9.7, §9.16) fixed.

Accounts have a type and a normal balance; an entry is a set of postings (signed amounts,
debit positive) that sum to zero in every currency; holds reserve part of an account's
balance and end captured, voided or expired. The high-level operations (payment, refund,
payout, dispute) are fixed postings under a derived idempotency key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec

from contracts import Actor
from contracts.errors import Failure, conflict, forbidden, invalid, not_found
from contracts.journal import (
    JournalDisputeParams,
    JournalEntryListParams,
    JournalEntryPostParams,
    JournalHoldCreateParams,
    JournalPaymentParams,
    JournalPayoutParams,
    JournalRefundParams,
)
from contracts.limits import JOURNAL_ENTRIES_PAGE
from contracts.rules import DEFAULT_CURRENCY, currency_of
from services.ledger.balances import domain

# ---- access -------------------------------------------------------------------------------

OPERATOR_ROLES = frozenset({"platform", "admin"})


def require_operator(actor: Actor) -> None:
    """The journal is platform-internal: platform services and operators, never end users
    or publishable keys."""
    if actor.role not in OPERATOR_ROLES:
        raise forbidden()


def require_poster(actor: Actor) -> None:
    """Posting an entry moves money between accounts: operators allowed to mint only."""
    require_operator(actor)
    domain.require_mint(actor)


# ---- accounts -----------------------------------------------------------------------------

ASSET, LIABILITY, EQUITY, REVENUE, EXPENSE = "asset", "liability", "equity", "revenue", "expense"
DEBIT, CREDIT = "debit", "credit"
NORMAL_BALANCE = {ASSET: DEBIT, EXPENSE: DEBIT, LIABILITY: CREDIT, EQUITY: CREDIT,
                  REVENUE: CREDIT}

# Conventional accounts (§2.9).
CASH = "platform:cash"  # asset: money the platform holds
FEES = "platform:fees"  # revenue: fees the platform earned
RESERVES = "platform:reserves"  # liability: money set aside, owed to someone later
DISPUTES_HELD = "platform:disputes_held"  # asset: funds the card network holds in a dispute
CUSTOMER_PREFIX = "customer_balance:"  # liability: what the platform owes a customer
MERCHANT_PREFIX = "merchant_settlement:"  # liability: what the platform owes a merchant


def customer_account(customer_id: str) -> str:
    return CUSTOMER_PREFIX + customer_id


def merchant_account(merchant_id: str) -> str:
    return MERCHANT_PREFIX + merchant_id


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    type: str
    currency: str
    normal_balance: str
    metadata: dict[str, Any] | None = None
    created_at: datetime | None = None

    @property
    def credit_normal(self) -> bool:
        return self.normal_balance == CREDIT

    @property
    def customer_facing(self) -> bool:
        """A balance the platform owes a customer or merchant: holds on it must be covered."""
        return self.credit_normal and self.name.startswith((CUSTOMER_PREFIX, MERCHANT_PREFIX))


def new_account(name: str, type: str, currency: str = "", normal_balance: str = "",
                metadata: dict[str, Any] | None = None) -> Account:
    """A validated account, not stored yet (no id)."""
    name = name.strip()
    if not name:
        raise invalid("name is required", "name")
    type = type.strip().lower()
    if type not in NORMAL_BALANCE:
        raise invalid("invalid account type: must be one of asset, liability, equity, "
                      "revenue, expense", "type")
    normal_balance = normal_balance.strip().lower() or NORMAL_BALANCE[type]
    if normal_balance not in (DEBIT, CREDIT):
        raise invalid("invalid normalBalance: must be debit or credit", "normalBalance")
    return Account(id="", name=name, type=type, currency=currency_of(currency),
                   normal_balance=normal_balance, metadata=metadata or None)


def account_not_found(ref: str) -> Failure:
    return not_found(f"account {ref} not found")


def duplicate_account(name: str) -> Failure:
    return conflict(f'account "{name}" already exists')


# ---- entries ------------------------------------------------------------------------------

MAX_KEY_LENGTH = 255
MAX_POSTINGS = 1000
EMPTY_POSTINGS = "entry must have at least two postings"
KEY_REUSED = "idempotency key reused with different parameters"


@dataclass(frozen=True, slots=True)
class Leg:
    """A posting to be made: positive debits the account, negative credits it."""

    account_id: str
    amount: int
    currency: str = DEFAULT_CURRENCY


@dataclass(frozen=True, slots=True)
class Draft:
    """An entry to be posted."""

    postings: tuple[Leg, ...]
    idempotency_key: str = ""
    description: str = ""
    payment_intent_id: str = ""
    refund_id: str = ""
    payout_id: str = ""
    transfer_id: str = ""
    dispute_id: str = ""
    metadata: dict[str, Any] | None = None

    def payload_hash(self) -> str:
        """What a replay under the same key must match: everything but the key itself.
        Metadata keys are sorted, so only content counts; posting order counts."""
        body = [self.description, self.payment_intent_id, self.refund_id, self.payout_id,
                self.transfer_id, self.dispute_id, self.metadata,
                [[leg.account_id, leg.amount, leg.currency] for leg in self.postings]]
        return hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()


@dataclass(frozen=True, slots=True)
class Posting:
    id: str
    entry_id: str
    account_id: str
    amount: int
    currency: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    postings: tuple[Posting, ...]
    created_at: datetime
    payload_hash: str
    idempotency_key: str = ""
    description: str = ""
    payment_intent_id: str = ""
    refund_id: str = ""
    payout_id: str = ""
    transfer_id: str = ""
    dispute_id: str = ""
    metadata: dict[str, Any] | None = None


def sums_by_currency(legs: Iterable[Leg]) -> dict[str, int]:
    sums: dict[str, int] = {}
    for leg in legs:
        sums[leg.currency] = sums.get(leg.currency, 0) + leg.amount
    return sums


def check_postings(legs: tuple[Leg, ...]) -> None:
    """§2.9 validation steps 1 and 2, zero-sum per currency (§9.16: the reference summed
    across currencies, so 100 usd against 100 eur passed)."""
    if len(legs) < 2:
        raise invalid(EMPTY_POSTINGS, "postings")
    if len(legs) > MAX_POSTINGS:
        raise invalid(f"an entry has at most {MAX_POSTINGS} postings", "postings")
    for leg in legs:
        if not leg.account_id:
            raise invalid("posting accountId is required", "postings")
        if leg.amount == 0:  # a zero leg moves nothing and only hides mistakes
            raise invalid("posting amount must not be zero", "postings")
    for currency, total in sorted(sums_by_currency(legs).items()):
        if total != 0:
            raise invalid(f"postings do not balance: sum={total} {currency}", "postings")


def draft_entry(p: JournalEntryPostParams) -> Draft:
    if len(p.postings) < 2:
        raise invalid(EMPTY_POSTINGS, "postings")
    legs = tuple(Leg(x.accountId.strip(), x.amount, currency_of(x.currency))
                 for x in p.postings)
    check_postings(legs)
    if len(p.idempotencyKey) > MAX_KEY_LENGTH:
        raise invalid("invalid idempotency key", "idempotencyKey")
    return Draft(postings=legs, idempotency_key=p.idempotencyKey,
                 description=p.description, payment_intent_id=p.paymentIntentId.strip(),
                 refund_id=p.refundId.strip(), payout_id=p.payoutId.strip(),
                 transfer_id=p.transferId.strip(), dispute_id=p.disputeId.strip(),
                 metadata=p.metadata or None)


def require_accounts(draft: Draft, known: Mapping[str, Account]) -> None:
    """§2.9 step 3: every posting's account exists (in this org and mode)."""
    for leg in draft.postings:
        if leg.account_id not in known:
            raise account_not_found(leg.account_id)


def require_same_payload(stored: Entry, draft: Draft) -> None:
    """§2.9 step 4, fixed (§9.16): a key replays only the entry it posted."""
    if stored.payload_hash != draft.payload_hash():
        raise conflict(KEY_REUSED)


@dataclass(frozen=True, slots=True)
class EntryFilter:
    account_id: str = ""
    payment_intent_id: str = ""
    refund_id: str = ""
    payout_id: str = ""
    transfer_id: str = ""
    dispute_id: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int = 100
    offset: int = 0


def entry_filter(p: JournalEntryListParams) -> EntryFilter:
    limit, offset = JOURNAL_ENTRIES_PAGE.apply(p.limit, p.offset)
    return EntryFilter(account_id=p.accountId.strip(),
                       payment_intent_id=p.paymentIntentId.strip(),
                       refund_id=p.refundId.strip(), payout_id=p.payoutId.strip(),
                       transfer_id=p.transferId.strip(), dispute_id=p.disputeId.strip(),
                       created_after=p.createdAfter, created_before=p.createdBefore,
                       limit=limit, offset=offset)


# ---- balances -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Balance:
    account_id: str
    currency: str
    posted: int = 0
    pending: int = 0
    held: int = 0
    available: int = 0
    updated_at: datetime | None = None


def available(posted: int, held: int, credit_normal: bool) -> int:
    """Posted with the holds taken off in the account's normal direction. The reference's
    `posted − held` is right for debit-normal accounts only: on a credit-normal account
    (posted negative) it would make a hold look like more money."""
    return posted + held if credit_normal else posted - held


def spendable(account: Account, posted: int, held: int) -> int:
    """The available balance as a positive amount in the account's normal direction."""
    natural = -posted if account.credit_normal else posted
    return natural - held


# ---- high-level operations ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NamedLeg:
    """A leg on an account known by name, ensured (found or created) before posting."""

    name: str
    type: str
    amount: int


@dataclass(frozen=True, slots=True)
class Operation:
    currency: str
    legs: tuple[NamedLeg, ...]
    idempotency_key: str
    description: str
    payment_intent_id: str = ""
    refund_id: str = ""
    payout_id: str = ""
    dispute_id: str = ""

    def draft(self, account_ids: Mapping[str, str]) -> Draft:
        """The entry, once every named account has an id."""
        return Draft(
            postings=tuple(Leg(account_ids[leg.name], leg.amount, self.currency)
                           for leg in self.legs),
            idempotency_key=self.idempotency_key, description=self.description,
            payment_intent_id=self.payment_intent_id, refund_id=self.refund_id,
            payout_id=self.payout_id, dispute_id=self.dispute_id)


def _positive(amount: int) -> int:
    if amount <= 0:
        raise invalid("amount must be positive", "amount")
    return amount


def _required(value: str, field: str) -> str:
    value = value.strip()
    if not value:
        raise invalid(f"{field} is required", field)
    return value


def payment(p: JournalPaymentParams) -> Operation:
    """Money received for a payment intent: cash comes in, the customer is owed the amount
    net of fees, the fees are revenue."""
    amount = _positive(p.amount)
    pi = _required(p.paymentIntentId, "paymentIntentId")
    customer = _required(p.customerId, "customerId")
    if p.fees < 0:
        raise invalid("fees must not be negative", "fees")
    if p.fees > amount:
        raise invalid("fees must not exceed the amount", "fees")
    currency = currency_of(p.currency)
    legs = [NamedLeg(CASH, ASSET, amount)]
    if amount > p.fees:  # all-fee payments owe the customer nothing: no zero leg
        legs.append(NamedLeg(customer_account(customer), LIABILITY, -(amount - p.fees)))
    if p.fees:
        legs.append(NamedLeg(FEES, REVENUE, -p.fees))
    return Operation(currency, tuple(legs), f"payment:{pi}",
                     f"Payment {pi}: {amount} {currency} (fees {p.fees})",
                     payment_intent_id=pi)


def refund(p: JournalRefundParams) -> Operation:
    """Money returned to a customer: the platform owes them less, cash goes out."""
    amount = _positive(p.amount)
    refund_id = _required(p.refundId, "refundId")
    customer = _required(p.customerId, "customerId")
    currency = currency_of(p.currency)
    return _cash_out(customer_account(customer), amount, currency, f"refund:{refund_id}",
                     f"Refund {refund_id}: {amount} {currency} to customer {customer}",
                     refund_id=refund_id)


def payout(p: JournalPayoutParams) -> Operation:
    """Money paid to a merchant: the platform owes them less, cash goes out."""
    amount = _positive(p.amount)
    payout_id = _required(p.payoutId, "payoutId")
    merchant = _required(p.merchantId, "merchantId")
    currency = currency_of(p.currency)
    return _cash_out(merchant_account(merchant), amount, currency, f"payout:{payout_id}",
                     f"Payout {payout_id}: {amount} {currency} to merchant {merchant}",
                     payout_id=payout_id)


def _cash_out(owed: str, amount: int, currency: str, reference: str, description: str,
              **ids: str) -> Operation:
    """Cash leaves the platform to settle what it owed on the account `owed`."""
    return Operation(currency, (NamedLeg(owed, LIABILITY, amount), NamedLeg(CASH, ASSET, -amount)),
                     reference, description, **ids)


def dispute(p: JournalDisputeParams) -> Operation:
    """A customer disputes a charge (`outcome` ""), and the dispute's end: "won" reverses
    the four legs below, "lost" writes the held amount off against disputes_held (the
    customer's balance stays without it). Opening posts four legs, two balanced pairs:

    - platform:disputes_held +amount, platform:cash −amount: the card network pulls the
      funds; until the dispute is decided they are a claim on the network, not lost money
      (the reference's entry, kept).
    - customer_balance:<c> +amount, platform:reserves −amount: the fix (§9.16, the
      reference never touched the customer): the disputed amount leaves the customer's
      spendable balance, so they cannot spend money they are clawing back through their
      bank, and is parked in the reserve until the outcome.

    Never refused for lack of funds: the dispute already happened at the network, so the
    customer's balance may end up owing the platform.
    """
    amount = _positive(p.amount)
    dispute_id = _required(p.disputeId, "disputeId")
    customer = _required(p.customerId, "customerId")
    currency = currency_of(p.currency)
    outcome = p.outcome.strip()
    opened = (NamedLeg(DISPUTES_HELD, ASSET, amount), NamedLeg(CASH, ASSET, -amount),
              NamedLeg(customer_account(customer), LIABILITY, amount),
              NamedLeg(RESERVES, LIABILITY, -amount))
    if outcome == "":
        return Operation(currency, opened, f"dispute:{dispute_id}",
                         f"Dispute {dispute_id}: {amount} {currency} from customer {customer}",
                         dispute_id=dispute_id)
    if outcome == "won":
        legs = tuple(NamedLeg(leg.name, leg.type, -leg.amount) for leg in opened)
        return Operation(currency, legs, f"dispute-won:{dispute_id}",
                         f"Dispute {dispute_id} won: {amount} {currency} back to customer "
                         f"{customer}", dispute_id=dispute_id)
    if outcome == "lost":
        legs = (NamedLeg(RESERVES, LIABILITY, amount), NamedLeg(DISPUTES_HELD, ASSET, -amount))
        return Operation(currency, legs, f"dispute-lost:{dispute_id}",
                         f"Dispute {dispute_id} lost: {amount} {currency} written off",
                         dispute_id=dispute_id)
    raise invalid("outcome must be won, lost or empty", "outcome")


# ---- holds --------------------------------------------------------------------------------

PENDING, CAPTURED, VOIDED, EXPIRED = "pending", "captured", "voided", "expired"
# pending → captured | voided | expired; every other state is terminal.
_NEXT = {PENDING: frozenset({CAPTURED, VOIDED, EXPIRED})}
HOLD_LIFETIME = timedelta(days=7)  # a hold nobody settles releases itself


@dataclass(frozen=True, slots=True)
class Hold:
    id: str
    account_id: str
    amount: int
    currency: str
    expires_at: datetime
    status: str = PENDING
    payment_intent_id: str = ""
    captured_entry_id: str | None = None
    captured_amount: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


def new_hold(p: JournalHoldCreateParams, now: datetime) -> Hold:
    """A validated pending hold, not stored yet (no id); the account is checked next."""
    if p.amount <= 0:  # §9.7: negative holds used to raise `available`
        raise invalid("amount must be positive", "amount")
    account_id = p.accountId.strip()
    if not account_id:
        raise invalid("accountId is required", "accountId")
    expires_at = p.expiresAt if p.expiresAt is not None else now + HOLD_LIFETIME
    if expires_at <= now:
        raise invalid("expiresAt must be in the future", "expiresAt")
    return Hold(id="", account_id=account_id, amount=p.amount, currency=currency_of(p.currency),
                expires_at=expires_at, payment_intent_id=p.paymentIntentId.strip())


def require_funds(account: Account, posted: int, held_before: int, amount: int) -> None:
    """§9.7/§9.16: a hold on a customer-facing balance must be covered by what is
    available (the reference never raised its insufficient-balance error). Platform
    accounts are not checked: their holds are bookkeeping, not a customer's money."""
    if not account.customer_facing:
        return
    have = spendable(account, posted, held_before)
    if have < amount:
        raise domain.insufficient_balance(have, amount)


def hold_not_found() -> Failure:
    return not_found("hold not found")


def require_transition(hold: Hold, status: str) -> None:
    if status not in _NEXT.get(hold.status, ()):
        raise conflict("hold is not pending")


def capture_amount(hold: Hold, requested: int, now: datetime) -> int:
    """How much a capture takes: ≤ 0 means the whole hold; never more than it."""
    require_transition(hold, CAPTURED)
    if hold.expires_at <= now:  # past its expiry, waiting for the sweeper
        raise conflict("hold has expired")
    amount = hold.amount if requested <= 0 else requested
    if amount > hold.amount:
        raise conflict("capture exceeds hold")
    return amount


def capture_entry(hold: Hold, account: Account, cash: Account, amount: int) -> Draft:
    """The captured amount leaves the held account in its normal direction and is balanced
    against platform:cash. A debit-normal account (the reference's case, e.g. funds
    authorised on a card) is credited and turns into cash; a credit-normal customer balance
    is debited (the customer is owed less) and the money is paid out of cash. Crediting a
    credit-normal account, as the reference would, would give the customer more money."""
    taken = amount if account.credit_normal else -amount
    return Draft(postings=(Leg(account.id, taken, hold.currency),
                           Leg(cash.id, -taken, hold.currency)),
                 idempotency_key=f"capture:{hold.id}",
                 description=f"Capture hold {hold.id} for {amount}",
                 payment_intent_id=hold.payment_intent_id)
