"""Payment methods (payments.md §4.1–§4.2), the payment-method question the ledger asks, and
card tokenization (§4.9).

A method reached by id is checked against the caller: an end user reaches only their own
(someone else's is 404, no existence oracle). A token is vaulted at the provider that issued
it, with an idempotency key derived from the method (`provider_key`)."""

from __future__ import annotations

import dataclasses

import asyncpg
import msgspec
from msgspec import UNSET

from contracts import ErrorCode, Reply, Scope
from contracts.common import IdParams
from contracts.errors import Failure, forbidden, not_found
from contracts.ids import new_id, rfc3339
from contracts.payments import (
    CARD_TOKENIZE,
    PAYMENT_METHOD_ATTACHED,
    PAYMENT_METHOD_CREATE,
    PAYMENT_METHOD_DETACH,
    PAYMENT_METHOD_DETACHED,
    PAYMENT_METHOD_EXISTS,
    PAYMENT_METHOD_GET,
    PAYMENT_METHOD_LIST,
    PAYMENT_METHOD_SET_DEFAULT,
    PAYMENT_METHOD_UPDATE,
    PAYMENT_METHOD_UPDATED,
    BankAccount,
    BillingAddress,
    Card,
    CardTokenizeParams,
    DefaultPaymentMethodParams,
    Deleted,
    PaymentMethod,
    PaymentMethodCreateParams,
    PaymentMethodExists,
    PaymentMethodListParams,
    PaymentMethodQuery,
    PaymentMethodUpdateParams,
)
from contracts.rules import user_id
from services.payments.common import (
    event,
    issuer,
    owner,
    page,
    provider_customer,
    provider_failure,
    provider_for,
)
from services.payments.methods import domain, store
from services.payments.providers.base import ProviderError, provider_key
from services.runtime.bus import created
from services.runtime.service import Context, Router

router = Router()


# ---- the ledger's question ---------------------------------------------------------------


@router.handler(PAYMENT_METHOD_EXISTS)
async def method_exists(ctx: Context, scope: Scope, p: PaymentMethodQuery,
                        ) -> PaymentMethodExists:
    """`verifiedOnly`: a method a provider accepted (the starter-credit claim asks this)."""
    customer = user_id(p.customerId)
    if not customer:
        return PaymentMethodExists(False)
    return PaymentMethodExists(await ctx.state.method_checks(
        (scope.org_id, scope.livemode, customer, p.verifiedOnly)))


# ---- payment methods ---------------------------------------------------------------------


@router.handler(PAYMENT_METHOD_CREATE, transaction=True)
async def create_method(ctx: Context, scope: Scope, p: PaymentMethodCreateParams,
                        conn: asyncpg.Connection) -> Reply:
    new = domain.new_method(p)
    caller = owner(scope)
    if caller is not None and new.customer_id != caller:
        raise forbidden("cannot access another user's account")
    method_id = new_id("pm_")
    provider_ref, provider_type, verified = "", new.provider_type, False
    metadata = dict(new.metadata)
    token = p.providerRef.strip()
    if token:
        # The provider vaults the token on its customer: a declined card is refused (402)
        # and nothing is stored.
        provider = await provider_for(ctx, scope, token)
        try:
            customer_ref = await provider_customer(conn, scope, provider, new.customer_id)
            saved = await provider.attach_method(
                customer_ref, token,
                provider_key(scope.org_id, scope.livemode, "attach", method_id))
        except ProviderError as e:
            raise provider_failure(e) from None
        provider_ref, provider_type, verified = saved.provider_ref, provider.name, True
        metadata["verified"] = True
        if new.card is None and saved.card is not None:  # what the provider knows of it
            card = Card(brand=saved.card.brand, last4=saved.card.last4,
                        expMonth=saved.card.exp_month, expYear=saved.card.exp_year)
            new = dataclasses.replace(new, card=card, name=domain.card_name(card))
    row = await store.create_method(conn, scope.org_id, scope.livemode, method_id, new,
                                    provider_ref, provider_type, verified, metadata)
    method = method_json(row, scope.livemode)
    await event(conn, scope, PAYMENT_METHOD_ATTACHED, "payment_method", method.id,
                 method.customerId, method)
    return created(method)


@router.handler(PAYMENT_METHOD_LIST)
async def list_methods(ctx: Context, scope: Scope, p: PaymentMethodListParams,
                       ) -> list[PaymentMethod]:
    customer = user_id(p.customerId) or user_id(p.user) or None
    caller = owner(scope)
    if caller is not None:
        customer = caller  # an end user lists their own methods, whatever they ask
    rows = await store.methods(ctx.pool, scope.org_id, scope.livemode, customer,
                               p.type.strip(), page(p.limit), p.startingAfter.strip())
    return [method_json(r, scope.livemode) for r in rows]


