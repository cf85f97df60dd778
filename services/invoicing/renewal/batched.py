"""Period invoices opened together, and settled together.

A cycle runner asks for dozens of period invoices at once, and each is numbered under the
organization's invoice-number row: alone, every renewal would hold that row until its own
commit, one after the other. Renewals that arrive together share one transaction instead:
their drafts are inserted, numbered with one counter update per organization (in the
batch's order: gapless and sequential as ever), opened, announced, and their attempt 1
started. A period invoiced before — by an earlier renewal, a concurrent one, or a duplicate
in the same batch — is answered with its invoice, and collected by nobody here.

Should the shared transaction fail, each renewal is written alone
(`each_alone_on_failure`): a failed commit that did write finds its invoices, which are
then answered as made before; the attempts they started are resumed by the recovery job.

Their attempts end together as well: once its legs are done, each renewal's attempt is
recorded and its invoice changed (paid, or still open) and announced in a transaction
shared with the renewals ending meanwhile."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import msgspec

from contracts import Scope
from contracts.ids import new_id
from contracts.invoicing import Invoice, LineItem, PeriodInvoice
from services.invoicing.collection import handlers as collection
from services.invoicing.collection.domain import Attempt
from services.invoicing.invoices import domain as invoices_domain
from services.invoicing.invoices import handlers as invoices
from services.invoicing.invoices import store
from services.invoicing.renewal.domain import Period
from services.runtime.batching import MicroBatcher, each_alone_on_failure
from services.runtime.outbox import add_many_events

PeriodKey = tuple[str, bool, str, datetime, datetime]  # org, mode, subscription, start, end


@dataclass(frozen=True, slots=True)
class Draft:
    """A period invoice to open: who asks, the checked period, its lines."""

    scope: Scope
    when: Period
    lines: list[LineItem]
    collect: bool

    @property
    def period(self) -> PeriodKey:
        w = self.when
        return self.scope.org_id, self.scope.livemode, w.subscription_id, w.start, w.end


@dataclass(frozen=True, slots=True)
class Opened:
    """The period's invoice as it is now; `attempt` is the attempt 1 this renewal started
    (None when the invoice was made before, or it is not to be collected)."""

    row: asyncpg.Record
    invoice: Invoice
    created: bool
    attempt: Attempt | None


class Opener:
    def __init__(self, pool: Callable[[], asyncpg.Pool]):
        self._pool = pool
        # One batch at a time: every batch takes its organizations' number rows, and would
        # queue on them anyway.
        self._batch = MicroBatcher(each_alone_on_failure(self._open_together), serial=True)

    async def open(self, draft: Draft) -> Opened:
        return await self._batch(draft)

    async def _open_together(self, drafts: list[Draft]) -> list[Opened]:
        # The first draft of each period makes its invoice; inserted in the periods' order,
        # so concurrent batches (other replicas) wait for each other rather than deadlock.
        first: dict[PeriodKey, Draft] = {}
        for d in drafts:
            first.setdefault(d.period, d)
        ids = {key: new_id("inv_") for key in first}
        async with self._pool().acquire() as conn, conn.transaction():
            inserted = {r["id"]: r for r in await store.create_for_periods(conn, [
                _draft_row(d, ids[key]) for key, d in sorted(first.items())])}
            new = [key for key in first if ids[key] in inserted]
            rows = await _numbered(conn, [(key, ids[key]) for key in new])
            for key in first.keys() - rows.keys():  # invoiced before: its invoice as it is
                rows[key] = await store.period_invoice(conn, *key)
            invoiced = {key: invoices.as_invoice(row, key[1]) for key, row in rows.items()}
            await _announce(conn, [(first[key].scope, inserted[ids[key]], invoiced[key])
                                   for key in new])
            collected = [(first[key].scope, rows[key]) for key in new if first[key].collect]
            attempts = await collection.begin_first(conn, collected) if collected else {}
        return [Opened(rows[d.period], invoiced[d.period], created=mine,
                       attempt=attempts.get(ids[d.period]) if mine else None)
                for d in drafts
                for mine in [d is first[d.period] and ids[d.period] in inserted]]


def _draft_row(d: Draft, invoice_id: str) -> tuple:
    subtotal = invoices_domain.subtotal(d.lines)
    w = d.when
    return (d.scope.org_id, d.scope.livemode, invoice_id, w.subscription_id, w.user_id,
            w.currency, w.start, w.end, msgspec.json.encode(d.lines).decode(), subtotal,
            invoices_domain.amount_due(subtotal, 0, 0, 0))


async def _numbered(conn: asyncpg.Connection, new: list[tuple[PeriodKey, str]],
                    ) -> dict[PeriodKey, asyncpg.Record]:
    """The new drafts (period, invoice id) open with their numbers (§9.11): each
    organization's next ones in the order the renewals came, one counter update each."""
    if not new:
        return {}
    by_org: dict[tuple[str, bool], list[tuple[PeriodKey, str]]] = defaultdict(list)
    for key, invoice_id in new:
        by_org[key[:2]].append((key, invoice_id))
    numbers = []
    for (org, mode), drafts in sorted(by_org.items()):  # counters locked in one order
        last = await store.next_number(conn, org, mode, "invoice", len(drafts))
        numbers += [(org, mode, invoice_id, number) for number, (_, invoice_id)
                    in enumerate(drafts, start=last - len(drafts) + 1)]
    opened = {r["id"]: r for r in await store.open_numbered(conn, numbers)}
    return {key: opened[invoice_id] for key, invoice_id in new}


