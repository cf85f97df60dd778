"""Provider events: the SQL. The subscription a provider backs is found by (organization,
mode, provider, provider id) — CORE's unique index `subscriptions_by_provider`."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.subscriptions.subscriptions.store import COLUMNS


async def claim(conn: asyncpg.Connection, org_id: str, livemode: bool, processor: str,
                event_id: str, event_type: str, subscription_id: str | None) -> bool:
    """Whether the event is new (then it is recorded, in the caller's transaction)."""
    return await conn.fetchval(
        """insert into subscriptions.provider_events (org_id, livemode, processor, event_id,
            type, subscription_id) values ($1, $2, $3, $4, $5, $6)
        on conflict do nothing returning true""",
        org_id, livemode, processor, event_id, event_type, subscription_id) is not None


async def lock_backed(conn: asyncpg.Connection, org_id: str, livemode: bool, processor: str,
                      provider_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"""select {COLUMNS} from subscriptions.subscriptions
        where org_id = $1 and livemode = $2 and provider_type = $3 and provider_id = $4
        for update""", org_id, livemode, processor, provider_id)


# The columns a provider's word may change (reconcile/domain.changes names no others).
_CHANGEABLE = frozenset({"status", "period_start", "period_end", "cancel_at_period_end",
                         "canceled", "canceled_at", "ended_at", "trial_start", "trial_end"})


async def update(conn: asyncpg.Connection, org_id: str, livemode: bool, sub_id: str,
                 columns: dict[str, Any]) -> asyncpg.Record:
    assert columns.keys() <= _CHANGEABLE, columns.keys() - _CHANGEABLE
    sets = ", ".join(f"{name} = ${n}" for n, name in enumerate(columns, start=4))
    return await conn.fetchrow(
        f"""update subscriptions.subscriptions set {sets}, version = version + 1,
            updated_at = now()
        where org_id = $1 and livemode = $2 and id = $3 returning {COLUMNS}""",
        org_id, livemode, sub_id, *columns.values())
