"""Payments handlers: payment methods (payments.md §4.1–§4.2), payment and setup intents
(§3), and the payment-method lookup the ledger asks for.

Every change runs in one transaction with its billing event (outbox) and is idempotent under
the request's `Idempotency-Key`. A provider call happens while the intent's row is locked,
so two confirms of one intent charge once; its idempotency key is derived from the intent
and the attempt (`provider_key`), so a retried request never charges twice at the
provider either."""

from __future__ import annotations

import dataclasses
from typing import Any

import asyncpg
import msgspec
from msgspec import UNSET

from contracts import Reply, Scope
from contracts.errors import Failure, forbidden, invalid, not_found, payment_required
from contracts.ids import new_id, now, rfc3339
from contracts.limits import Page
from contracts.payments import (
    PAYMENT_INTENT_CANCEL,
    PAYMENT_INTENT_CAPTURE,
    PAYMENT_INTENT_CONFIRM,
    PAYMENT_INTENT_CREATE,
    PAYMENT_INTENT_GET,
    PAYMENT_INTENT_LIST,
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
    SETUP_INTENT_CANCEL,
    SETUP_INTENT_CONFIRM,
    SETUP_INTENT_CREATE,
    SETUP_INTENT_GET,
    BankAccount,
    BillingAddress,
    Card,
    DefaultPaymentMethodParams,
    Deleted,
    PaymentIntent,
    PaymentIntentCancelParams,
    PaymentIntentCaptureParams,
    PaymentIntentConfirmParams,
    PaymentIntentCreateParams,
    PaymentIntentIdParams,
    PaymentIntentListParams,
    PaymentMethod,
    PaymentMethodCreateParams,
    PaymentMethodExists,
    PaymentMethodIdParams,
    PaymentMethodListParams,
    PaymentMethodQuery,
    PaymentMethodUpdateParams,
    SetupIntent,
    SetupIntentCancelParams,
    SetupIntentConfirmParams,
    SetupIntentCreateParams,
    SetupIntentIdParams,
)
from contracts.rules import user_id
from services.payments import domain, store
from services.payments.providers.base import (
    PaymentRequest,
    Provider,
    ProviderError,
    provider_key,
)
from services.runtime.bus import created
from services.runtime.outbox import add_event
from services.runtime.service import Context, Router

router = Router()

PAGE = Page(100, 1000)  # §0.4; lists page by `startingAfter`, so only the limit applies


def _page(limit: int) -> int:
    return PAGE.apply(limit, 0)[0]


def _owner(scope: Scope) -> str | None:
    return domain.owner_filter(scope.actor.role, scope.actor.user_id)


def _provider(ctx: Context, scope: Scope) -> Provider:
    return ctx.state.providers.for_scope(scope)


def _issuer(ctx: Context, scope: Scope, name: str) -> Provider:
    return ctx.state.providers.issuer(scope, name)


def _provider_failure(e: ProviderError, prefix: str = "") -> Failure:
    """A provider's refusal as our error: a decline is final (402 with the §1.10 text the
    provider gives); an unreachable provider is 502 and retryable (nothing was decided)."""
    if e.kind == "unavailable":
        return Failure("provider_unavailable", 502, "payment provider unavailable",
                       retryable=True)
    return (payment_required if e.kind == "declined" else invalid)(prefix + e.message)


async def _event(conn: asyncpg.Connection, scope: Scope, type: str, object_type: str,
                 object_id: str, customer_id: str, data: Any) -> None:
    await add_event(conn, "payments", type=type, object_type=object_type,
                    object_id=object_id, org_id=scope.org_id, livemode=scope.livemode,
                    customer_id=customer_id, data=data)


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
    owner = _owner(scope)
    if owner is not None and new.customer_id != owner:
        raise forbidden("cannot access another user's account")
    method_id = new_id("pm_")
    provider_ref, provider_type, verified = "", new.provider_type, False
    metadata = dict(new.metadata)
    token = p.providerRef.strip()
    if token:
        # The provider vaults the token on its customer: a declined card is refused (402)
        # and nothing is stored.
        provider = _provider(ctx, scope)
        try:
            customer_ref = await _provider_customer(conn, scope, provider, new.customer_id)
            saved = await provider.attach_method(
                customer_ref, token,
                provider_key(scope.org_id, scope.livemode, "attach", method_id))
        except ProviderError as e:
            raise _provider_failure(e) from None
        provider_ref, provider_type, verified = saved.provider_ref, provider.name, True
        metadata["verified"] = True
        if new.card is None and saved.card is not None:  # what the provider knows of it
            card = Card(brand=saved.card.brand, last4=saved.card.last4,
                        expMonth=saved.card.exp_month, expYear=saved.card.exp_year)
            new = dataclasses.replace(new, card=card, name=domain.card_name(card))
    row = await store.create_method(conn, scope.org_id, scope.livemode, method_id, new,
                                    provider_ref, provider_type, verified, metadata)
    method = _method(row, scope.livemode)
    await _event(conn, scope, PAYMENT_METHOD_ATTACHED, "payment_method", method.id,
                 method.customerId, method)
    return created(method)


