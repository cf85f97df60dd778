"""Invoices (metering-invoicing.md §5.0–§5.4, §5.6–§5.10): drafts, their lines, discount and
tax, finalize (numbered, §9.11), void, the PDF; the tax rates an organization charges; and
what payments asks before refunding an invoice.

Every change runs in one transaction (`transaction=True`: idempotent under the request's
key) holding the invoice's row lock (§5.0), and commits its event (`invoice.created`,
`invoice.updated`, `invoice.finalized`, `invoice.paid`, `invoice.payment_failed`,
`invoice.voided`) through the outbox. Paying runs the collection waterfall
(`collection/`) between two such transactions; voiding gives back what it took."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
import msgspec
from msgspec import UNSET

from contracts import Reply, Scope
from contracts.common import IdParams
from contracts.errors import Failure, invalid, not_found
from contracts.ids import new_id, now, rfc3339
from contracts.invoicing import (
    DISCOUNT_APPLY,
    INVOICE_CREATE,
    INVOICE_FINALIZE,
    INVOICE_GET,
    INVOICE_LIST,
    INVOICE_MARK_UNCOLLECTIBLE,
    INVOICE_PAY,
    INVOICE_PAYMENT_GET,
    INVOICE_PDF,
    INVOICE_RETRY,
    INVOICE_VOID,
    INVOICES_PAGE,
    LINE_ITEM_ADD,
    LINE_ITEM_REMOVE,
    TAX_CALCULATE,
    TAX_RATE_CREATE,
    TAX_RATE_LIST,
    Collection,
    DiscountParams,
    Invoice,
    InvoiceCreateParams,
    InvoiceDocument,
    InvoiceList,
    InvoiceListParams,
    InvoicePaid,
    InvoicePayment,
    InvoicePaymentParams,
    LineItem,
    LineItemAddParams,
    LineItemRemoveParams,
    TaxLine,
    TaxParams,
    TaxRate,
    TaxRateCreateParams,
    TaxRateList,
    TaxRateListParams,
    TaxResult,
)
from services.invoicing.collection import handlers as collection
from services.invoicing.collection.domain import Attempt
from services.invoicing.invoices import document, domain, store
from services.runtime.bus import created, paged
from services.runtime.outbox import add_event
from services.runtime.scopes import service_scope
from services.runtime.service import Context, Router

router = Router()
log = logging.getLogger(__name__)


@router.handler(INVOICE_CREATE, transaction=True)
async def create_invoice(ctx: Context, scope: Scope, p: InvoiceCreateParams,
                         conn: asyncpg.Connection) -> Any:
    invoice_id = new_id("inv_")
    draft = domain.new_draft(p, invoice_id)
    subtotal = domain.subtotal(draft.lines)
    row = await store.create(conn, scope.org_id, scope.livemode, invoice_id, draft,
                             msgspec.to_builtins(draft.lines), subtotal,
                             domain.amount_due(subtotal, 0, 0, 0))
    return created(await announce(conn, scope, row, "invoice.created"))


@router.handler(INVOICE_LIST)
async def list_invoices(ctx: Context, scope: Scope, p: InvoiceListParams) -> Any:
    limit, offset = INVOICES_PAGE.apply(p.limit, p.offset)
    rows, total = await store.invoices(ctx.pool, scope.org_id, scope.livemode,
                                       p.userId.strip(), p.status.strip(),
                                       p.subscriptionId.strip(), limit, offset)
    items = [as_invoice(r, scope.livemode) for r in rows]
    return paged(InvoiceList(items, len(items)), total, offset, len(items))


@router.handler(INVOICE_GET)
async def get_invoice(ctx: Context, scope: Scope, p: IdParams) -> Invoice:
    return as_invoice(await load(ctx.pool, scope, p.id), scope.livemode)


@router.handler(LINE_ITEM_ADD, transaction=True)
async def add_line_item(ctx: Context, scope: Scope, p: LineItemAddParams,
                        conn: asyncpg.Connection) -> Invoice:
    row = await load(conn, scope, p.id, lock=True)
    domain.require_draft(row["status"], "can only add line items to draft invoices")
    counter = row["line_counter"] + 1
    line = domain.new_line(p, row["id"], counter, row["currency"])
    lines = domain.with_line(_lines(row), line)
    return await _updated(conn, scope, await _edit(conn, scope, row, lines=lines,
                                                   line_counter=counter))


@router.handler(LINE_ITEM_REMOVE, transaction=True)
async def remove_line_item(ctx: Context, scope: Scope, p: LineItemRemoveParams,
                           conn: asyncpg.Connection) -> Invoice:
    row = await load(conn, scope, p.id, lock=True)
    domain.require_draft(row["status"], "can only remove line items from draft invoices")
    lines = domain.without_line(_lines(row), p.itemId)
    return await _updated(conn, scope, await _edit(conn, scope, row, lines=lines))


@router.handler(DISCOUNT_APPLY, transaction=True)
async def apply_discount(ctx: Context, scope: Scope, p: DiscountParams,
                         conn: asyncpg.Connection) -> Invoice:
    row = await load(conn, scope, p.id, lock=True)
    domain.require_draft(row["status"], "can only apply discounts to draft invoices")
    amount, name = domain.discount(p, row["subtotal"])
    return await _updated(conn, scope, await _edit(conn, scope, row, discount=amount,
                                                   discount_name=name))


@router.handler(TAX_CALCULATE, transaction=True)
async def calculate_tax(ctx: Context, scope: Scope, p: TaxParams,
                        conn: asyncpg.Connection) -> TaxResult:
    """§5.10 Δ: drafts only; the address is kept, and later edits of the draft calculate
    its tax again."""
    row = await load(conn, scope, p.id, lock=True)
    where = domain.address(p.country, p.state, p.postalCode, p.city)
    domain.require_draft(row["status"], "can only calculate tax for draft invoices")
    saved = await _edit(conn, scope, row, address=where)
    invoice = await _updated(conn, scope, saved)
    return TaxResult(invoice=invoice, taxLines=_tax_lines(saved),
                     totalTax=invoice.tax)


@router.handler(INVOICE_FINALIZE, transaction=True)
async def finalize_invoice(ctx: Context, scope: Scope, p: IdParams,
                           conn: asyncpg.Connection) -> Invoice:
    """§5.4: draft → open with its amount due, and the organization's next number in this
    mode, taken in this transaction (§9.11)."""
    row = await load(conn, scope, p.id, lock=True)
    domain.finalizable(row["status"])
    number = await store.next_number(conn, scope.org_id, scope.livemode, "invoice")
    due = domain.amount_due(row["subtotal"], row["tax"], row["discount"],
                            row["credit_applied"])
    row = await store.update(conn, scope.org_id, scope.livemode, row["id"],
                             status=domain.OPEN, amount_due=due, number=number)
    return await announce(conn, scope, row, "invoice.finalized")


@router.handler(INVOICE_PAY)
async def pay_invoice(ctx: Context, scope: Scope, p: IdParams) -> bytes:
    """§5.5, §9.5: one attempt of the collection waterfall."""
    return await collect(ctx, scope, p.id)


@router.handler(INVOICE_RETRY)
async def retry_invoice(ctx: Context, scope: Scope, p: IdParams) -> bytes:
    """§9.10: a dunning retry is a pay: what is still due, from the same waterfall."""
    return await collect(ctx, scope, p.id)


async def resume_stalled(ctx: Context) -> None:
    """The job (§9.5): attempts whose collector went quiet past its lease (a crash, a
    source that did not answer) are resumed with the same keys and ended, as a pay would."""
    for org_id, livemode, invoice_id in await collection.stalled(ctx.pool, 50):
        try:
            await collect(ctx, service_scope(org_id, livemode), invoice_id)
        except Failure as failure:
            log.warning("collection of %s not resumed: %s", invoice_id, failure.error.message)


async def collect(ctx: Context, scope: Scope, invoice_id: str) -> bytes:
    """One attempt, started under the invoice's row lock (while another runs: 409). The
    reply is remembered under the request's Idempotency-Key with the end: a retry gets it
    again rather than a second attempt."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        replay = await ctx.keys.replay(conn, scope)
        if replay is not None:
            return replay
        row = await load(conn, scope, invoice_id, lock=True)
        attempt = await collection.begin(conn, scope, row)
    return await settle(ctx, scope, row, attempt)


