"""Collection (metering-invoicing.md §5.5, §5.6, §9.5): the legs of an attempt to pay an
invoice, and what a void gives back. The invoice's own handlers (`invoices/handlers.py`)
hold its row lock around `begin` and `finish`; the legs run between, outside any
transaction, because each asks another service (the ledger, payments) or moves the customer
balance in a transaction of its own, and records on the attempt at once what it moved (the
wallet: what it is about to withdraw, under a key that answers the same again); what moved
nothing is written when the attempt ends."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import asyncpg

from contracts import ErrorCode, Scope
from contracts.common import IdParams
from contracts.credits import (
    CREDIT_GRANT_BURN,
    CREDIT_GRANT_CREATE,
    CREDIT_GRANT_PREVIEW,
    NO_METER,
    CreditBurnParams,
    CreditGrantCreateParams,
)
from contracts.errors import Failure
from contracts.ids import now
from contracts.invoicing import Collection
from contracts.ledger import (
    DEPOSIT_CREATE,
    WITHDRAW_AVAILABLE,
    DepositParams,
    WithdrawParams,
)
from contracts.payments import (
    PAYMENT_INTENT_CANCEL,
    PAYMENT_INTENT_CONFIRM,
    PAYMENT_INTENT_CREATE,
    PAYMENT_INTENT_GET,
    PAYMENT_METHOD_LIST,
    REFUND_CREATE,
    PaymentIntentCancelParams,
    PaymentIntentConfirmParams,
    PaymentIntentCreateParams,
    PaymentMethodListParams,
    RefundCreateParams,
)
from services.invoicing.collection import domain, store
from services.invoicing.collection.domain import Attempt
from services.invoicing.customer_balance import store as balances
from services.invoicing.customer_balance.domain import Change, payable
from services.invoicing.customer_balance.handlers import apply
from services.runtime.idempotency import fingerprint_of
from services.runtime.scopes import SERVICE
from services.runtime.service import Context

_PROVIDER_TIMEOUT = 30.0  # payments calls a card provider (conventions §10.10)


async def begin(conn: asyncpg.Connection, scope: Scope, invoice: asyncpg.Record) -> Attempt:
    """The attempt to run, under the invoice's row lock: a new one, or the one a collector
    left behind once its lease has passed; while another runs, 409."""
    org, mode = scope.org_id, scope.livemode
    domain.collectable(invoice["status"])
    until = now() + domain.LEASE
    found = await store.running(conn, org, mode, invoice["id"])
    if found is None:
        return await store.start(conn, org, mode, invoice["id"], invoice["attempt_count"] + 1,
                                 invoice["amount_due"] - invoice["amount_paid"], until)
    attempt, lease_until = found
    if lease_until > now():
        raise domain.in_progress()
    await store.lease(conn, org, mode, attempt, until)
    return attempt


async def begin_first(conn: asyncpg.Connection,
                      invoices: list[tuple[Scope, asyncpg.Record]]) -> dict[str, Attempt]:
    """Attempt 1 of each invoice, by invoice, opened in the caller's transaction: no
    other attempt can run on them yet."""
    until = now() + domain.LEASE
    for _, invoice in invoices:
        domain.collectable(invoice["status"])
    return await store.start_many(conn, [
        (scope.org_id, scope.livemode, invoice["id"], invoice["attempt_count"] + 1,
         invoice["amount_due"] - invoice["amount_paid"], until)
        for scope, invoice in invoices])


async def collect(ctx: Context, scope: Scope, invoice: asyncpg.Record, a: Attempt) -> Attempt:
    """The legs not done yet, in order, each only while something is left. A source that
    does not answer stops the attempt unfinished (503): the next pay resumes it."""
    try:
        for leg in (_credits, _customer_balance, _wallet, _card):
            a = await leg(ctx, scope, invoice, a)
        return a
    except BaseException:
        # Free the attempt for the retry at once: its recorded legs are not asked again,
        # and an unrecorded one is asked with the same key.
        await store.lease(ctx.pool, scope.org_id, scope.livemode, a, now())
        raise


async def finish(conn: asyncpg.Connection, scope: Scope, invoice: asyncpg.Record,
                 a: Attempt) -> tuple[dict[str, Any], Collection]:
    """The attempt ended, under the invoice's row lock: the invoice's changes and the
    attempt's result."""
    outcome = domain.result(a)
    await store.save(conn, scope.org_id, scope.livemode, a,
                     "succeeded" if outcome.success else "failed")
    return domain.finished(a, invoice["amount_due"], invoice["amount_paid"],
                           invoice["credit_applied"], now()), outcome


