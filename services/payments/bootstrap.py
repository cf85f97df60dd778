"""Payments' state, built once when it starts: the provider registry handlers choose from."""

from __future__ import annotations

from dataclasses import dataclass

from services.payments.methods import store
from services.payments.selection import Providers
from services.runtime.batching import MicroBatcher
from services.runtime.service import Context


@dataclass
class PaymentsState:
    providers: Providers
    # The ledger asks this for starter-credit claims, and for status checks while its own
    # copy of the methods catches up after a start: concurrent checks share a query.
    method_checks: MicroBatcher


async def bootstrap(ctx: Context) -> None:
    ctx.state = PaymentsState(
        Providers(ctx.settings.payments_offline),
        MicroBatcher(lambda checks: store.methods_exist(ctx.pool, checks)))