async def settle(ctx: Context, scope: Scope, row: asyncpg.Record, attempt: Attempt,
                 reply: Callable[[Invoice, Collection], Any] = InvoicePaid) -> bytes:
    """A started attempt runs its legs (they ask other services, outside any transaction)
    and ends under the invoice's row lock: the invoice's changes, its event, and `reply`
    of the invoice and what the attempt took, remembered under the request's key."""
    attempt = await collection.collect(ctx, scope, row, attempt)
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await load(conn, scope, row["id"], lock=True)
        changes, outcome = await collection.finish(conn, scope, row, attempt)
        row = await store.update(conn, scope.org_id, scope.livemode, row["id"], **changes)
        invoice = await announce(conn, scope, row, "invoice.paid" if outcome.success
                                 else "invoice.payment_failed")
        return await ctx.keys.answer(conn, scope, Reply(result=reply(invoice, outcome)))


@router.handler(INVOICE_VOID, transaction=True)
async def void_invoice(ctx: Context, scope: Scope, p: IdParams,
                       conn: asyncpg.Connection) -> Invoice:
    """§5.6: a draft or open invoice → void; what collection took goes back to each source
    first, once (not while an attempt runs: 409)."""
    row = await load(conn, scope, p.id, lock=True)
    domain.voidable(row["status"])
    await collection.give_back(ctx, conn, scope, row)
    row = await store.update(conn, scope.org_id, scope.livemode, row["id"],
                             status=domain.VOID, voided_at=now())
    return await announce(conn, scope, row, "invoice.voided")


