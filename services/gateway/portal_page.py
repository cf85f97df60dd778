"""The customer portal page (`GET /billing/portal`) and the calls it makes: one customer's
plan and period, usage this period, invoices with their PDFs, payment methods (adding a
card) and cancel / reactivate — for the customer themselves, not an admin.

Who the customer is comes from a portal session: a signed cookie (`billing_portal`, an
hour), set by the page from a portal link an admin made (`POST /billing/portal/links`,
HMAC-signed, an hour; Stripe's billing-portal session is the model) or from an IAM token the
customer signs in with (`POST /billing/portal/session`: a page cannot send headers when it is
navigated to). A session reaches its customer's records in its organization and mode only:
a subscription or invoice of anyone else is 404, as if it did not exist. The data comes from
the owning services over the bus, as for the portal's API views (`portal.py`)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from contracts import Actor, ErrorCode, Scope
from contracts.common import IdParams
from contracts.ids import rfc3339
from contracts.invoicing import INVOICE_GET, INVOICE_PDF
from contracts.ledger import USAGE_LIST, UsageListParams
from contracts.payments import (
    PAYMENT_METHOD_CREATE,
    PROVIDER_SETTINGS_GET,
    PaymentMethodCreateParams,
    ProviderSettingsQuery,
)
from contracts.portal import (
    PortalLink,
    PortalLinkParams,
    PortalPageQuery,
    PortalPaymentMethodParams,
    PortalSignIn,
    PortalTarget,
)
from contracts.subscriptions import (
    SUBSCRIPTION_CANCEL,
    SUBSCRIPTION_GET,
    SUBSCRIPTION_REACTIVATE,
    SubscriptionCancelParams,
)
from services.gateway import portal, portal_html
from services.gateway.auth import Caller
from services.gateway.documents import file_response
from services.gateway.errors import ApiError
from services.gateway.http import json_response
from services.gateway.pipeline import Pipeline
from services.gateway.routing import Route

SESSION_COOKIE = "billing_portal"
LINK_SECONDS = 3600
SESSION_SECONDS = 3600
LINK_PATH = "/billing/portal/links"

_encode = msgspec.json.Encoder().encode


class Grant(msgspec.Struct, frozen=True):
    """What a portal link or session lets its bearer see: one customer of one organization,
    in one mode, until `expires` (Unix seconds)."""

    orgId: str
    orgName: str
    livemode: bool
    customer: str
    expires: int
    returnUrl: str = ""


_decode_grant = msgspec.json.Decoder(Grant).decode

# What a bad token is called, by what it was meant to be: (forged or damaged, expired).
_REFUSALS = {"link": ("invalid portal link", "portal link expired"),
             "session": ("portal session required", "portal session expired")}


class Signer:
    """Portal links and session cookies: the grant as base64url JSON, and its HMAC-SHA256
    under a key derived from the gateway's pepper, bound to the purpose (a link is not a
    session cookie, nor the other way round)."""

    def __init__(self, pepper: str):
        self._key = hmac.new(pepper.encode(), b"billing customer portal",
                             hashlib.sha256).digest()

    def sign(self, purpose: str, grant: Grant) -> str:
        payload = _b64(_encode(grant))
        return f"{payload}.{_b64(self._mac(purpose, payload))}"

    def read(self, purpose: str, token: str) -> Grant:
        """The grant `token` carries; 401 when it is not one we signed, or has expired."""
        forged, expired = _REFUSALS[purpose]
        payload, _, mac = token.partition(".")
        try:
            valid = hmac.compare_digest(_unb64(mac), self._mac(purpose, payload))
            grant = _decode_grant(_unb64(payload)) if valid else None
        except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
            grant = None
        if grant is None:
            raise ApiError(401, forged, ErrorCode.UNAUTHENTICATED)
        if grant.expires <= time.time():
            raise ApiError(401, expired, ErrorCode.UNAUTHENTICATED)
        return grant

    def _mac(self, purpose: str, payload: str) -> bytes:
        return hmac.new(self._key, f"{purpose}.{payload}".encode(), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ---- portal links (admin) ------------------------------------------------------------------


async def create_link(pipeline: Pipeline, request: web.Request, caller: Caller,
                      p: PortalLinkParams) -> PortalLink:
    """A link to the portal page for one customer, valid for an hour (kind `gateway`)."""
    if not p.customerId:
        raise ApiError(400, "customerId is required", ErrorCode.INVALID_REQUEST, "customerId")
    if p.returnUrl and urlsplit(p.returnUrl).scheme not in ("http", "https"):
        raise ApiError(400, "returnUrl must be an http or https URL",
                       ErrorCode.INVALID_REQUEST, "returnUrl")
    expires = int(time.time()) + LINK_SECONDS
    token = Signer(pipeline.settings.key_pepper).sign("link", Grant(
        caller.org_id, caller.org_name, caller.livemode, p.customerId, expires, p.returnUrl))
    page = request.path.removesuffix(LINK_PATH) + "/billing/portal"
    return PortalLink(url=f"{request.scheme}://{request.host}{page}?link={token}",
                      expiresAt=rfc3339(datetime.fromtimestamp(expires, UTC)))


# ---- the page and its calls (kind `page`) ----------------------------------------------------


class PortalPages:
    """Serves `page` routes: params decoded as for any route, the session read from its
    cookie by the answers that need one (the page itself shows a sign-in form without)."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.signer = Signer(pipeline.settings.key_pepper)

    def handler(self, route: Route) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            params = await self.pipeline.params(route, request)
            answered = await route.endpoint.answer(self, request, params)
            if isinstance(answered, web.StreamResponse):
                return answered
            return json_response(_encode(answered), route.status)

        return handle

    async def session(self, request: web.Request) -> Grant:
        """The request's portal session, its organization still enabled; else 401/403."""
        grant = self.signer.read("session", request.cookies.get(SESSION_COOKIE, ""))
        await self.pipeline.auth.existing_org(grant.orgName)
        return grant

    def scope(self, request: web.Request, grant: Grant) -> Scope:
        """The services see the customer as an end user acting for themselves."""
        actor = Actor(kind="service", role="user", user_id=grant.customer)
        return self.pipeline.scope(request, Caller(grant.orgId, grant.orgName, grant.livemode,
                                                   actor), None, None)

    async def ask(self, request: web.Request, grant: Grant, endpoint: Any,
                  params: Any) -> Any:
        return (await self.pipeline.ask(endpoint, self.scope(request, grant), params,
                                        request)).result

    def start(self, request: web.Request, grant: Grant, response: web.StreamResponse,
              ) -> web.StreamResponse:
        """`response`, setting a session of an hour for the grant's customer."""
        expires = int(time.time()) + SESSION_SECONDS
        session = msgspec.structs.replace(grant, expires=expires)
        response.set_cookie(SESSION_COOKIE, self.signer.sign("session", session),
                            max_age=SESSION_SECONDS, path=_page_path(request),
                            httponly=True, samesite="Lax", secure=request.secure)
        return response


