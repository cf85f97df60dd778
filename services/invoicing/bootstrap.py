"""Invoicing's state, built once when it starts: nothing shared yet (handlers read and write
their rows, and ask metering and the ledger over the bus, per request)."""

from __future__ import annotations

from services.runtime.service import Context


async def bootstrap(ctx: Context) -> None:
    ctx.state = None