@router.handler(INVOICE_MARK_UNCOLLECTIBLE, transaction=True)
async def mark_uncollectible(ctx: Context, scope: Scope, p: IdParams,
                             conn: asyncpg.Connection) -> Invoice:
    """§9.10: dunning gave up on an open invoice; what earlier attempts took stays applied
    (not while an attempt runs: 409)."""
    row = await load(conn, scope, p.id, lock=True)
    domain.abandonable(row["status"])
    await collection.not_collecting(conn, scope, row["id"])
    row = await store.update(conn, scope.org_id, scope.livemode, row["id"],
                             status=domain.UNCOLLECTIBLE)
    return await announce(conn, scope, row, "invoice.marked_uncollectible")


@router.handler(INVOICE_PDF)
async def invoice_pdf(ctx: Context, scope: Scope, p: IdParams) -> InvoiceDocument:
    row = await load(ctx.pool, scope, p.id)
    invoice = as_invoice(row, scope.livemode)
    seller = scope.org_name or scope.org_id
    # Laying out pages is CPU work: off the event loop, which serves other requests.
    content = await asyncio.to_thread(document.render, invoice, seller,
                                      _tax_lines(row))
    return InvoiceDocument(filename=f"{invoice.numberStr or invoice.id}.pdf",
                           contentType="application/pdf", content=content)


@router.handler(INVOICE_PAYMENT_GET)
async def invoice_payment(ctx: Context, scope: Scope, p: InvoicePaymentParams,
                          ) -> InvoicePayment:
    """What payments refunds for `POST /refunds {invoiceId}` (payments.md §4.4): the intent
    that collected a paid invoice."""
    row = await load(ctx.pool, scope, p.invoiceId)
    if row["status"] != domain.PAID:
        raise invalid(f"can only refund paid invoices, current: {row['status']}")
    if not row["payment_intent_id"]:
        raise invalid("invoice was not paid through a payment intent")
    return InvoicePayment(paymentIntentId=row["payment_intent_id"])


# ---- tax rates -----------------------------------------------------------------------------


@router.handler(TAX_RATE_CREATE, transaction=True)
async def create_tax_rate(ctx: Context, scope: Scope, p: TaxRateCreateParams,
                          conn: asyncpg.Connection) -> Any:
    rate = domain.new_tax_rate(p)
    row = await store.create_tax_rate(conn, scope.org_id, scope.livemode, new_id("txr_"), rate,
                                      p.code.strip())
    return created(_tax_rate(row))


@router.handler(TAX_RATE_LIST)
async def list_tax_rates(ctx: Context, scope: Scope, p: TaxRateListParams) -> TaxRateList:
    rows = await store.tax_rate_rows(ctx.pool, scope.org_id, scope.livemode,
                                     p.country.strip().upper())
    return TaxRateList([_tax_rate(r) for r in rows], len(rows))


# ---- the steps -----------------------------------------------------------------------------