def _page_path(request: web.Request) -> str:
    """`<prefix>/billing/portal`, whichever prefix the request came by."""
    head, found, _ = request.path.partition("/billing/portal")
    return head + found


async def page(portal_pages: PortalPages, request: web.Request,
               p: PortalPageQuery) -> web.StreamResponse:
    """A portal link is exchanged for a session (and left out of the address: 303 to the
    page); then the page, or the sign-in form without a session."""
    base = _page_path(request)
    if p.link:
        grant = portal_pages.signer.read("link", p.link)
        await portal_pages.pipeline.auth.existing_org(grant.orgName)
        return portal_pages.start(request, grant, web.Response(status=303,
                                                               headers={"Location": base}))
    try:
        grant = await portal_pages.session(request)
    except ApiError as refused:
        notice = refused.message if SESSION_COOKIE in request.cookies else ""
        return _html(portal_html.sign_in(base, notice))
    return _html(portal_html.page(base, await _view(portal_pages, request, grant)))


async def _view(portal_pages: PortalPages, request: web.Request,
                grant: Grant) -> portal_html.View:
    pipeline, scope = portal_pages.pipeline, portal_pages.scope(request, grant)
    reads: list[Any] = [
        portal.subscriptions_of(pipeline, scope, grant.customer, request),
        portal.invoices_of(pipeline, scope, grant.customer, request),
        portal.payment_methods_of(pipeline, scope, grant.customer, request),
        pipeline.ask(USAGE_LIST, scope, UsageListParams(user=grant.customer), request)]
    if grant.livemode:  # the provider's card element needs its publishable key
        reads.append(pipeline.ask(PROVIDER_SETTINGS_GET, scope, ProviderSettingsQuery(),
                                  request))
    subscriptions, invoices, methods, usage, *settings = await asyncio.gather(*reads)
    provider = settings[0].result if settings else None
    return portal_html.View(
        customer=grant.customer, livemode=grant.livemode, returnUrl=grant.returnUrl,
        subscriptions=subscriptions.result.subscriptions, invoices=invoices.result,
        paymentMethods=methods, usage=usage.result.usage,
        stripeKey=provider.stripe.publishableKey if provider and provider.stripe else "")


