"""The invoicing service: pricing rules, the invoice preview and the upcoming invoice
(metering-invoicing.md §2.3, §4, §9.2–§9.4).

One sub-package per area, each with `handlers.py`, `domain.py` (rules, no I/O) and
`store.py` (SQL, schema `invoicing`): `pricing/` (pricing rules, what usage costs under
them, preview and upcoming). Usage quantities come from metering (`billing.metering.usage.
aggregate`), credits from the ledger's non-consuming preview; `bootstrap.py` the state
handlers share."""

from pathlib import Path

from services.invoicing.bootstrap import bootstrap
from services.invoicing.pricing import handlers as pricing
from services.runtime.service import Router, ServiceSpec

SPEC = ServiceSpec(
    name="invoicing",
    handlers=Router(pricing.router),
    migrations=Path(__file__).parent / "migrations",
    bootstrap=bootstrap,
    jobs=(),
)
