"""Invoicing routes (metering-invoicing.md §1.1, §4).

Pricing rules, the invoice preview and the upcoming invoice are class `admin`; the preview
and the upcoming invoice name their customer in `userId` (canonicalised like every user id).
Creating and deleting a rule honour Idempotency-Key; the preview is a read.
`GET /billing/invoices/upcoming` is a static path and aiohttp resolves static segments before
parameters, so it is never taken for `GET /billing/invoices/{id}`; it is listed first all the
same."""

from __future__ import annotations

from contracts import invoicing
from services.gateway.routing import Route

INVOICING_ROUTES: tuple[Route, ...] = (
    Route("GET", "/billing/invoices/upcoming", invoicing.INVOICE_UPCOMING, "admin",
          source="query", user_field="userId"),
    Route("POST", "/billing/invoice-preview", invoicing.INVOICE_PREVIEW, "admin",
          user_field="userId"),
    Route("POST", "/billing/pricing-rules", invoicing.PRICING_RULE_CREATE, "admin",
          user_field=None, idempotent=True, status=201),
    Route("GET", "/billing/pricing-rules", invoicing.PRICING_RULE_LIST, "admin",
          source="query", user_field=None),
    # The id comes from the path.
    Route("DELETE", "/billing/pricing-rules/{id}", invoicing.PRICING_RULE_DELETE, "admin",
          source="query", user_field=None, idempotent=True),
)