def _html(body: str) -> web.Response:
    response = web.Response(text=body, content_type="text/html")
    # Not framed by another site (its buttons cancel subscriptions), and the link's token
    # never leaves in a Referer.
    response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def sign_in(portal_pages: PortalPages, request: web.Request,
                  p: PortalSignIn) -> web.StreamResponse:
    """An IAM token, sent once, for a session of its user (live mode, as IAM callers)."""
    caller = await portal_pages.pipeline.auth.iam_caller(p.token)
    grant = Grant(caller.org_id, caller.org_name, caller.livemode, caller.actor.user_id or "",
                  0)
    return portal_pages.start(request, grant, web.Response(status=204))


async def sign_out(portal_pages: PortalPages, request: web.Request,
                   p: Any) -> web.StreamResponse:
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path=_page_path(request))
    return response


async def _own_subscription(portal_pages: PortalPages, request: web.Request, grant: Grant,
                            subscription_id: str) -> None:
    """404 unless the subscription is the session's customer's (no existence oracle)."""
    found = await portal_pages.ask(request, grant, SUBSCRIPTION_GET, IdParams(id=subscription_id))
    if found.userId != grant.customer:
        raise ApiError(404, "subscription not found", ErrorCode.NOT_FOUND)


async def cancel(portal_pages: PortalPages, request: web.Request, p: PortalTarget) -> Any:
    """Cancel at the end of the period (the customer keeps what they paid for)."""
    grant = await portal_pages.session(request)
    await _own_subscription(portal_pages, request, grant, p.id)
    return await portal_pages.ask(request, grant, SUBSCRIPTION_CANCEL,
                                  SubscriptionCancelParams(id=p.id, atPeriodEnd=True))


async def reactivate(portal_pages: PortalPages, request: web.Request, p: PortalTarget) -> Any:
    grant = await portal_pages.session(request)
    await _own_subscription(portal_pages, request, grant, p.id)
    return await portal_pages.ask(request, grant, SUBSCRIPTION_REACTIVATE, IdParams(id=p.id))


async def add_payment_method(portal_pages: PortalPages, request: web.Request,
                             p: PortalPaymentMethodParams) -> Any:
    """A card the provider tokenised (test mode: a test card number or token, which the
    offline provider vaults), attached to the session's customer."""
    grant = await portal_pages.session(request)
    if not p.token.strip():
        raise ApiError(400, "token is required", ErrorCode.INVALID_REQUEST, "token")
    return await portal_pages.ask(request, grant, PAYMENT_METHOD_CREATE, PaymentMethodCreateParams(
        customerId=grant.customer, providerRef=p.token.strip()))


async def invoice_pdf(portal_pages: PortalPages, request: web.Request,
                      p: PortalTarget) -> web.StreamResponse:
    grant = await portal_pages.session(request)
    invoice = await portal_pages.ask(request, grant, INVOICE_GET, IdParams(id=p.id))
    if invoice.userId != grant.customer:
        raise ApiError(404, "invoice not found", ErrorCode.NOT_FOUND)
    return file_response(await portal_pages.ask(request, grant, INVOICE_PDF, IdParams(id=p.id)))

