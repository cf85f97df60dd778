"""Gift subscriptions (ledger.md §2.10, §8 L; subscriptions.md §1.2 "Grant CLI"): a catalog
plan given to a user for a number of days, as a `manual_gift` subscription that is never
billed and ends at its period end. A second grant of the same plan to the same user extends
the first rather than starting another."""

from __future__ import annotations

from typing import Annotated

import msgspec

from contracts.common import Params
from contracts.endpoint import Endpoint
from contracts.limits import Code, Name, Notes, UserId

DEFAULT_GIFT_DAYS = 360  # the reference's 12 months × 30 days, when no duration is given
MAX_GIFT_DAYS = 36_500  # a century: any longer is a typo, not a gift
GiftDays = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31)]


class GiftGrantParams(Params):
    userId: UserId = ""
    planId: Code = ""  # the catalog plan's slug
    days: GiftDays = 0  # ≤ 0: DEFAULT_GIFT_DAYS
    reason: Notes = ""
    grantedBy: Name = ""  # who gives it (the CLI's operator); default: the caller


class GiftGrant(msgspec.Struct, kw_only=True, omit_defaults=True):
    subscriptionId: str
    userId: str
    planSlug: str
    status: str  # active
    currentPeriodEnd: str  # RFC 3339, UTC: when the gift ends
    extended: bool = False  # an existing gift of the plan was extended (or kept)


GIFT_GRANT = Endpoint("billing.subscriptions.gift.grant", GiftGrantParams, GiftGrant)
