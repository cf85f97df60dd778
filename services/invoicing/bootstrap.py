"""Invoicing's state, built once when it starts: none yet. Its areas read PostgreSQL and ask
metering and the ledger over the bus per request."""

from __future__ import annotations

from services.runtime.service import Context


async def bootstrap(ctx: Context) -> None:
    """Nothing is shared between requests yet."""
