"""Billing-cycle messages (metering-invoicing.md §8.1, §8.3; subscriptions.md §3.1.7): the
cycle endpoints, which renew every due subscription of an organization (of one user, of
every organization), and the renewal of one subscription.

A result row is one billed period: `invoiceId` is "" when the renewal failed before an
invoice existed; `error` is left out when empty."""

from __future__ import annotations

import msgspec
from msgspec import UNSET, UnsetType

from contracts.common import IdParams, Params
from contracts.endpoint import Endpoint
from contracts.invoicing import Collection, Invoice
from contracts.limits import UserId
from contracts.subscriptions import Subscription


class CycleRunParams(Params):
    """`run` and `run-all` take no body."""


class CycleRunUserParams(Params):
    userId: UserId = ""


class CycleResult(msgspec.Struct, omit_defaults=True):
    userId: str
    subscriptionId: str
    invoiceId: str
    success: bool
    error: str = ""


class CycleRun(msgspec.Struct):
    processed: int  # result rows
    results: list[CycleResult]


class CycleRunUser(msgspec.Struct):
    user: str
    processed: int
    results: list[CycleResult]


class CycleRunOrg(msgspec.Struct):
    orgId: str
    orgName: str
    processed: int
    results: list[CycleResult]


class CycleRunAll(msgspec.Struct):
    orgs: int  # organizations with at least one result row
    totalProcessed: int
    results: list[CycleRunOrg]


class Renewal(msgspec.Struct, kw_only=True):
    """§3.1.7: `invoice` is left out when nothing was invoiced (the period is not due)."""

    subscription: Subscription
    invoice: Invoice | UnsetType = UNSET
    collection: Collection


CYCLE_RUN = Endpoint("billing.subscriptions.cycle.run", CycleRunParams, CycleRun)
CYCLE_RUN_USER = Endpoint("billing.subscriptions.cycle.run_user", CycleRunUserParams,
                          CycleRunUser)
CYCLE_RUN_ALL = Endpoint("billing.subscriptions.cycle.run_all", CycleRunParams, CycleRunAll)
SUBSCRIPTION_RENEW = Endpoint("billing.subscriptions.subscription.renew", IdParams, Renewal)
