"""The customer portal (subscriptions.md §3.5, §7 S3): answered by the gateway itself.

The views (`/billing/portal/overview|invoices|subscriptions|payment-methods?customerId=`)
are `admin` (§7 S3: an admin acts for any customer of the organization; end users use the
page), composed from concurrent bus requests (kind `gateway`). Portal links are made by
admins for one customer (`POST /billing/portal/links`). The page and its calls (kind
`page`, access `portal`) act for the customer of the portal session only; cancel and
reactivate take no body, adding a card takes the provider's token."""

from __future__ import annotations

from contracts.accounts import NoParams
from contracts.invoicing import InvoiceDocument
from contracts.payments import PaymentMethod
from contracts.portal import (
    PortalInvoice,
    PortalLink,
    PortalLinkParams,
    PortalOverview,
    PortalPageQuery,
    PortalPaymentMethodParams,
    PortalQuery,
    PortalSignIn,
    PortalSubscription,
    PortalTarget,
)
from contracts.subscriptions import Subscription
from services.gateway import portal, portal_page
from services.gateway.routing import Answered, Route


def _view(name: str, result: object, answer: object) -> Route:
    return Route("GET", f"/billing/portal/{name}", Answered(
        f"billing.gateway.portal.{name.replace('-', '_')}", PortalQuery, result, answer),
        "admin", source="query", user_field="customerId", kind="gateway")


def _page(method: str, path: str, subject: str, params: type, result: object, answer: object,
          *, source: str = "query", status: int = 200) -> Route:
    return Route(method, path, Answered(f"billing.gateway.portal_session.{subject}", params,
                                        result, answer),
                 "portal", source=source, user_field=None, status=status, kind="page")


PORTAL_ROUTES: tuple[Route, ...] = (
    _view("overview", PortalOverview, portal.overview),
    _view("invoices", list[PortalInvoice], portal.invoices),
    _view("subscriptions", list[PortalSubscription], portal.subscriptions),
    _view("payment-methods", list[PaymentMethod], portal.payment_methods),
    Route("POST", portal_page.LINK_PATH, Answered(
        "billing.gateway.portal_link.create", PortalLinkParams, PortalLink,
        portal_page.create_link), "admin", user_field="customerId", kind="gateway"),
    # ---- the page ----
    _page("GET", "/billing/portal", "page", PortalPageQuery, None, portal_page.page),
    _page("POST", "/billing/portal/session", "sign_in", PortalSignIn, None,
          portal_page.sign_in, source="body", status=204),
    _page("POST", "/billing/portal/session/sign-out", "sign_out", NoParams, None,
          portal_page.sign_out, status=204),
    _page("POST", "/billing/portal/session/subscriptions/{id}/cancel", "cancel",
          PortalTarget, Subscription, portal_page.cancel),
    _page("POST", "/billing/portal/session/subscriptions/{id}/reactivate", "reactivate",
          PortalTarget, Subscription, portal_page.reactivate),
    _page("POST", "/billing/portal/session/payment-methods", "payment_method.create",
          PortalPaymentMethodParams, PaymentMethod, portal_page.add_payment_method,
          source="body", status=201),
    _page("GET", "/billing/portal/session/invoices/{id}/pdf", "invoice_pdf", PortalTarget,
          InvoiceDocument, portal_page.invoice_pdf),
)
