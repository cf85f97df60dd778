"""The customer portal's views (subscriptions.md §3.5), composed by the gateway from
concurrent bus requests to the services that own the data: subscriptions, invoicing (the
invoices and the customer balance) and payments. Read-only (§7 R5: a customer with no
balance record has balance 0, nothing is created), and a service that fails fails the view
(§7 D9: its error, or 503 when it does not answer — never an empty list taken for the
truth)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from contracts import ErrorCode, Reply, Scope
from contracts.invoicing import (
    CUSTOMER_BALANCE_GET,
    INVOICE_LIST,
    INVOICES_PAGE,
    CustomerBalanceQuery,
    Invoice,
    InvoiceListParams,
)
from contracts.payments import PAYMENT_METHOD_LIST, PaymentMethod, PaymentMethodListParams
from contracts.portal import PortalInvoice, PortalOverview, PortalQuery, PortalSubscription
from contracts.subscriptions import (
    SUBSCRIPTION_LIST,
    Subscription,
    SubscriptionListParams,
)
from services.gateway.auth import Caller
from services.gateway.errors import ApiError
from services.gateway.pipeline import Pipeline

PAYMENT_METHODS_MAX = 1000  # the payments list's largest page: every method a customer has


def _customer(p: PortalQuery) -> str:
    if not p.customerId:
        raise ApiError(400, "customerId is required", ErrorCode.INVALID_REQUEST, "customerId")
    return p.customerId


async def overview(pipeline: Pipeline, request: web.Request, caller: Caller,
                   p: PortalQuery) -> PortalOverview:
    customer = _customer(p)
    scope = pipeline.scope(request, caller, None, None)
    balance, active, methods = await asyncio.gather(
        pipeline.ask(CUSTOMER_BALANCE_GET, scope,
                     CustomerBalanceQuery(customerId=customer, currency="usd"), request),
        pipeline.ask(SUBSCRIPTION_LIST, scope, SubscriptionListParams(
            userId=customer, status="active", limit=1), request),
        payment_methods_of(pipeline, scope, customer, request))
    return PortalOverview(customerId=customer, balance=balance.result.balance,
                          currency=balance.result.currency,
                          activeSubscriptions=_total(active, active.result.subscriptions),
                          paymentMethods=len(methods))


async def invoices(pipeline: Pipeline, request: web.Request, caller: Caller,
                   p: PortalQuery) -> Reply:
    reply = await invoices_of(pipeline, pipeline.scope(request, caller, None, None),
                              _customer(p), request, p.limit, p.offset)
    return Reply(result=[portal_invoice(i) for i in reply.result], total=reply.total,
                 more=reply.more)


async def subscriptions(pipeline: Pipeline, request: web.Request, caller: Caller,
                        p: PortalQuery) -> Reply:
    reply = await subscriptions_of(pipeline, pipeline.scope(request, caller, None, None),
                                   _customer(p), request, p.limit, p.offset)
    return Reply(result=[portal_subscription(s) for s in reply.result.subscriptions],
                 total=reply.total, more=reply.more)


async def payment_methods(pipeline: Pipeline, request: web.Request, caller: Caller,
                          p: PortalQuery) -> list[PaymentMethod]:
    return await payment_methods_of(pipeline, pipeline.scope(request, caller, None, None),
                                    _customer(p), request)


# ---- the requests, shared with the portal page ---------------------------------------------


async def invoices_of(pipeline: Pipeline, scope: Scope, customer: str, request: web.Request,
                      limit: int = 0, offset: int = 0) -> Reply:
    """A page of the customer's invoices, newest first (§3.5.2), as a list of `Invoice`.
    Invoicing lists oldest first (metering-invoicing.md §1.7): how many there are first,
    then the page counted from the newest end."""
    limit, offset = INVOICES_PAGE.apply(limit, offset)
    total = (await pipeline.ask(INVOICE_LIST, scope, InvoiceListParams(
        userId=customer, limit=1), request)).total or 0
    end = max(total - offset, 0)
    start = max(end - limit, 0)
    if end == 0:
        return Reply(result=[], total=total, more=False)
    page = await pipeline.ask(INVOICE_LIST, scope, InvoiceListParams(
        userId=customer, limit=end - start, offset=start), request)
    return Reply(result=page.result.invoices[::-1], total=total, more=start > 0)


async def subscriptions_of(pipeline: Pipeline, scope: Scope, customer: str,
                           request: web.Request, limit: int = 0, offset: int = 0) -> Reply:
    """A page of the customer's subscriptions, any status, newest first."""
    return await pipeline.ask(SUBSCRIPTION_LIST, scope, SubscriptionListParams(
        userId=customer, limit=limit, offset=offset), request)


async def payment_methods_of(pipeline: Pipeline, scope: Scope, customer: str,
                             request: web.Request) -> list[PaymentMethod]:
    """The customer's attached payment methods, newest first."""
    reply = await pipeline.ask(PAYMENT_METHOD_LIST, scope, PaymentMethodListParams(
        customerId=customer, limit=PAYMENT_METHODS_MAX), request)
    return reply.result


def _total(reply: Reply, page: list[Any]) -> int:
    return reply.total if reply.total is not None else len(page)


def portal_invoice(i: Invoice) -> PortalInvoice:
    return PortalInvoice(id=i.id, number=i.numberStr, status=i.status, amountDue=i.amountDue,
                         currency=i.currency, created=i.createdAt)


def portal_subscription(s: Subscription) -> PortalSubscription:
    return PortalSubscription(id=s.id, planId=s.planId, status=s.status,
                              periodStart=s.currentPeriodStart, periodEnd=s.currentPeriodEnd,
                              created=s.createdAt)
