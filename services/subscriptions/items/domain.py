"""Subscription items, pure (subscriptions.md §1.4, §3.2): what a new item is and what a
change does. No I/O.

Items bill (spec/README.md): a licensed item is `quantity` seats at its plan's price, a
metered item prices its meter's usage through invoicing — so a metered item names its meter,
and quantities are never negative (REF accepted anything)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contracts.errors import invalid
from contracts.subscription_items import SubscriptionItemCreateParams, SubscriptionItemUpdateParams

LICENSED, METERED = "licensed", "metered"
ITEM_NOT_FOUND = "subscription item not found"
SUBSCRIPTION_NOT_FOUND = "subscription not found"


@dataclass(frozen=True, slots=True)
class NewItem:
    subscription_id: str
    price_id: str
    plan_id: str
    meter_id: str
    quantity: int
    billing_mode: str
    metadata: dict[str, Any] | None


def new_item(p: SubscriptionItemCreateParams) -> NewItem:
    """§3.2.1 in order: the subscription named, then the OURS checks."""
    subscription_id = p.subscriptionId.strip()
    if not subscription_id:
        raise invalid("subscriptionId is required", "subscriptionId")
    mode = p.billingMode.strip() or LICENSED
    if mode not in (LICENSED, METERED):
        raise invalid("billingMode must be licensed or metered", "billingMode")
    if p.quantity < 0:
        raise invalid("quantity must be >= 0", "quantity")
    meter_id = p.meterId.strip()
    if mode == METERED and not meter_id:
        raise invalid("meterId is required for metered items", "meterId")
    return NewItem(subscription_id, p.priceId.strip(), p.planId.strip(), meter_id,
                   p.quantity, mode, p.metadata)


def changes(p: SubscriptionItemUpdateParams) -> dict[str, Any]:
    """§3.2.4: a quantity applies only when > 0, metadata replaces the map when given."""
    changed: dict[str, Any] = {}
    if p.quantity > 0:
        changed["quantity"] = p.quantity
    if p.metadata is not None:
        changed["metadata"] = p.metadata
    return changed


def prices_by_plan(billing_mode: str, plan_id: str) -> bool:
    """Whether the item's unit amount is its plan's price: licensed seats of a plan."""
    return billing_mode == LICENSED and bool(plan_id)
