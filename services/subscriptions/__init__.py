"""The subscriptions service: the plan catalog and its platform-wide copy, subscriptions,
their items and schedules, the billing cycle (subscriptions.md; metering-invoicing.md §8).

One sub-package per area, each with `handlers.py`, `domain.py` (rules, no I/O) and
`store.py` (SQL, schema `subscriptions`): `plans/` (the catalog's endpoints) and
`subscriptions/` (create, list, get, change, cancel, reactivate; the row lock and save the
other areas use), `items/` (the seats and meters a subscription bills) and `schedules/`
(phases of plans that run: a job crosses their boundaries). Other services are asked over the bus only."""

from pathlib import Path

from services.runtime.service import Job, Router, ServiceSpec
from services.subscriptions.bootstrap import bootstrap
from services.subscriptions.items import handlers as items
from services.subscriptions.plans import handlers as plans
from services.subscriptions.schedules import handlers as schedules
from services.subscriptions.subscriptions import handlers as subscriptions

SPEC = ServiceSpec(
    name="subscriptions",
    handlers=Router(plans.router, subscriptions.router, items.router, schedules.router),
    migrations=Path(__file__).parent / "migrations",
    bootstrap=bootstrap,
    jobs=(Job(schedules.INTERVAL_SECONDS, schedules.run_due),),
)
