"""Invoicing's state, built once when it starts: what its handlers share between requests
(most read and write their rows, and ask metering and the ledger over the bus, per
request)."""

from __future__ import annotations

from dataclasses import dataclass

from services.invoicing.renewal.batched import Opener, Settler
from services.runtime.service import Context


@dataclass(frozen=True, slots=True)
class Invoicing:
    renewals: Opener  # concurrent period invoices opened in one transaction
    settled_renewals: Settler  # and their attempts ended in one


async def bootstrap(ctx: Context) -> None:
    ctx.state = Invoicing(renewals=Opener(lambda: ctx.pool),
                          settled_renewals=Settler(lambda: ctx.pool))