async def load(db: Any, scope: Scope, invoice_id: str, *, lock: bool = False,
                ) -> asyncpg.Record:
    row = await store.invoice(db, scope.org_id, scope.livemode, invoice_id.strip(), lock=lock)
    if row is None:
        raise not_found(domain.INVOICE_NOT_FOUND)
    return row


async def _edit(conn: asyncpg.Connection, scope: Scope, row: asyncpg.Record, *,
                lines: list[LineItem] | None = None, address: domain.Address | None = None,
                **changes: Any) -> asyncpg.Record:
    """A draft after an edit, with its totals again (§9.6) and, when an address is known
    (given now or kept from an earlier calculation), its tax again (§5.10 Δ)."""
    if lines is not None:
        changes["line_items"] = msgspec.to_builtins(lines)
        changes["subtotal"] = domain.subtotal(lines)
    subtotal = changes.get("subtotal", row["subtotal"])
    discount = changes.get("discount", row["discount"])
    tax = row["tax"]
    if address is None and row["tax_address"] is not None:
        address = msgspec.convert(row["tax_address"], domain.Address)
    if address is not None:
        rates = await store.tax_rates(conn, scope.org_id, scope.livemode, address.country)
        taxes = domain.tax_lines(rates, address, subtotal, discount)
        tax = domain.in_range(sum(t.amount for t in taxes))
        changes.update(tax=tax, tax_lines=msgspec.to_builtins(taxes),
                       tax_address=msgspec.to_builtins(address),
                       tax_percent=domain.tax_percent(tax, subtotal))
    changes["amount_due"] = domain.amount_due(subtotal, tax, discount, row["credit_applied"])
    return await store.update(conn, scope.org_id, scope.livemode, row["id"], **changes)


async def _updated(conn: asyncpg.Connection, scope: Scope, row: asyncpg.Record) -> Invoice:
    return await announce(conn, scope, row, "invoice.updated")


async def announce(conn: asyncpg.Connection, scope: Scope, row: asyncpg.Record,
                    type: str) -> Invoice:
    """The invoice as answered, and its event committed with the change (the outbox)."""
    invoice = as_invoice(row, scope.livemode)
    await add_event(conn, "invoicing", type=type, object_type="invoice", object_id=invoice.id,
                    org_id=scope.org_id, livemode=scope.livemode, customer_id=invoice.userId,
                    data=invoice)
    return invoice


def _lines(row: asyncpg.Record) -> list[LineItem]:
    return msgspec.convert(row["line_items"], list[LineItem])


def _tax_lines(row: asyncpg.Record) -> list[TaxLine]:
    return msgspec.convert(row["tax_lines"] or [], list[TaxLine])


def as_invoice(r: asyncpg.Record, livemode: bool) -> Invoice:
    def when(ts: Any) -> Any:
        return rfc3339(ts) if ts is not None else UNSET

    return Invoice(
        id=r["id"], userId=r["user_id"], customerEmail=r["customer_email"],
        subscriptionId=r["subscription_id"], periodStart=rfc3339(r["period_start"]),
        periodEnd=rfc3339(r["period_end"]), subtotal=r["subtotal"], tax=r["tax"],
        discount=r["discount"], creditApplied=r["credit_applied"], amountDue=r["amount_due"],
        amountPaid=r["amount_paid"], currency=r["currency"], status=r["status"],
        paymentMethod=r["payment_method"], paymentRef=r["payment_ref"], number=r["number"],
        numberStr=domain.number_str(r["number"]), attemptCount=r["attempt_count"],
        lineItems=_lines(r), createdAt=rfc3339(r["created_at"]),
        updatedAt=rfc3339(r["updated_at"]), discountName=r["discount_name"],
        amountRemaining=max(0, r["amount_due"] - r["amount_paid"]), livemode=livemode,
        metadata=r["metadata"] if r["metadata"] is not None else UNSET,
        dueDate=when(r["due_date"]), paidAt=when(r["paid_at"]), voidedAt=when(r["voided_at"]))


def _tax_rate(r: asyncpg.Record) -> TaxRate:
    return TaxRate(id=r["id"], country=r["country"], state=r["state"], rate=float(r["rate"]),
                   name=r["name"], code=r["code"],
                   jurisdiction=domain.jurisdiction(r["country"], r["state"]),
                   createdAt=rfc3339(r["created_at"]))