async def _provider_customer(conn: asyncpg.Connection, scope: Scope, provider: Provider,
                             customer_id: str) -> str:
    ref = await store.provider_customer(conn, scope.org_id, scope.livemode, customer_id,
                                        provider.name)
    if ref is None:
        ref = await provider.create_customer(
            "", customer_id,
            provider_key(scope.org_id, scope.livemode, "customer", customer_id))
        ref = await store.remember_provider_customer(conn, scope.org_id, scope.livemode,
                                                     customer_id, provider.name, ref)
    return ref


@router.handler(PAYMENT_METHOD_LIST)
async def list_methods(ctx: Context, scope: Scope, p: PaymentMethodListParams,
                       ) -> list[PaymentMethod]:
    customer = user_id(p.customerId) or user_id(p.user) or None
    owner = _owner(scope)
    if owner is not None:
        customer = owner  # an end user lists their own methods, whatever they ask
    rows = await store.methods(ctx.pool, scope.org_id, scope.livemode, customer,
                               p.type.strip(), _page(p.limit), p.startingAfter.strip())
    return [_method(r, scope.livemode) for r in rows]


@router.handler(PAYMENT_METHOD_GET)
async def get_method(ctx: Context, scope: Scope, p: PaymentMethodIdParams) -> PaymentMethod:
    row = await store.method(ctx.pool, scope.org_id, scope.livemode, p.id, _owner(scope))
    if row is None:
        raise not_found(domain.METHOD_NOT_FOUND)
    return _method(row, scope.livemode)


@router.handler(PAYMENT_METHOD_UPDATE, transaction=True)
async def update_method(ctx: Context, scope: Scope, p: PaymentMethodUpdateParams,
                        conn: asyncpg.Connection) -> PaymentMethod:
    row = await store.method(conn, scope.org_id, scope.livemode, p.id, _owner(scope),
                             lock=True)
    if row is None:
        raise not_found(domain.METHOD_NOT_FOUND)
    metadata = domain.merged_metadata(row["metadata"], p.metadata)
    row = await store.update_method(conn, scope.org_id, scope.livemode, p.id,
                                    p.billingAddress, metadata)
    method = _method(row, scope.livemode)
    await _event(conn, scope, PAYMENT_METHOD_UPDATED, "payment_method", method.id,
                 method.customerId, method)
    return method


@router.handler(PAYMENT_METHOD_DETACH, transaction=True)
async def detach_method(ctx: Context, scope: Scope, p: PaymentMethodIdParams,
                        conn: asyncpg.Connection) -> Deleted:
    row = await store.method(conn, scope.org_id, scope.livemode, p.id, _owner(scope),
                             lock=True)
    if row is None:
        raise not_found(domain.METHOD_NOT_FOUND)
    if row["provider_ref"]:
        # Removed at the provider that issued it, never another (a failure is retryable:
        # the method stays until the provider has let go of it).
        provider = _issuer(ctx, scope, row["provider_type"])
        try:
            await provider.detach_method(
                row["provider_ref"], provider_key(scope.org_id, scope.livemode, "detach", p.id))
        except ProviderError as e:
            raise _provider_failure(e) from None
    await store.detach_method(conn, scope.org_id, scope.livemode, p.id)
    method = _method(row, scope.livemode)
    await _event(conn, scope, PAYMENT_METHOD_DETACHED, "payment_method", method.id,
                 method.customerId, msgspec.structs.replace(method, isDefault=False))
    return Deleted(True, p.id)