async def finish_many(conn: asyncpg.Connection,
                      ended: list[tuple[Scope, asyncpg.Record, Attempt]],
                      ) -> list[tuple[dict[str, Any], Collection]]:
    """`finish` of many attempts, their invoices locked by the caller, in one statement."""
    at = now()
    outcomes = [domain.result(a) for _, _, a in ended]
    await store.save_many(conn, [
        (scope.org_id, scope.livemode, a, "succeeded" if outcome.success else "failed")
        for (scope, _, a), outcome in zip(ended, outcomes, strict=True)])
    return [(domain.finished(a, invoice["amount_due"], invoice["amount_paid"],
                             invoice["credit_applied"], at), outcome)
            for (_, invoice, a), outcome in zip(ended, outcomes, strict=True)]


async def stalled(db: asyncpg.Pool, limit: int) -> list[tuple[str, bool, str]]:
    """(organization, mode, invoice) of attempts whose lease has passed, oldest first."""
    return await store.stalled(db, limit)


async def not_collecting(conn: asyncpg.Connection, scope: Scope, invoice_id: str) -> None:
    """No attempt runs on the invoice, else 409 (as a second pay gets): what an attempt
    takes is decided from the invoice as it started."""
    if await store.running(conn, scope.org_id, scope.livemode, invoice_id) is not None:
        raise domain.in_progress()


# ---- the legs ------------------------------------------------------------------------------


async def _credits(ctx: Context, scope: Scope, invoice: asyncpg.Record, a: Attempt) -> Attempt:
    """Grants for every meter pay what is not usage first; then each meter's usage lines
    take from the grants usable for that meter, up to the lines' amount (§9.4 Δ). One burn
    per part, each under its own key."""
    if a.credit_used is not None or a.left == 0:
        return a
    # Batched: a cycle's collections reach this leg together (so do their withdrawals).
    preview = await ctx.ask(CREDIT_GRANT_PREVIEW, _scope(scope), CreditBurnParams(
        userId=invoice["user_id"], amount=a.left, currency=invoice["currency"]),
        batched=True)
    if preview is None:
        raise unavailable_now()
    if preview.remaining == a.left:  # no grant to spend: no burn to ask for
        return replace(a, credit_used=0, credit_by_meter={})
    credited = await store.credited_by_meter(ctx.pool, scope.org_id, scope.livemode,
                                             a.invoice_id)
    caps = domain.meter_caps(invoice["line_items"], credited)
    left = a.left
    unmetered = max(0, left - sum(caps.values()))
    used = await _burn(ctx, scope, invoice, a.key("credits"), unmetered, NO_METER)
    left -= used
    by_meter: dict[str, int] = {}
    for meter, cap in caps.items():
        burnt = await _burn(ctx, scope, invoice, a.key(f"credits:{meter}"), min(cap, left),
                            meter)
        if burnt:
            by_meter[meter] = burnt
            left -= burnt
    return await _record(ctx, scope, a, credit_used=a.left - left, credit_by_meter=by_meter)


async def _burn(ctx: Context, scope: Scope, invoice: asyncpg.Record, key: str, amount: int,
                meter: str) -> int:
    """What the grants usable for `meter` paid of `amount`."""
    if amount <= 0:
        return 0
    params = CreditBurnParams(userId=invoice["user_id"], amount=amount,
                              currency=invoice["currency"], meterId=meter)
    try:
        burnt = await _ask(ctx, CREDIT_GRANT_BURN, scope, key, params)
    except Failure as refused:
        if not domain.moved_nothing(refused):
            raise
        return 0
    return amount - burnt.remaining


async def _customer_balance(ctx: Context, scope: Scope, invoice: asyncpg.Record, a: Attempt,
                            ) -> Attempt:
    """Taken and recorded in one transaction: the balance's row lock keeps two invoices from
    spending the same credit, and the attempt row says it was taken."""
    if a.balance_used is not None:
        return a
    org, mode, customer = scope.org_id, scope.livemode, invoice["user_id"]
    if a.left == 0 or await ctx.state.customer_balance(
            (org, mode, customer, invoice["currency"])) <= 0:
        return replace(a, balance_used=0)
    async with ctx.pool.acquire() as conn, conn.transaction():
        held = await balances.balance(conn, org, mode, customer, invoice["currency"], lock=True)
        used = payable(held, a.left)
        if used:
            await apply(conn, scope, Change(
                customer, invoice["currency"], -used, "invoice_payment",
                f"Invoice payment: {used} cents", invoice_id=invoice["id"],
                source_ref=a.key("balance")))
        a = replace(a, balance_used=used)
        await store.save(conn, org, mode, a)
        return a


