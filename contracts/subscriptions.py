"""Subscriptions messages (subscriptions.md §1.1–§1.3, §3.1, §3.4): the plan catalog and the
subscription resource. Other areas of the service (items, schedules, the cycle, gifts) and
other services (the portal, tiers, DNS limits) build on `Subscription` and these endpoints.

Field names are the reference's JSON names. Response fields the reference leaves out when
unset are `UNSET` until set."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from contracts.common import IdParams, Params
from contracts.endpoint import Endpoint
from contracts.limits import Code, Id, Metadata, Page, UserId, require_small_json
from contracts.metering import PlanView

SUBSCRIPTIONS_PAGE = Page(100, 100)  # ~4 KB a row (ids, snapshot, metadata ≤ 2 KB)
MAX_QUANTITY = 100_000  # seats of one subscription
MAX_TRIAL_DAYS = 730

# ---- plans (§1.2, §3.4): the catalog, as the plans endpoints answer it ---------------------


class PlanListQuery(Params):
    category: Code = ""  # exact, case-sensitive; empty: every plan


PLAN_LIST = Endpoint("billing.subscriptions.plan.list", PlanListQuery, list[PlanView])
# `id` is a catalog slug (from the path); anything else is 404 `plan not found`.
PLAN_GET = Endpoint("billing.subscriptions.plan.get", IdParams, PlanView)


# ---- subscriptions (§1.3, §3.1) ------------------------------------------------------------


class SubscriptionPlan(msgspec.Struct):
    """The plan snapshot a subscription bills from (grandfathering): `price` is per
    interval — per seat for per-seat plans, the yearly price for annual ones."""

    id: str
    name: str
    price: int
    currency: str
    interval: str  # `monthly` (catalog plans billed monthly, as the reference), `month`, `year`


class ProrationItem(msgspec.Struct):
    """A plan or quantity change's pending invoice item (§2.3 OURS): the next renewal invoice
    carries it. `amount` is the charge for the new plan minus the credit for the old one over
    what is left of the period (negative: a credit)."""

    id: str
    type: str  # `proration`
    description: str
    planId: str
    planName: str
    amount: int
    currency: str
    periodStart: str
    periodEnd: str


class Subscription(msgspec.Struct):
    """The subscriptionResponse of §1.3, plus `metadata` (§7 D6: returned when set) and,
    in a PATCH reply only, the `prorationItem` it created."""

    id: str
    userId: str
    planId: str
    status: str
    quantity: int
    currentPeriodStart: str
    currentPeriodEnd: str
    cancelAtPeriodEnd: bool
    providerType: str
    defaultPaymentMethod: str
    plan: SubscriptionPlan
    createdAt: str
    updatedAt: str
    trialStart: str | UnsetType = UNSET  # both trial keys only when there is a trial
    trialEnd: str | UnsetType = UNSET
    canceledAt: str | UnsetType = UNSET
    endedAt: str | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET
    prorationItem: ProrationItem | UnsetType = UNSET


class SubscriptionList(msgspec.Struct):
    subscriptions: list[Subscription]
    count: int  # subscriptions returned


class SubscriptionCreateParams(Params):
    userId: UserId = ""
    planId: Id = ""  # a plan id or slug (catalog plans: id = slug)
    defaultPaymentMethod: Id = ""
    metadata: Metadata | None = None
    # OURS, additive: seats of a per-seat plan (default 1); `month`/`monthly` (default) or
    # `year`/`yearly`/`annual` (billed per year at the catalog's annual price); a trial of
    # this many days instead of the plan's (Stripe's `trial_period_days`).
    quantity: int | UnsetType = UNSET
    interval: Code = ""
    trialPeriodDays: int | UnsetType = UNSET

    def __post_init__(self) -> None:
        require_small_json("metadata", self.metadata)


class SubscriptionListParams(Params):
    userId: UserId = ""  # exact, after canonicalisation
    status: Code = ""  # exact
    limit: int = 0  # ≤ 0: the default; capped (SUBSCRIPTIONS_PAGE)
    offset: int = 0


class SubscriptionUpdateParams(Params):
    id: Id = ""  # from the path
    planId: Id = ""  # "" or the current plan: no plan change
    prorate: bool = False
    quantity: int = 0  # seats; ≤ 0: unchanged (as the reference)


class SubscriptionCancelParams(Params):
    id: Id = ""  # from the path
    # OURS (§3.1.5): absent (or a body that does not decode) ⇒ at period end.
    atPeriodEnd: bool | UnsetType = UNSET


SUBSCRIPTION_CREATE = Endpoint("billing.subscriptions.subscription.create",
                               SubscriptionCreateParams, Subscription)
SUBSCRIPTION_LIST = Endpoint("billing.subscriptions.subscription.list", SubscriptionListParams,
                             SubscriptionList)
SUBSCRIPTION_GET = Endpoint("billing.subscriptions.subscription.get", IdParams, Subscription)
SUBSCRIPTION_UPDATE = Endpoint("billing.subscriptions.subscription.update",
                               SubscriptionUpdateParams, Subscription)
SUBSCRIPTION_CANCEL = Endpoint("billing.subscriptions.subscription.cancel",
                               SubscriptionCancelParams, Subscription)
SUBSCRIPTION_REACTIVATE = Endpoint("billing.subscriptions.subscription.reactivate", IdParams,
                                   Subscription)