@router.handler(PAYMENT_METHOD_SET_DEFAULT, transaction=True)
async def set_default(ctx: Context, scope: Scope, p: DefaultPaymentMethodParams,
                      conn: asyncpg.Connection) -> PaymentMethod:
    # Found and owned first (§4.2 DO): a missing method changes nothing.
    customer = user_id(p.id)
    row = await store.method(conn, scope.org_id, scope.livemode, p.paymentMethodId.strip(),
                             _owner(scope), lock=True)
    if row is None or row["customer_id"] != customer:
        raise not_found(domain.METHOD_NOT_FOUND)
    if row["is_default"]:
        return _method(row, scope.livemode)  # already the default: nothing changes
    row = await store.make_default(conn, scope.org_id, scope.livemode, customer, row["id"])
    method = _method(row, scope.livemode)
    await _event(conn, scope, "customer.default_payment_method.updated", "payment_method",
                 method.id, method.customerId, method)
    return method


def _method(r: asyncpg.Record, livemode: bool) -> PaymentMethod:
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


# ---- payment intents ---------------------------------------------------------------------


@router.handler(PAYMENT_INTENT_CREATE, transaction=True)
async def create_intent(ctx: Context, scope: Scope, p: PaymentIntentCreateParams,
                        conn: asyncpg.Connection) -> Reply:
    new = domain.new_intent(p)
    row = await store.create_intent(conn, scope.org_id, scope.livemode, new_id("pi_"), new)
    intent = _intent(row, scope.livemode)
    await _event(conn, scope, "payment_intent.created", "payment_intent", intent.id,
                 intent.customerId, intent)
    return created(intent)


@router.handler(PAYMENT_INTENT_LIST)
async def list_intents(ctx: Context, scope: Scope, p: PaymentIntentListParams,
                       ) -> list[PaymentIntent]:
    rows = await store.intents(ctx.pool, scope.org_id, scope.livemode, user_id(p.customerId),
                               _page(p.limit), p.startingAfter.strip())
    return [_intent(r, scope.livemode) for r in rows]


@router.handler(PAYMENT_INTENT_GET)
async def get_intent(ctx: Context, scope: Scope, p: PaymentIntentIdParams) -> PaymentIntent:
    return _intent(await _load(ctx.pool, scope, p.id), scope.livemode)


async def _load(db: Any, scope: Scope, intent_id: str, *, lock: bool = False,
                ) -> asyncpg.Record:
    row = await store.intent(db, scope.org_id, scope.livemode, intent_id, lock=lock)
    if row is None:
        raise not_found(domain.INTENT_NOT_FOUND)
    return row


@router.handler(PAYMENT_INTENT_CONFIRM, transaction=True)
async def confirm_intent(ctx: Context, scope: Scope, p: PaymentIntentConfirmParams,
                         conn: asyncpg.Connection) -> Any:
    row = await _load(conn, scope, p.id, lock=True)  # a second confirm waits here
    state = domain.begin_confirm(store.as_intent(row), p.paymentMethodId)
    method = await store.method(conn, scope.org_id, scope.livemode, state.payment_method_id,
                                None)
    if method is None or method["customer_id"] != row["customer_id"]:
        raise invalid(domain.METHOD_NOT_FOUND, "paymentMethodId")
    provider = _issuer(ctx, scope, method["provider_type"])
    attempts = row["attempts"]
    manual = state.capture_method == "manual"
    customer_ref = await store.provider_customer(conn, scope.org_id, scope.livemode,
                                                 row["customer_id"], provider.name)
    request = PaymentRequest(
        amount=state.amount, currency=state.currency, token=method["provider_ref"],
        customer_id=customer_ref or "", description=row["description"],
        metadata={"paymentIntentId": row["id"]},
        idempotency_key=provider_key(scope.org_id, scope.livemode, "confirm", row["id"],
                                     attempts))
    try:
        result = await (provider.authorize(request) if manual else provider.charge(request))
    except ProviderError as e:
        if e.kind == "unavailable":
            raise _provider_failure(e) from None  # rolled back: the intent can be retried
        # A decline is final for this attempt: recorded, announced, answered; the next
        # confirm is a new attempt (a new provider key).
        # e.message: a decline's §1.10 text. §3.4: 400, the intent back to
        # requires_payment_method.
        failure = invalid(("authorization failed: " if manual else "charge failed: ")
                          + e.message)
        state = domain.payment_failed(state, e.message)
        saved = await store.save_intent(conn, scope.org_id, scope.livemode, row["id"], state,
                                        attempts + 1)
        await _announce(conn, scope, saved)
        return Reply(error=failure.error)
    state = domain.charged(state, result, provider.name)
    saved = await store.save_intent(conn, scope.org_id, scope.livemode, row["id"], state,
                                    attempts)
    return await _announce(conn, scope, saved)


