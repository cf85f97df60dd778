"""The customer portal (subscriptions.md §3.5): read-only views of one customer that the
gateway composes from the owning services (subscriptions, invoicing, payments), and the
portal links an admin hands to a customer for the portal page. Shapes only: the gateway
answers these routes itself (kind `gateway` and `page`), asking the services over the bus."""

from __future__ import annotations

from typing import Annotated

import msgspec

from contracts.common import Params
from contracts.limits import Id, UserId


class PortalQuery(Params):
    customerId: UserId = ""
    limit: int = 0  # the invoices page (at most the invoicing page, INVOICES_PAGE)
    offset: int = 0


class PortalOverview(msgspec.Struct):
    customerId: str
    balance: int  # the customer balance in cents (positive: credit the customer holds)
    currency: str
    activeSubscriptions: int  # status `active` only (trialing and past_due are not counted)
    paymentMethods: int  # attached (not detached) payment methods


class PortalInvoice(msgspec.Struct):
    id: str
    number: str  # the invoice's numberStr ("" until finalized)
    status: str
    amountDue: int
    currency: str
    created: str


class PortalSubscription(msgspec.Struct):
    id: str
    planId: str
    status: str
    periodStart: str
    periodEnd: str
    created: str


class PortalLinkParams(Params):
    customerId: UserId = ""
    returnUrl: Id = ""  # where the page's "back" link goes; http(s) only


class PortalLink(msgspec.Struct):
    url: str
    expiresAt: str


class PortalTarget(Params):
    """What a portal session acts on: a subscription, an invoice (from the path)."""

    id: Id = ""


class PortalPaymentMethodParams(Params):
    """A card added on the portal page: the provider's token (test mode: a test card number
    or token for the offline provider; live mode: what the provider's element returned)."""

    token: Id = ""


class PortalPageQuery(Params):
    # A portal link's token: exchanged for a session, then left out of the address.
    link: Annotated[str, msgspec.Meta(max_length=4096)] = ""


# An IAM access token: far longer than an id.
IamToken = Annotated[str, msgspec.Meta(max_length=16 * 1024)]


class PortalSignIn(Params):
    token: IamToken = ""
