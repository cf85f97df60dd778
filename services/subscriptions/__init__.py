"""The subscriptions service: the plan catalog and its platform-wide copy, subscriptions,
their items and schedules, the billing cycle (subscriptions.md; metering-invoicing.md §8).

One sub-package per area, each with `handlers.py`, `domain.py` (rules, no I/O) and
`store.py` (SQL, schema `subscriptions`): `plans/` (the catalog's endpoints) and
`subscriptions/` (create, list, get, change, cancel, reactivate; the row lock and save the
other areas use), `items/` (the seats and meters a subscription bills), `schedules/`
(phases of plans that run: a job crosses their boundaries), `cycle/` (the billing cycle:
renewals, dunning, renew; its scheduler and its reader of invoice events), `gifts/` (plans
given for a number of days, and the job that ends them), `entitlements/` (the plans a user
is entitled to, for tiers and DNS limits) and `reconcile/` (Stripe's and Square's
subscription events, read from payments' events by the consumer the bootstrap starts). Other
services are asked over the bus only."""

from pathlib import Path

from services.runtime.service import Job, Router, ServiceSpec
from services.subscriptions.bootstrap import bootstrap
from services.subscriptions.cycle import handlers as cycle
from services.subscriptions.entitlements import handlers as entitlements
from services.subscriptions.gifts import handlers as gifts
from services.subscriptions.items import handlers as items
from services.subscriptions.plans import handlers as plans
from services.subscriptions.reconcile import handlers as reconcile
from services.subscriptions.schedules import handlers as schedules
from services.subscriptions.subscriptions import handlers as subscriptions

SPEC = ServiceSpec(
    name="subscriptions",
    handlers=Router(plans.router, subscriptions.router, items.router, schedules.router,
                    cycle.router, gifts.router, entitlements.router, reconcile.router),
    migrations=Path(__file__).parent / "migrations",
    bootstrap=bootstrap,
    # Schedules' phase boundaries; the billing cycle: every due period of every
    # organization and mode; gifts end at their period end (never renewed).
    jobs=(Job(schedules.INTERVAL_SECONDS, schedules.run_due),
          Job(cycle.interval, cycle.run_due),
          Job(lambda settings: settings.lapse_interval_s, gifts.end_gifts)),
)
