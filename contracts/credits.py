"""Credit-grant messages: create, void, list, credit balances, and the burn-down operations
invoicing uses (ledger.md §2.3, §3.13–§3.17, §5).

Field names are the HTTP API's (camelCase), as in contracts/ledger.py.
"""

from __future__ import annotations

import msgspec

from contracts.common import Int64, Params
from contracts.endpoint import Endpoint
from contracts.limits import Code, Id, MeterIds, Name, Tags, UserId

# ---- requests -------------------------------------------------------------------------


class CreditGrantCreateParams(Params):
    userId: UserId = ""
    name: Name = ""
    amountCents: Int64 = 0
    currency: Code = ""
    expiresIn: Code = ""  # Go duration (`720h`, `1h30m`); empty means no expiry
    priority: Int64 = 0  # lower burns first; may be negative
    eligibility: MeterIds | None = None  # meter ids; empty or absent = every meter
    tags: Tags = ""


class CreditGrantVoidParams(Params):
    id: Id = ""  # from the path


class CreditGrantListParams(Params):
    userId: UserId = ""
    limit: int = 0  # ≤ 0: the default; capped (limits.CREDIT_GRANTS_PAGE)
    offset: int = 0


class CreditBalanceQuery(Params):
    userId: UserId = ""


class CreditBreakdownQuery(Params):
    userId: UserId = ""
    currency: Code = ""  # ours: the breakdown sums one currency only (default usd)


# A meter id no meter has: a burn for it spends only the grants usable for every meter (an
# invoice's amount outside its usage lines, §9.4 Δ).
NO_METER = "(no meter)"


class CreditBurnParams(Params):
    """Apply credits to `amount` (minor units of `currency`) for one user and meter."""

    userId: UserId = ""
    amount: Int64 = 0
    currency: Code = ""
    meterId: Id = ""  # empty = any meter: meter-scoped grants are burned too; NO_METER:
    # grants for every meter only


# ---- results --------------------------------------------------------------------------


class CreditGrant(msgspec.Struct, omit_defaults=True):
    """A created grant (eligibility is not echoed, as in the reference)."""

    id: str
    userId: str
    name: str
    amountCents: int
    remainingCents: int
    currency: str
    priority: int
    effectiveAt: str
    tags: str
    createdAt: str
    expiresAt: str | None = None  # omitted when the grant never expires


class CreditGrantItem(msgspec.Struct, omit_defaults=True):
    id: str
    userId: str
    name: str
    amountCents: int
    remainingCents: int
    currency: str
    priority: int
    effectiveAt: str
    tags: str
    voided: bool
    active: bool  # the active predicate at read time
    createdAt: str
    expiresAt: str | None = None


class CreditGrantList(msgspec.Struct):
    grants: list[CreditGrantItem]
    count: int  # items returned


class CreditGrantVoided(msgspec.Struct):
    id: str
    voided: bool


class CreditBalanceEntry(msgspec.Struct):
    currency: str
    available: int


class CreditBalance(msgspec.Struct):
    userId: str
    balances: list[CreditBalanceEntry]  # sorted by currency


class CreditBreakdownGroup(msgspec.Struct, omit_defaults=True):
    cents: int
    expiresAt: str | None = None  # the group's earliest expiry, omitted if none expires


class CreditBreakdownTotal(msgspec.Struct):
    cents: int


class CreditBreakdown(msgspec.Struct):
    userId: str
    currency: str
    breakdown: dict[str, CreditBreakdownGroup]
    total: CreditBreakdownTotal


class BurnedGrant(msgspec.Struct):
    grantId: str
    amount: int


class CreditBurnResult(msgspec.Struct):
    remaining: int  # what credits did not cover
    burned: list[BurnedGrant]  # in burn order


# ---- endpoints -----------------------------------------------------

CREDIT_GRANT_CREATE = Endpoint("billing.ledger.credit_grant.create", CreditGrantCreateParams,
                               CreditGrant)
CREDIT_GRANT_VOID = Endpoint("billing.ledger.credit_grant.void", CreditGrantVoidParams,
                             CreditGrantVoided)
CREDIT_GRANT_LIST = Endpoint("billing.ledger.credit_grant.list", CreditGrantListParams,
                             CreditGrantList)
CREDIT_BALANCE_GET = Endpoint("billing.ledger.credit_balance.get", CreditBalanceQuery,
                              CreditBalance)
CREDIT_BALANCE_BREAKDOWN = Endpoint("billing.ledger.credit_balance.breakdown",
                                    CreditBreakdownQuery, CreditBreakdown)
# Bus only (no HTTP route): invoicing applies credits to an amount due.
CREDIT_GRANT_BURN = Endpoint("billing.ledger.credit_grant.burn", CreditBurnParams,
                             CreditBurnResult)
CREDIT_GRANT_PREVIEW = Endpoint("billing.ledger.credit_grant.preview", CreditBurnParams,
                                CreditBurnResult)