@router.handler(PAYMENT_INTENT_CAPTURE, transaction=True)
async def capture_intent(ctx: Context, scope: Scope, p: PaymentIntentCaptureParams,
                         conn: asyncpg.Connection) -> PaymentIntent:
    row = await _load(conn, scope, p.id, lock=True)
    state = store.as_intent(row)
    amount = domain.capture_amount(state, p.amountToCapture)  # checked before the provider
    provider = _issuer(ctx, scope, state.provider_type)
    try:
        result = await provider.capture(
            state.provider_ref, amount,
            provider_key(scope.org_id, scope.livemode, "capture", row["id"]))
    except ProviderError as e:
        raise _provider_failure(e, "capture failed: ") from None
    state = domain.captured(state, result.amount or amount)
    saved = await store.save_intent(conn, scope.org_id, scope.livemode, row["id"], state,
                                    row["attempts"])
    return await _announce(conn, scope, saved)


@router.handler(PAYMENT_INTENT_CANCEL, transaction=True)
async def cancel_intent(ctx: Context, scope: Scope, p: PaymentIntentCancelParams,
                        conn: asyncpg.Connection) -> PaymentIntent:
    row = await _load(conn, scope, p.id, lock=True)
    before = store.as_intent(row)
    state = domain.cancel(before, p.cancellationReason.strip(), now())
    if before.status == domain.REQUIRES_CAPTURE:
        # Release the hold at the provider before the intent says it is released.
        provider = _issuer(ctx, scope, before.provider_type)
        try:
            await provider.cancel(before.provider_ref,
                                  provider_key(scope.org_id, scope.livemode, "cancel", row["id"]))
        except ProviderError as e:
            raise _provider_failure(e, "cancel failed: ") from None
    saved = await store.save_intent(conn, scope.org_id, scope.livemode, row["id"], state,
                                    row["attempts"])
    return await _announce(conn, scope, saved)


async def _announce(conn: asyncpg.Connection, scope: Scope, row: asyncpg.Record,
                    ) -> PaymentIntent:
    intent = _intent(row, scope.livemode)
    await _event(conn, scope, domain.event_type(intent.status), "payment_intent", intent.id,
                 intent.customerId, intent)
    return intent


def _intent(r: asyncpg.Record, livemode: bool) -> PaymentIntent:
    return PaymentIntent(
        id=r["id"], customerId=r["customer_id"], amount=r["amount"], currency=r["currency"],
        status=r["status"], captureMethod=r["capture_method"],
        confirmationMethod=r["confirmation_method"], amountCapturable=r["amount_capturable"],
        amountReceived=r["amount_received"], created=rfc3339(r["created_at"]),
        livemode=livemode,
        paymentMethodId=r["payment_method_id"] or UNSET, invoiceId=r["invoice_id"] or UNSET,
        description=r["description"] or UNSET, providerRef=r["provider_ref"] or UNSET,
        lastError=r["last_error"] or UNSET,
        metadata=r["metadata"] if r["metadata"] is not None else UNSET,
        canceledAt=rfc3339(r["canceled_at"]) if r["canceled_at"] else UNSET,
        cancellationReason=r["cancellation_reason"] or UNSET,
        clientSecret=r["client_secret"] or UNSET)


# ---- setup intents -----------------------------------------------------------------------


@router.handler(SETUP_INTENT_CREATE, transaction=True)
async def create_setup(ctx: Context, scope: Scope, p: SetupIntentCreateParams,
                       conn: asyncpg.Connection) -> Reply:
    customer, state, usage = domain.new_setup(p.customerId, p.paymentMethodId, p.usage)
    row = await store.create_setup(conn, scope.org_id, scope.livemode, new_id("seti_"),
                                   customer, state, usage)
    return created(await _announce_setup(conn, scope, row, "setup_intent.created"))


@router.handler(SETUP_INTENT_GET)
async def get_setup(ctx: Context, scope: Scope, p: SetupIntentIdParams) -> SetupIntent:
    return _setup(await _load_setup(ctx.pool, scope, p.id), scope.livemode)


