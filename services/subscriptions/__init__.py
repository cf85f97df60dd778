"""The subscriptions service: the plan catalog and its platform-wide copy, subscriptions,
their items and schedules, the billing cycle (subscriptions.md; metering-invoicing.md §8).

One sub-package per area, each with `handlers.py`, `domain.py` (rules, no I/O) and
`store.py` (SQL, schema `subscriptions`): `plans/` (the catalog's endpoints) and
`subscriptions/` (create, list, get, change, cancel, reactivate; the row lock and save the
other areas use); `gifts/` (plans given for a number of days, and the job that ends them),
`entitlements/` (the plans a user is entitled to, for tiers and DNS limits) and
`reconcile/` (Stripe's and Square's subscription events, read from payments' events by
the consumer the bootstrap starts). Other services are asked over the bus only."""

from pathlib import Path

from services.runtime.service import Job, Router, ServiceSpec
from services.subscriptions.bootstrap import bootstrap
from services.subscriptions.entitlements import handlers as entitlements
from services.subscriptions.gifts import handlers as gifts
from services.subscriptions.plans import handlers as plans
from services.subscriptions.reconcile import handlers as reconcile
from services.subscriptions.subscriptions import handlers as subscriptions

SPEC = ServiceSpec(
    name="subscriptions",
    handlers=Router(plans.router, subscriptions.router, gifts.router, entitlements.router,
                    reconcile.router),
    migrations=Path(__file__).parent / "migrations",
    bootstrap=bootstrap,
    jobs=(
        # Gifts end at their period end (never renewed).
        Job(lambda settings: settings.lapse_interval_s, gifts.end_gifts),
    ),
)
