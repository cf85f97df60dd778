"""Period invoices opened together, and settled together.

A cycle runner asks for dozens of period invoices at once, and each is numbered under the
organization's invoice-number row: alone, every renewal would hold that row until its own
commit, one after the other. Renewals that arrive together share one transaction instead:
their numbers are taken with one counter update per organization (in the batch's order:
gapless and sequential as ever), their invoices inserted open and numbered, announced
(created, then finalized), and their attempt 1 started. A period invoiced before — by an
earlier renewal, a concurrent one, or a duplicate in the same batch — is answered with its
invoice, and collected by nobody here.

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
        # The first draft of each period makes its invoice, unless the period has one.
        first: dict[PeriodKey, Draft] = {}
        for d in drafts:
            first.setdefault(d.period, d)
        ids = {key: new_id("inv_") for key in first}
        before: dict[PeriodKey, asyncpg.Record] = {}  # periods invoiced before: as they are
        for _ in range(3):
            try:
                async with self._pool().acquire() as conn, conn.transaction():
                    new = [key for key in first if key not in before]
                    opened = await _opened(conn, [(key, first[key], ids[key]) for key in new])
                    invoiced = {key: invoices.as_invoice(row, key[1])
                                for key, row in opened.items()}
                    await _announce(conn, [(first[key].scope, invoiced[key]) for key in new])
                    collected = [(first[key].scope, opened[key]) for key in new
                                 if first[key].collect]
                    attempts = await collection.begin_first(conn, collected) if collected else {}
                break
            except _PeriodTaken as taken:  # the numbers taken went back with the rollback
                async with self._pool().acquire() as conn:
                    found = await store.period_invoices(conn, taken.periods)
                before.update((key, row) for key, row in zip(taken.periods, found, strict=True)
                              if row is not None)
        else:
            raise RuntimeError("periods kept being invoiced by other renewals")
        rows = {**before, **opened}
        invoiced.update((key, invoices.as_invoice(row, key[1])) for key, row in before.items())
        return [Opened(rows[d.period], invoiced[d.period], created=mine,
                       attempt=attempts.get(ids[d.period]) if mine else None)
                for d in drafts
                for mine in [d is first[d.period] and d.period not in before]]


class _PeriodTaken(Exception):
    """Periods of the batch were invoiced meanwhile (another replica's renewals)."""

    def __init__(self, periods: list[PeriodKey]):
        super().__init__(periods)
        self.periods = periods


async def _opened(conn: asyncpg.Connection, new: list[tuple[PeriodKey, Draft, str]],
                  ) -> dict[PeriodKey, asyncpg.Record]:
    """The periods' invoices (period, draft, invoice id) inserted open with their numbers
    (§9.11): each organization's next ones in the order the renewals came, one counter
    update each, the counters locked in one order (concurrent batches wait for each other
    rather than deadlock). A period invoiced meanwhile would leave a gap in the numbers: the
    batch is rolled back (`_PeriodTaken`), numbers and all."""
    if not new:
        return {}
    by_org: dict[tuple[str, bool], list[tuple[PeriodKey, Draft, str]]] = defaultdict(list)
    for item in new:
        by_org[item[0][:2]].append(item)
    rows = []
    for (org, mode), made in sorted(by_org.items()):
        last = await store.next_number(conn, org, mode, "invoice", len(made))
        rows += [_invoice_row(d, invoice_id, number) for number, (_, d, invoice_id)
                 in enumerate(made, start=last - len(made) + 1)]
    inserted = {r["id"]: r for r in await store.create_for_periods(conn, rows)}
    if len(inserted) < len(new):
        raise _PeriodTaken([key for key, _, invoice_id in new if invoice_id not in inserted])
    return {key: inserted[invoice_id] for key, _, invoice_id in new}


def _invoice_row(d: Draft, invoice_id: str, number: int) -> tuple:
    subtotal = invoices_domain.subtotal(d.lines)
    w = d.when
    return (d.scope.org_id, d.scope.livemode, invoice_id, w.subscription_id, w.user_id,
            w.currency, w.start, w.end, msgspec.json.encode(d.lines).decode(), subtotal,
            invoices_domain.amount_due(subtotal, 0, 0, 0), number)


async def _announce(conn: asyncpg.Connection, made: list[tuple[Scope, Invoice]]) -> None:
    """Each new invoice's invoice.created (as the draft it would have been: unnumbered) and
    invoice.finalized (numbered), committed with them (the outbox), in one statement: every
    created before the finalized."""
    if not made:
        return
    await add_many_events(conn, "invoicing", [
        *(("invoice.created", "invoice", s.org_id, s.livemode, opened.id, opened.userId,
           msgspec.structs.replace(opened, status=invoices_domain.DRAFT, number=0,
                                   numberStr=invoices_domain.number_str(0)))
          for s, opened in made),
        *(("invoice.finalized", "invoice", s.org_id, s.livemode, opened.id, opened.userId,
           opened) for s, opened in made)])


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
