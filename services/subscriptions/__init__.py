"""The subscriptions service: the plan catalog and its platform-wide copy, subscriptions,
their items and schedules, the billing cycle (subscriptions.md; metering-invoicing.md §8).

One sub-package per area, each with `handlers.py`, `domain.py` (rules, no I/O) and
`store.py` (SQL, schema `subscriptions`): `plans/` (the catalog's endpoints) and
`subscriptions/` (create, list, get, change, cancel, reactivate; the row lock and save the
other areas use). Other services are asked over the bus only."""

from pathlib import Path

from services.runtime.service import Router, ServiceSpec
from services.subscriptions.bootstrap import bootstrap
from services.subscriptions.plans import handlers as plans
from services.subscriptions.subscriptions import handlers as subscriptions

SPEC = ServiceSpec(
    name="subscriptions",
    handlers=Router(plans.router, subscriptions.router),
    migrations=Path(__file__).parent / "migrations",
    bootstrap=bootstrap,
)