async def _wallet(ctx: Context, scope: Scope, invoice: asyncpg.Record, a: Attempt) -> Attempt:
    """What is left, or what the wallet has available when that is less, in one request:
    the most it may take is recorded before it is asked, so a resumed attempt asks for the
    same under the same key, which answers this withdrawal again."""
    if a.wallet_used is not None:
        return a
    if a.left == 0:
        return replace(a, wallet_planned=0, wallet_used=0)
    if a.wallet_planned is None:
        a = await _record(ctx, scope, a, wallet_planned=a.left)
    try:
        withdrawn = await _ask(ctx, WITHDRAW_AVAILABLE, scope, a.key("wallet"), WithdrawParams(
            user=invoice["user_id"], currency=invoice["currency"], amount=a.wallet_planned,
            notes=f"Invoice payment: {invoice['id']}"), batched=True)
        used = withdrawn.amount
    except Failure as refused:
        if not domain.moved_nothing(refused):
            raise
        used = 0  # nothing available (402)
    # Not saved now: the legs after save before they ask anything, the attempt's end saves
    # it, and an attempt resumed before then asks the ledger again under the same key,
    # which answers this withdrawal again (as it must when a crash comes before any save).
    return replace(a, wallet_used=used)


async def _card(ctx: Context, scope: Scope, invoice: asyncpg.Record, a: Attempt) -> Attempt:
    """The remainder, all or nothing, from the customer's default payment method. A payment
    still processing keeps the attempt open (503): it is read again when resumed, never
    charged a second time."""
    if a.card_used is not None or a.left == 0:
        return a
    if a.payment_intent_id:  # resumed: the payment exists, as it is now
        intent = await _ask(ctx, PAYMENT_INTENT_GET, scope, None,
                            IdParams(id=a.payment_intent_id))
        if intent.status == domain.TO_CONFIRM:
            intent = await _confirm(ctx, scope, a, intent.id)
    else:
        methods = await ctx.ask(PAYMENT_METHOD_LIST, _scope(scope),
                                PaymentMethodListParams(customerId=invoice["user_id"]))
        default = next((m.id for m in methods or () if m.isDefault), None)
        if default is None:
            return a  # no method on file (or no payments deployed): the remainder stays due
        # The amount charged is what the legs before left: saved before it is asked for.
        await store.save(ctx.pool, scope.org_id, scope.livemode, a)
        try:
            intent = await _ask(ctx, PAYMENT_INTENT_CREATE, scope, a.key("card"),
                                PaymentIntentCreateParams(
                                    customerId=invoice["user_id"], amount=a.left,
                                    currency=invoice["currency"], paymentMethodId=default,
                                    invoiceId=invoice["id"],
                                    description=f"Invoice {invoice['id']}"),
                                timeout=_PROVIDER_TIMEOUT)
            intent = await _confirm(ctx, scope, a, intent.id)
        except Failure as refused:
            if not domain.moved_nothing(refused):
                raise
            return replace(a, card_used=0, error=refused.error.message)
    if intent.status == domain.NEEDS_CUSTOMER:  # off-session: nobody to authenticate it
        intent = await _ask(ctx, PAYMENT_INTENT_CANCEL, scope, a.key("card:cancel"),
                            PaymentIntentCancelParams(id=intent.id),
                            timeout=_PROVIDER_TIMEOUT)
    if intent.status == domain.CHARGED:
        return await _record(ctx, scope, a, card_used=a.left, payment_intent_id=intent.id,
                             card_ref=intent.providerRef or "")
    if intent.status in domain.NOT_CHARGED:
        return replace(a, card_used=0, payment_intent_id=intent.id,
                       error=intent.lastError or f"payment {intent.status}")
    await store.save(ctx.pool, scope.org_id, scope.livemode,
                     replace(a, payment_intent_id=intent.id))
    raise unavailable_now()


async def _confirm(ctx: Context, scope: Scope, a: Attempt, intent_id: str) -> Any:
    return await _ask(ctx, PAYMENT_INTENT_CONFIRM, scope, a.key("card:confirm"),
                      PaymentIntentConfirmParams(id=intent_id), timeout=_PROVIDER_TIMEOUT)