async def _load_setup(db: Any, scope: Scope, setup_id: str, *, lock: bool = False,
                      ) -> asyncpg.Record:
    row = await store.setup(db, scope.org_id, scope.livemode, setup_id, lock=lock)
    if row is None:
        raise not_found(domain.SETUP_NOT_FOUND)
    return row


@router.handler(SETUP_INTENT_CONFIRM, transaction=True)
async def confirm_setup(ctx: Context, scope: Scope, p: SetupIntentConfirmParams,
                        conn: asyncpg.Connection) -> Any:
    """The provider saves the method for later payments; the method is then verified
    (§3.7 DO). A method saved without a provider reference has nothing to verify: the
    offline provider lets it through unverified (the reference's internal path)."""
    row = await _load_setup(conn, scope, p.id, lock=True)
    state = domain.begin_setup(store.as_setup(row), p.paymentMethodId)
    method = await store.method(conn, scope.org_id, scope.livemode, state.payment_method_id,
                                None, lock=True)
    if method is None or method["customer_id"] != row["customer_id"]:
        raise invalid(domain.METHOD_NOT_FOUND, "paymentMethodId")
    provider = _issuer(ctx, scope, method["provider_type"])
    if not method["provider_ref"]:
        if provider.name != "offline":
            raise invalid("payment method has no provider reference", "paymentMethodId")
        state = domain.set_up(state, "internal", provider.name)
    else:
        try:
            customer_ref = await _provider_customer(conn, scope, provider, row["customer_id"])
            result = await provider.setup(
                customer_ref, method["provider_ref"],
                provider_key(scope.org_id, scope.livemode, "setup", row["id"]))
        except ProviderError as e:
            if e.kind == "unavailable":
                raise _provider_failure(e) from None
            saved = await store.save_setup(conn, scope.org_id, scope.livemode, row["id"],
                                           domain.setup_failed(state, e.message))
            await _announce_setup(conn, scope, saved)
            return Reply(error=invalid("setup failed: " + e.message).error)
        ref = result.method.provider_ref if result.method else method["provider_ref"]
        verified = _method(await store.mark_verified(conn, scope.org_id, scope.livemode,
                                                     method["id"], ref, provider.name),
                           scope.livemode)
        # Announced like any change of the method: the ledger learns of it from this.
        await _event(conn, scope, PAYMENT_METHOD_UPDATED, "payment_method", verified.id,
                     verified.customerId, verified)
        state = domain.set_up(state, result.setup_id, provider.name)
    saved = await store.save_setup(conn, scope.org_id, scope.livemode, row["id"], state)
    return await _announce_setup(conn, scope, saved)


@router.handler(SETUP_INTENT_CANCEL, transaction=True)
async def cancel_setup(ctx: Context, scope: Scope, p: SetupIntentCancelParams,
                       conn: asyncpg.Connection) -> SetupIntent:
    row = await _load_setup(conn, scope, p.id, lock=True)
    state = domain.cancel_setup(store.as_setup(row), p.cancellationReason.strip(), now())
    saved = await store.save_setup(conn, scope.org_id, scope.livemode, row["id"], state)
    return await _announce_setup(conn, scope, saved)


async def _announce_setup(conn: asyncpg.Connection, scope: Scope, row: asyncpg.Record,
                          event: str = "") -> SetupIntent:
    """`event`: the change's type; by default the one of the status it reached."""
    setup = _setup(row, scope.livemode)
    event = event or domain.setup_event_type(setup.status)
    await _event(conn, scope, event, "setup_intent", setup.id, setup.customerId, setup)
    return setup


def _setup(r: asyncpg.Record, livemode: bool) -> SetupIntent:
    return SetupIntent(
        id=r["id"], customerId=r["customer_id"], status=r["status"], usage=r["usage"],
        created=rfc3339(r["created_at"]), livemode=livemode,
        paymentMethodId=r["payment_method_id"] or UNSET,
        providerRef=r["provider_ref"] or UNSET, lastError=r["last_error"] or UNSET,
        metadata=r["metadata"] if r["metadata"] is not None else UNSET,
        canceledAt=rfc3339(r["canceled_at"]) if r["canceled_at"] else UNSET,
        cancellationReason=r["cancellation_reason"] or UNSET)