async def _announce(conn: asyncpg.Connection,
                    made: list[tuple[Scope, asyncpg.Record, Invoice]]) -> None:
    """Each new invoice's invoice.created (the draft) and invoice.finalized (numbered),
    committed with them (the outbox), in one statement: every created before the
    finalized."""
    if not made:
        return
    await add_many_events(conn, "invoicing", [
        *(("invoice.created", "invoice", s.org_id, s.livemode, draft["id"], draft["user_id"],
           invoices.as_invoice(draft, s.livemode)) for s, draft, _ in made),
        *(("invoice.finalized", "invoice", s.org_id, s.livemode, opened.id, opened.userId,
           opened) for s, _, opened in made)])


@dataclass(frozen=True, slots=True)
class Collected:
    """A renewal's attempt whose legs are done."""

    scope: Scope
    invoice_id: str
    attempt: Attempt


class Settler:
    def __init__(self, pool: Callable[[], asyncpg.Pool]):
        self._pool = pool
        # One batch at a time, the attempts ending meanwhile forming the next: a cycle's
        # renewals end a few at a time, and would each hold a connection otherwise.
        self._batch = MicroBatcher(each_alone_on_failure(self._settle_together), serial=True)

    async def settle(self, collected: Collected) -> PeriodInvoice:
        return await self._batch(collected)

    async def _settle_together(self, collected: list[Collected]) -> list[PeriodInvoice]:
        """The attempts end under their invoices' row locks (as `invoices.settle`)."""
        async with self._pool().acquire() as conn, conn.transaction():
            rows = await store.locked(conn, [(c.scope.org_id, c.scope.livemode, c.invoice_id)
                                             for c in collected])
            ended = await collection.finish_many(
                conn, [(c.scope, rows[c.invoice_id], c.attempt) for c in collected])
            changed = await store.attempts_ended(conn, [
                (c.scope.org_id, c.scope.livemode, c.invoice_id, changes)
                for c, (changes, _) in zip(collected, ended, strict=True)])
            invoiced = {c.invoice_id: invoices.as_invoice(changed[c.invoice_id],
                                                          c.scope.livemode)
                        for c in collected}
            await add_many_events(conn, "invoicing", [
                ("invoice.paid" if outcome.success else "invoice.payment_failed", "invoice",
                 c.scope.org_id, c.scope.livemode, c.invoice_id, invoiced[c.invoice_id].userId,
                 invoiced[c.invoice_id])
                for c, (_, outcome) in zip(collected, ended, strict=True)])
        return [PeriodInvoice(invoiced[c.invoice_id], outcome, True)
                for c, (_, outcome) in zip(collected, ended, strict=True)]
