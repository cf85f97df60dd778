"""Payments' state, built once when it starts: the provider registry handlers choose from."""

from __future__ import annotations

from dataclasses import dataclass

from services.payments.selection import Providers
from services.runtime.service import Context


@dataclass
class PaymentsState:
    providers: Providers


async def bootstrap(ctx: Context) -> None:
    ctx.state = PaymentsState(Providers(ctx.settings.payments_offline))
