"""Subscription items (subscriptions.md §1.4, §3.2): the priced parts of a subscription —
seats of a licensed plan or price, or a meter whose usage is billed (metered)."""

from __future__ import annotations

import msgspec

from contracts.common import IdParams, Int64, Params
from contracts.endpoint import Endpoint
from contracts.limits import Code, Id, Metadata, Page, require_small_json

SUBSCRIPTION_ITEMS_PAGE = Page(100, 100)  # ~8.3 KB a row at every limit (4 ids, metadata)


class SubscriptionItemCreateParams(Params):
    subscriptionId: Id = ""
    priceId: Id = ""
    planId: Id = ""
    meterId: Id = ""
    quantity: Int64 = 0
    billingMode: Code = ""  # empty: licensed
    metadata: Metadata | None = None

    def __post_init__(self) -> None:
        require_small_json("metadata", self.metadata)


class SubscriptionItemListParams(Params):
    subscriptionId: Id = ""
    limit: int = 0  # ≤ 0: the default; capped (SUBSCRIPTION_ITEMS_PAGE)
    offset: int = 0


class SubscriptionItemUpdateParams(Params):
    id: Id = ""  # from the path
    quantity: Int64 = 0  # applied only when > 0 (§3.2.4)
    metadata: Metadata | None = None  # replaces the whole map when given

    def __post_init__(self) -> None:
        require_small_json("metadata", self.metadata)


class SubscriptionItem(msgspec.Struct, omit_defaults=True):
    """§1.4's `subscriptionItemResponse`; `created` is the creation time (§0.5, D3)."""

    id: str
    subscriptionId: str
    billingMode: str
    quantity: int
    created: str
    priceId: str = ""
    planId: str = ""
    meterId: str = ""
    metadata: dict | None = None


class SubscriptionItemDeleted(msgspec.Struct):
    deleted: bool
    id: str


SUBSCRIPTION_ITEM_CREATE = Endpoint("billing.subscriptions.item.create",
                                    SubscriptionItemCreateParams, SubscriptionItem)
SUBSCRIPTION_ITEM_LIST = Endpoint("billing.subscriptions.item.list", SubscriptionItemListParams,
                                  list[SubscriptionItem])
SUBSCRIPTION_ITEM_GET = Endpoint("billing.subscriptions.item.get", IdParams, SubscriptionItem)
SUBSCRIPTION_ITEM_UPDATE = Endpoint("billing.subscriptions.item.update",
                                    SubscriptionItemUpdateParams, SubscriptionItem)
SUBSCRIPTION_ITEM_DELETE = Endpoint("billing.subscriptions.item.delete", IdParams,
                                    SubscriptionItemDeleted)
