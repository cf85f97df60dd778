"""Invoicing's state, built once when it starts: what its handlers share between requests
(most read and write their rows, and ask metering and the ledger over the bus, per
request)."""

from __future__ import annotations

from dataclasses import dataclass

from services.invoicing.collection import store as attempts
from services.invoicing.collection.domain import Attempt
from services.invoicing.customer_balance import store as customer_balances
from services.invoicing.invoices import store as invoices
from services.invoicing.renewal.batched import Opener, Settler
from services.runtime.batching import MicroBatcher
from services.runtime.service import Context


@dataclass(frozen=True, slots=True)
class Invoicing:
    # A cycle runner asks for dozens of period invoices at once: the reads each makes
    # first (the period's invoice, if any; the customer balance collection would take
    # from) are shared by the concurrent ones, and so are their writes.
    period_invoice: MicroBatcher  # (org, mode, subscription, start, end) → row or None
    customer_balance: MicroBatcher  # (org, mode, customer, currency) → cents, unlocked
    # What a collection attempt moved, or is about to, saved before it asks for more: the
    # attempts saving at once share a statement. (org, mode, attempt) → None
    saved_attempts: MicroBatcher
    renewals: Opener  # concurrent period invoices opened in one transaction
    settled_renewals: Settler  # and their attempts ended in one


async def bootstrap(ctx: Context) -> None:
    ctx.state = Invoicing(
        period_invoice=MicroBatcher(lambda keys: invoices.period_invoices(ctx.pool, keys)),
        customer_balance=MicroBatcher(
            lambda keys: customer_balances.balances(ctx.pool, keys)),
        saved_attempts=MicroBatcher(_save_attempts(ctx)),
        renewals=Opener(lambda: ctx.pool),
        settled_renewals=Settler(lambda: ctx.pool))


def _save_attempts(ctx: Context):
    async def save(saved: list[tuple[str, bool, Attempt]]) -> list[None]:
        await attempts.save_many(ctx.pool, [(org, mode, a, None) for org, mode, a in saved])
        return [None] * len(saved)

    return save
