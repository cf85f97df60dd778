"""The subscriptions service's state, built once when it starts: the plan catalog (from
`plans/`, or `BILLING_PLANS_DIR`), upserted into the platform-wide plans table, and the
plans endpoints' replies encoded once."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from contracts import Reply
from contracts.catalog import Catalog, load_catalog
from contracts.metering import plan_view
from services.runtime.service import Context
from services.subscriptions.cycle.consumer import InvoiceEvents
from services.subscriptions.plans import store as plans
from services.subscriptions.reconcile.consumer import ProviderEvents

_encode = msgspec.json.Encoder().encode


class PlanReplies:
    """The encoded replies of `plan.list` (all, and per category) and `plan.get`."""

    def __init__(self, catalog: Catalog):
        self._all = _encode(Reply(result=[plan_view(p) for p in catalog]))
        self._by_category = {c: _encode(Reply(result=[plan_view(p)
                                                      for p in catalog.by_category(c)]))
                             for c in catalog.categories()}
        self._none = _encode(Reply(result=[]))
        self._by_slug = {p.slug: _encode(Reply(result=plan_view(p))) for p in catalog}

    def listed(self, category: str) -> bytes:
        if not category:
            return self._all
        return self._by_category.get(category, self._none)

    def one(self, slug: str) -> bytes | None:
        return self._by_slug.get(slug)


@dataclass(slots=True)
class Subscriptions:
    catalog: Catalog
    plans: PlanReplies


async def bootstrap(ctx: Context) -> None:
    catalog = load_catalog(ctx.settings.plans_dir or None)  # a bad catalog stops the start
    await plans.upsert_catalog(ctx.pool, catalog)
    ctx.state = Subscriptions(catalog=catalog, plans=PlanReplies(catalog))
    # Read while the service runs: invoices paid or voided outside the cycle (a past-due
    # period moves on) and the providers' subscription events (reconciled).
    for reader in (InvoiceEvents(ctx), ProviderEvents(ctx)):
        await reader.start()
        ctx.on_stop(reader.stop)
