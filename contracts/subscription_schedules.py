"""Subscription schedules (subscriptions.md §1.5, §3.3): phases of plans over time for a
customer. Ours execute (spec/README.md): at each phase's start the subscription changes as
the phase says, once."""

from __future__ import annotations

from typing import Annotated

import msgspec

from contracts.common import IdParams, Int64, Params
from contracts.endpoint import Endpoint
from contracts.invoicing import Timestamp
from contracts.limits import Code, Id, Metadata, Page, UserId, require_small_json

PHASES_MAX = 20
PHASE_ITEMS_MAX = 20
PHASES_BYTES = 8 * 1024  # a schedule's phases as JSON (about 20 phases of two items)
SUBSCRIPTION_SCHEDULES_PAGE = Page(50, 50)  # ~14 KB a row at every limit (phases, metadata)


class PhaseItem(msgspec.Struct):
    """Both fields always written (the reference's struct had no omitempty)."""

    priceId: Id = ""
    quantity: Int64 = 0


class PhaseInput(msgspec.Struct, omit_defaults=True):
    planId: Id = ""
    items: Annotated[list[PhaseItem], msgspec.Meta(max_length=PHASE_ITEMS_MAX)] | None = None
    startDate: Timestamp | None = None
    endDate: Timestamp | None = None
    trialEnd: Timestamp | None = None
    prorationBehavior: Code = ""  # create_prorations | none


Phases = Annotated[list[PhaseInput], msgspec.Meta(max_length=PHASES_MAX)]


class Phase(msgspec.Struct, omit_defaults=True):
    """A phase as stored and answered: times always there (`0001-01-01T00:00:00Z` unset),
    `items` and `prorationBehavior` only when given."""

    planId: str
    startDate: str
    endDate: str
    trialEnd: str
    items: list[PhaseItem] | None = None
    prorationBehavior: str = ""


def require_small_phases(phases: list[PhaseInput] | None) -> None:
    if phases:
        require_small_json("phases", msgspec.to_builtins(phases), PHASES_BYTES)


class ScheduleCreateParams(Params):
    customerId: UserId = ""
    startDate: Timestamp | None = None
    endBehavior: Code = ""  # empty: release
    phases: Phases | None = None
    metadata: Metadata | None = None

    def __post_init__(self) -> None:
        require_small_json("metadata", self.metadata)
        require_small_phases(self.phases)


class ScheduleListParams(Params):
    customerId: UserId = ""
    status: Code = ""
    limit: int = 0  # ≤ 0: the default; capped (SUBSCRIPTION_SCHEDULES_PAGE)
    offset: int = 0


class ScheduleUpdateParams(Params):
    id: Id = ""  # from the path
    endBehavior: Code = ""  # applied when not empty
    phases: Phases | None = None  # replaces every phase when not empty

    def __post_init__(self) -> None:
        require_small_phases(self.phases)


class SubscriptionSchedule(msgspec.Struct, omit_defaults=True):
    """§1.5's `scheduleResponse`; `created` is the creation time (§0.5, D3)."""

    id: str
    customerId: str
    status: str
    startDate: str
    endBehavior: str
    created: str
    subscriptionId: str = ""
    phases: list[Phase] | None = None
    metadata: dict | None = None


SCHEDULE_CREATE = Endpoint("billing.subscriptions.schedule.create", ScheduleCreateParams,
                           SubscriptionSchedule)
SCHEDULE_LIST = Endpoint("billing.subscriptions.schedule.list", ScheduleListParams,
                         list[SubscriptionSchedule])
SCHEDULE_GET = Endpoint("billing.subscriptions.schedule.get", IdParams, SubscriptionSchedule)
SCHEDULE_UPDATE = Endpoint("billing.subscriptions.schedule.update", ScheduleUpdateParams,
                           SubscriptionSchedule)
SCHEDULE_CANCEL = Endpoint("billing.subscriptions.schedule.cancel", IdParams,
                           SubscriptionSchedule)
SCHEDULE_RELEASE = Endpoint("billing.subscriptions.schedule.release", IdParams,
                            SubscriptionSchedule)
