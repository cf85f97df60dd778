"""The invoicing service: pricing rules, invoice preview and upcoming, invoices with their
lines, discounts and tax, finalized (numbered), paid or voided, and their PDF; credit notes;
customer balances (metering-invoicing.md §4–§7, §9).

One sub-package per area, each with `handlers.py`, `domain.py` (rules, no I/O) and
`store.py` (SQL, schema `invoicing`): `pricing/` (pricing rules, preview, upcoming),
`invoices/` (invoices, line items, discount, tax, finalize, pay, void, the PDF in
`document.py`, the organization's tax rates), `renewal/` (a subscription's period invoice,
built once and collected, for the subscriptions service), `collection/` (the waterfall's
legs behind pay, and what a void gives back), `customer_balance/` (balances and their
transactions) and `credit_notes/`. Other services are asked over the bus only."""

from pathlib import Path

from services.invoicing.bootstrap import bootstrap
from services.invoicing.collection.domain import LEASE
from services.invoicing.credit_notes import handlers as credit_notes
from services.invoicing.customer_balance import handlers as customer_balance
from services.invoicing.invoices import handlers as invoices
from services.invoicing.pricing import handlers as pricing
from services.invoicing.renewal import handlers as renewal
from services.runtime.service import Job, Router, ServiceSpec

SPEC = ServiceSpec(
    name="invoicing",
    handlers=Router(pricing.router, invoices.router, renewal.router,
                    customer_balance.router, credit_notes.router),
    migrations=Path(__file__).parent / "migrations",
    bootstrap=bootstrap,
    # Collection attempts left behind (a crash, a source that did not answer) are resumed.
    jobs=(Job(LEASE.total_seconds() / 6, invoices.resume_stalled),),
)
