"""What every payments area shares: the currency rule, list pages, whose objects a caller
may reach, how a provider's refusal becomes our error, and the billing event of a change."""

from __future__ import annotations

import re
from typing import Any

import asyncpg

from contracts import Scope
from contracts.envelope import Actor
from contracts.errors import Failure, forbidden, invalid, payment_required
from contracts.ids import new_id
from contracts.limits import Page
from contracts.rules import DEFAULT_CURRENCY, user_id
from services.payments.methods import store as methods_store
from services.payments.providers.base import Provider, ProviderError, provider_key
from services.runtime import outbox
from services.runtime.outbox import add_many_events
from services.runtime.service import Context

_PAYMENTS = Actor(kind="service", role="platform", may_mint=True)
PAGE = Page(100, 1000)  # §0.4; lists page by `startingAfter`, so only the limit applies
_CURRENCY = re.compile(r"^[a-z]{3}$")


def currency(raw: str) -> str:
    """Lower-cased; empty = usd; anything but three ASCII letters is refused (§0.5)."""
    code = raw.strip().lower() or DEFAULT_CURRENCY
    if not _CURRENCY.match(code):
        raise invalid("invalid currency", "currency")
    return code


def service_scope(org_id: str, livemode: bool) -> Scope:
    """Payments itself acting for an organization (its jobs; its postings to the ledger)."""
    return Scope(org_id=org_id, org_name="", livemode=livemode, actor=_PAYMENTS,
                 request_id=new_id("req_"))


def page(limit: int) -> int:
    return PAGE.apply(limit, 0)[0]


def owner(scope: Scope) -> str | None:
    """Whose objects a caller may reach: an end user only their own (someone else's is
    simply not found), admins and the platform any of their organization (None)."""
    actor = scope.actor
    return user_id(actor.user_id or "") if actor.role == "user" else None


def require_mint(actor: Actor) -> None:
    """Payouts and reconciliation move money: callers allowed to mint only (conventions
    §10.3), checked again here for bus callers."""
    if not actor.may_mint:
        raise forbidden()


def provider_failure(e: ProviderError, prefix: str = "") -> Failure:
    """A provider's refusal as our error: a decline is final (402 with the §1.10 text the
    provider gives); an unreachable provider is 502 and retryable (nothing was decided)."""
    if e.kind == "unavailable":
        return Failure("provider_unavailable", 502, "payment provider unavailable",
                       retryable=True)
    return (payment_required if e.kind == "declined" else invalid)(prefix + e.message)


async def event(conn: asyncpg.Connection, scope: Scope, type: str, object_type: str,
                object_id: str, customer_id: str, data: Any) -> None:
    """The change's billing event, committed with it (the outbox)."""
    await events(conn, type, object_type, [(scope, object_id, customer_id, data)])


async def events(conn: asyncpg.Connection, type: str, object_type: str,
                 changes: list[tuple[Scope, str, str, Any]]) -> None:
    """The events of many changes of one kind (a batch's), in one statement: (scope,
    object_id, customer_id, data) each."""
    await events_together(conn, [(type, object_type, scope, object_id, customer_id, data)
                          for scope, object_id, customer_id, data in changes])


Announced = tuple[str, str, Scope, str, str, Any]  # type, object_type, scope, object_id,
#                                                   customer_id, data


async def events_together(conn: asyncpg.Connection, changes: list[Announced]) -> None:
    """The events of changes of several kinds (a batch's), in one statement."""
    await add_many_events(conn, "payments", [
        (type, object_type, scope.org_id, scope.livemode, object_id, customer_id, data)
        for type, object_type, scope, object_id, customer_id, data in changes])


def new_events(changes: list[Announced]) -> list[tuple[str, bytes]]:
    """(id, payload) of each change's event, for a statement of the caller's own that adds
    them to the outbox (then `nudge_relay()`)."""
    return outbox.new_events("payments", [
        (type, object_type, scope.org_id, scope.livemode, object_id, customer_id, data)
        for type, object_type, scope, object_id, customer_id, data in changes])


def nudge_relay() -> None:
    """Events were added to the outbox by a statement of payments' own."""
    outbox.nudge("payments")


async def provider_for(ctx: Context, scope: Scope, token: str = "") -> Provider:
    """The provider that serves a new object of this organization and mode; one that
    carries a token goes to the provider that issued the token."""
    return await ctx.state.providers.for_scope(scope, token)


async def issuer(ctx: Context, scope: Scope, name: str) -> Provider:
    """The provider that issued a saved method or payment (its later calls go to it)."""
    return await ctx.state.providers.issuer(scope, name)


async def provider_customer(conn: asyncpg.Connection, scope: Scope, provider: Provider,
                            customer_id: str) -> str:
    """The provider's customer for ours, created at the provider the first time (§1.4.1 DO:
    never send our user id as a provider customer id)."""
    ref = await methods_store.provider_customer(conn, scope.org_id, scope.livemode,
                                                customer_id, provider.name)
    if ref is None:
        ref = await provider.create_customer(
            "", customer_id,
            provider_key(scope.org_id, scope.livemode, "customer", customer_id))
        ref = await methods_store.remember_provider_customer(
            conn, scope.org_id, scope.livemode, customer_id, provider.name, ref)
    return ref