# ---- voids ---------------------------------------------------------------------------------


async def give_back(ctx: Context, conn: asyncpg.Connection, scope: Scope,
                    invoice: asyncpg.Record) -> None:
    """§5.6 Δ: every source gets back what each attempt took from it, once (each return is
    keyed after the leg it undoes), in the void's transaction."""
    await not_collecting(conn, scope, invoice["id"])
    user, currency = invoice["user_id"], invoice["currency"]
    for a in await store.to_give_back(conn, scope.org_id, scope.livemode, invoice["id"]):
        if a.credit_used:
            await _return_credit(ctx, scope, invoice, a)
        if a.balance_used:
            await apply(conn, scope, Change(
                user, currency, a.balance_used, "refund",
                f"Voided invoice: {a.balance_used} cents returned", invoice_id=a.invoice_id,
                source_ref=a.key("balance:back")))
        if a.wallet_used:
            await _ask(ctx, DEPOSIT_CREATE, scope, a.key("wallet:back"), DepositParams(
                user=user, currency=currency, amount=a.wallet_used,
                notes=f"Voided invoice {a.invoice_id}: payment returned",
                tags="invoice-reversal"))
        if a.card_used:
            await _ask(ctx, REFUND_CREATE, scope, a.key("card:back"),
                       RefundCreateParams(paymentIntentId=a.payment_intent_id),
                       timeout=_PROVIDER_TIMEOUT)
        await store.given_back(conn, scope.org_id, scope.livemode, a)


async def _return_credit(ctx: Context, scope: Scope, invoice: asyncpg.Record,
                         a: Attempt) -> None:
    """Burnt credit comes back as grants of the same amounts: what paid a meter's usage
    lines usable for that meter only (it may have come from a grant for every meter: the
    customer never gains a wider grant than was burnt)."""
    by_meter = a.credit_by_meter or {}
    parts = [("", (a.credit_used or 0) - sum(by_meter.values())), *by_meter.items()]
    for meter, amount in parts:
        if amount > 0:
            await _ask(ctx, CREDIT_GRANT_CREATE, scope,
                       a.key(f"credits:{meter}:back" if meter else "credits:back"),
                       CreditGrantCreateParams(
                           userId=invoice["user_id"], amountCents=amount,
                           currency=invoice["currency"],
                           name=f"Credit returned by voided invoice {a.invoice_id}",
                           eligibility=[meter] if meter else None))


# ---- asking the sources --------------------------------------------------------------------


def unavailable_now() -> Failure:
    """A source did not answer: nothing is lost, the same request may be sent again."""
    return Failure(ErrorCode.UNAVAILABLE, 503, "service unavailable", retryable=True)


def _scope(scope: Scope, key: str | None = None, params: Any = None) -> Scope:
    # Invoicing itself moving money for an organization: the sources see the platform,
    # whatever role the caller had (its right to pay or void was checked at the gateway).
    return Scope(org_id=scope.org_id, org_name=scope.org_name, livemode=scope.livemode,
                 actor=SERVICE, request_id=scope.request_id, idempotency_key=key,
                 fingerprint=fingerprint_of(params) if key else None,
                 deadline_ms=scope.deadline_ms)


async def _ask(ctx: Context, endpoint: Any, scope: Scope, key: str | None, params: Any, *,
               timeout: float = 2.0, batched: bool = False) -> Any:
    """`endpoint`'s result for `params`, sent under `key` (a replay moves nothing again);
    a source that does not answer is a 503 the caller may retry."""
    answer = await ctx.ask(endpoint, _scope(scope, key, params), params, timeout=timeout,
                           batched=batched)
    if answer is None:
        raise unavailable_now()
    return answer


async def _record(ctx: Context, scope: Scope, a: Attempt, **outcome: Any) -> Attempt:
    """The attempt with a leg's outcome; saved at once, with the outcomes before it, when
    money moved or is about to. What a source is asked for depends on the outcomes before
    it, so those are saved before anything is asked that moves money; an outcome that
    moved nothing can wait for the attempt's end (asked again, it moves nothing either)."""
    a = replace(a, **outcome)
    if any(outcome.get(leg) for leg in ("credit_used", "wallet_planned", "card_used")):
        await ctx.state.saved_attempts((scope.org_id, scope.livemode, a))
    return a