@router.handler(PAYMENT_METHOD_GET)
async def get_method(ctx: Context, scope: Scope, p: IdParams) -> PaymentMethod:
    row = await store.method(ctx.pool, scope.org_id, scope.livemode, p.id, owner(scope))
    if row is None:
        raise not_found(domain.METHOD_NOT_FOUND)
    return method_json(row, scope.livemode)


@router.handler(PAYMENT_METHOD_UPDATE, transaction=True)
async def update_method(ctx: Context, scope: Scope, p: PaymentMethodUpdateParams,
                        conn: asyncpg.Connection) -> PaymentMethod:
    row = await store.method(conn, scope.org_id, scope.livemode, p.id, owner(scope),
                             lock=True)
    if row is None:
        raise not_found(domain.METHOD_NOT_FOUND)
    metadata = domain.merged_metadata(row["metadata"], p.metadata)
    row = await store.update_method(conn, scope.org_id, scope.livemode, p.id,
                                    p.billingAddress, metadata)
    method = method_json(row, scope.livemode)
    await event(conn, scope, PAYMENT_METHOD_UPDATED, "payment_method", method.id,
                 method.customerId, method)
    return method


@router.handler(PAYMENT_METHOD_DETACH, transaction=True)
async def detach_method(ctx: Context, scope: Scope, p: IdParams,
                        conn: asyncpg.Connection) -> Deleted:
    row = await store.method(conn, scope.org_id, scope.livemode, p.id, owner(scope),
                             lock=True)
    if row is None:
        raise not_found(domain.METHOD_NOT_FOUND)
    if row["provider_ref"]:
        # Removed at the provider that issued it, never another (a failure is retryable:
        # the method stays until the provider has let go of it).
        provider = await issuer(ctx, scope, row["provider_type"])
        try:
            await provider.detach_method(
                row["provider_ref"], provider_key(scope.org_id, scope.livemode, "detach", p.id))
        except ProviderError as e:
            raise provider_failure(e) from None
    await store.detach_method(conn, scope.org_id, scope.livemode, p.id)
    method = method_json(row, scope.livemode)
    await event(conn, scope, PAYMENT_METHOD_DETACHED, "payment_method", method.id,
                 method.customerId, msgspec.structs.replace(method, isDefault=False))
    return Deleted(True, p.id)


@router.handler(PAYMENT_METHOD_SET_DEFAULT, transaction=True)
async def set_default(ctx: Context, scope: Scope, p: DefaultPaymentMethodParams,
                      conn: asyncpg.Connection) -> PaymentMethod:
    # Found and owned first (§4.2 DO): a missing method changes nothing.
    customer = user_id(p.id)
    row = await store.method(conn, scope.org_id, scope.livemode, p.paymentMethodId.strip(),
                             owner(scope), lock=True)
    if row is None or row["customer_id"] != customer:
        raise not_found(domain.METHOD_NOT_FOUND)
    if row["is_default"]:
        return method_json(row, scope.livemode)  # already the default: nothing changes
    row = await store.make_default(conn, scope.org_id, scope.livemode, customer, row["id"])
    method = method_json(row, scope.livemode)
    await event(conn, scope, "customer.default_payment_method.updated", "payment_method",
                 method.id, method.customerId, method)
    return method


@router.handler(CARD_TOKENIZE)
async def tokenize_card(ctx: Context, scope: Scope, p: CardTokenizeParams) -> None:
    """Checked, then always refused (§4.9): clients fall back to the provider's browser SDK
    on this 503, so raw card numbers never reach a provider through us. Nothing of the card
    is kept, sent on or logged."""
    domain.check_card(p)
    raise Failure(ErrorCode.UNAVAILABLE, 503, domain.TOKENIZATION_UNAVAILABLE)


def method_json(r: asyncpg.Record, livemode: bool) -> PaymentMethod:
    return PaymentMethod(
        id=r["id"], customerId=r["customer_id"], type=r["type"], isDefault=r["is_default"],
        created=rfc3339(r["created_at"]), livemode=livemode, metadata=r["metadata"],
        name=r["name"] or UNSET,
        card=msgspec.convert(r["card"], Card) if r["card"] else UNSET,
        bankAccount=msgspec.convert(r["bank_account"], BankAccount)
        if r["bank_account"] else UNSET,
        billingAddress=msgspec.convert(r["billing_address"], BillingAddress)
        if r["billing_address"] else UNSET,
        providerRef=r["provider_ref"] or UNSET)
