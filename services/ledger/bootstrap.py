"""The ledger's state, built once when it starts: what its handlers share between
requests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from contracts.ids import now
from contracts.rules import DEFAULT_CURRENCY
from services.ledger.alerts.handlers import on_usage_batch
from services.ledger.balances import store
from services.ledger.balances.topups import TopupCreditor
from services.ledger.balances.withdrawals import AvailableWithdrawer
from services.ledger.credits import store as credits
from services.ledger.journal.recorder import JournalRecorder, KnownAccounts
from services.ledger.payment_methods.consumer import PaymentMethodEvents
from services.ledger.usage.backfill import UsageBackfill
from services.ledger.usage.recorder import UsageRecord, UsageRecorder
from services.runtime.batching import MicroBatcher
from services.runtime.bus import nats_servers
from services.runtime.entitlements import EntitlementCache
from services.runtime.service import Context


@dataclass(frozen=True, slots=True)
class Ledger:
    read_balance: MicroBatcher  # balance reads gate every metered request: concurrent ones
    #                             share one query
    usage: UsageRecorder  # concurrent usage debits share one transaction
    topups: TopupCreditor  # so do concurrent top-up credits
    withdrawals: AvailableWithdrawer  # and invoicing's concurrent wallet withdrawals
    journal: JournalRecorder  # and journal operations (payments, refunds, ...)
    backfill: UsageBackfill  # copies of debits into the api-usage meter, if any
    # The status check (a bot gate calls it on every request): balance and payment method
    # in one query, shared by concurrent checks.
    read_status: MicroBatcher
    # Credit previews (every collection asks one first): concurrent ones share one query.
    previewed_grants: MicroBatcher  # (org, mode, user, currency, meter) → (grants, at)
    payment_methods: PaymentMethodEvents  # keeps the ledger's copy of them current
    entitlements: EntitlementCache  # customers' subscribed plans (their tier), kept briefly


async def bootstrap(ctx: Context) -> None:
    backfill = UsageBackfill(ctx)

    async def after_debits(conn: asyncpg.Connection, records: list[UsageRecord]) -> None:
        # Written in the debits' own transaction, for the whole batch.
        await on_usage_batch(conn, [(r.scope, r.debit) for r in records])
        await backfill.add_copies(conn, records)

    accounts = KnownAccounts()  # every payment posts to its org's cash account: known once
    payment_methods = PaymentMethodEvents(lambda: ctx.pool,
                                          nats_servers(ctx.settings.nats_url))
    ctx.state = Ledger(
        read_balance=MicroBatcher(lambda keys: store.balance_batch(ctx.pool, keys)),
        usage=UsageRecorder(lambda: ctx.pool, ctx.keys, after_debits=after_debits),
        topups=TopupCreditor(ctx, accounts),
        withdrawals=AvailableWithdrawer(ctx),
        journal=JournalRecorder(ctx, accounts),
        backfill=backfill,
        read_status=MicroBatcher(lambda keys: store.status_batch(ctx.pool, keys,
                                                                 DEFAULT_CURRENCY)),
        previewed_grants=MicroBatcher(lambda targets: _previewed(ctx, targets)),
        payment_methods=payment_methods,
        entitlements=EntitlementCache())
    await payment_methods.start()
    ctx.on_stop(payment_methods.stop)


async def _previewed(ctx: Context, targets: list[credits.BurnTarget],
                     ) -> list[tuple[list, datetime]]:
    """The burn candidates of each target, as they are at one instant."""
    at = now()
    return [(grants, at) for grants in await credits.burnable_many(ctx.pool, targets, at)]
