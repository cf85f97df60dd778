"""Invoicing routes (metering-invoicing.md §1.1, §4, §5): every one `admin` (§1.1: org
admins).

Pricing rules, the invoice preview and the upcoming invoice: the preview and the upcoming
invoice name their customer in `userId` (canonicalised like every user id); creating and
deleting a rule honour Idempotency-Key; the preview is a read. Invoices: changes honour
`Idempotency-Key`; finalize and void take no body; tax takes the address from the query
string (§5.10); pay takes no body (§5.5). The PDF is a `document` route: the file as invoicing made it. Tax rates
(§2.8) are ours: the reference seeded them out of band. Customer-balance adjustments mint
money (§1.1): the `mint` class.

`GET /billing/invoices/upcoming` comes before `GET /billing/invoices/{id}`: routes match in
order where aiohttp does not put static segments first."""

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
    # ---- invoices ----
    Route("POST", "/billing/invoices", invoicing.INVOICE_CREATE, "admin", user_field="userId",
          idempotent=True, status=201),
    Route("GET", "/billing/invoices", invoicing.INVOICE_LIST, "admin", source="query",
          user_field="userId"),
    Route("GET", "/billing/invoices/{id}", invoicing.INVOICE_GET, "admin", source="query",
          user_field=None),
    Route("GET", "/billing/invoices/{id}/pdf", invoicing.INVOICE_PDF, "admin", source="query",
          user_field=None, kind="document"),
    Route("POST", "/billing/invoices/{id}/finalize", invoicing.INVOICE_FINALIZE, "admin",
          source="optional", user_field=None, idempotent=True),
    Route("POST", "/billing/invoices/{id}/void", invoicing.INVOICE_VOID, "admin",
          source="optional", user_field=None, idempotent=True),
    Route("POST", "/billing/invoices/{id}/pay", invoicing.INVOICE_PAY, "admin",
          source="optional", user_field=None, idempotent=True),
    Route("POST", "/billing/invoices/{id}/line-items", invoicing.LINE_ITEM_ADD, "admin",
          user_field=None, idempotent=True),
    Route("DELETE", "/billing/invoices/{id}/line-items/{itemId}", invoicing.LINE_ITEM_REMOVE,
          "admin", source="query", user_field=None, idempotent=True),
    Route("POST", "/billing/invoices/{id}/apply-discount", invoicing.DISCOUNT_APPLY, "admin",
          user_field=None, idempotent=True),
    Route("POST", "/billing/invoices/{id}/calculate-tax", invoicing.TAX_CALCULATE, "admin",
          source="query", user_field=None, idempotent=True),
    Route("POST", "/billing/tax-rates", invoicing.TAX_RATE_CREATE, "admin", user_field=None,
          idempotent=True, status=201),
    Route("GET", "/billing/tax-rates", invoicing.TAX_RATE_LIST, "admin", source="query",
          user_field=None),
    # ---- customer balance (§7): adjusting one mints money ----
    Route("GET", "/billing/customer-balance", invoicing.CUSTOMER_BALANCE_GET, "admin",
          source="query", user_field="customerId"),
    Route("POST", "/billing/customer-balance/adjustments", invoicing.CUSTOMER_BALANCE_ADJUST,
          "mint", user_field="customerId", idempotent=True),
    Route("GET", "/billing/balance-transactions", invoicing.BALANCE_TRANSACTION_LIST, "admin",
          source="query", user_field="customerId"),
    # ---- credit notes (§6) ----
    Route("POST", "/billing/credit-notes", invoicing.CREDIT_NOTE_CREATE, "admin",
          user_field="customerId", idempotent=True, status=201),
    Route("GET", "/billing/credit-notes", invoicing.CREDIT_NOTE_LIST, "admin", source="query",
          user_field="customerId"),
    Route("GET", "/billing/credit-notes/{id}", invoicing.CREDIT_NOTE_GET, "admin",
          source="query", user_field=None),
    Route("POST", "/billing/credit-notes/{id}/void", invoicing.CREDIT_NOTE_VOID, "admin",
          source="optional", user_field=None, idempotent=True),
)
