"""Spend alerts (ledger.md §2.4, §3.18–§3.21): a user's monthly spend threshold in one
currency, and the event published when a usage debit crosses it."""

from __future__ import annotations

import msgspec

from contracts.common import Int64, Params
from contracts.endpoint import Endpoint
from contracts.limits import Code, Id, Name, UserId

SPEND_ALERT_TRIGGERED = "spend_alert.triggered"  # event type (billing.events.<type>)


# ---- requests -------------------------------------------------------------------------


class SpendAlertListParams(Params):
    user: UserId = ""
    limit: int = 0  # ≤ 0: the default; capped (limits.SPEND_ALERTS_PAGE)
    offset: int = 0


class SpendAlertCreateParams(Params):
    userId: UserId = ""
    title: Name = ""
    threshold: Int64 = 0
    currency: Code = ""


class SpendAlertUpdateParams(Params):
    id: Id = ""  # from the path
    title: Name = ""  # replaced when non-empty
    threshold: Int64 | None = None  # replaced when given; must then be positive


class SpendAlertDeleteParams(Params):
    id: Id = ""  # from the path


# ---- results --------------------------------------------------------------------------


class SpendAlert(msgspec.Struct):
    id: str
    userId: str
    title: str
    threshold: int
    currency: str
    triggeredAt: str  # "" until the alert first fires
    createdAt: str
    updatedAt: str


class SpendAlertTriggered(SpendAlert):
    """`data` of a `spend_alert.triggered` event: the alert as it is after firing, plus the
    month's spend that crossed its threshold."""

    spend: int  # the user's api-usage spend this month in the alert's currency
    period: str  # the UTC calendar month, YYYY-MM


# ---- endpoints -----------------------------------------------------

SPEND_ALERT_LIST = Endpoint("billing.ledger.spend_alert.list", SpendAlertListParams,
                            list[SpendAlert])
SPEND_ALERT_CREATE = Endpoint("billing.ledger.spend_alert.create", SpendAlertCreateParams,
                              SpendAlert)
SPEND_ALERT_UPDATE = Endpoint("billing.ledger.spend_alert.update", SpendAlertUpdateParams,
                              SpendAlert)
SPEND_ALERT_DELETE = Endpoint("billing.ledger.spend_alert.delete", SpendAlertDeleteParams,
                              None)  # 204
