"""Spend alert SQL, in one place. Every query is scoped by organization and mode; `owner`
(when not None) restricts by-id queries to that user's alerts."""

from __future__ import annotations

from datetime import date

import asyncpg

from contracts.errors import invalid
from services.ledger.alerts.domain import NewAlert
from services.runtime.db import fetch_page

_COLUMNS = "id, user_id, title, threshold, currency, triggered_at, created_at, updated_at"

_LIST = f"""
select {_COLUMNS}, count(*) over () as total from ledger.spend_alerts
where org_id = $1 and livemode = $2 and user_id = $3
order by created_at desc, id desc
limit $4 offset $5
"""

_CREATE = f"""
insert into ledger.spend_alerts (org_id, livemode, id, user_id, title, threshold, currency)
values ($1, $2, $3, $4, $5, $6, $7)
returning {_COLUMNS}
"""

_BY_ID = "org_id = $1 and livemode = $2 and id = $3 and ($4::text is null or user_id = $4)"

_EXISTS = f"select true from ledger.spend_alerts where {_BY_ID}"

# Only title and threshold change: the row never leaves its organization, mode or user.
_UPDATE = f"""
update ledger.spend_alerts
set title = case when $5 = '' then title else $5 end,
    threshold = coalesce($6::bigint, threshold),
    updated_at = now()
where {_BY_ID}
returning {_COLUMNS}
"""

_DELETE = f"delete from ledger.spend_alerts where {_BY_ID} returning id"


# The usage hot path, one round trip for any number of debits: add them to each user's
# spend this UTC month and read back the new totals with the users' alerts in that currency
# that have not fired this month (usually none). Counter rows are locked in a fixed order and
# stay locked until commit, so one user's concurrent debits see consecutive totals and
# concurrent batches cannot deadlock. A month's spend saturates at the int64 maximum rather
# than overflow (which would refuse every later debit of the user that month). One row per
# account comes in, already summed and saturated (`add_spend`).
_ADD_SPEND = """
with spend as (
    insert into ledger.monthly_spend as s (org_id, livemode, user_id, currency, period, amount)
    select o, l, u, c, date_trunc('month', now() at time zone 'utc')::date, a
    from unnest($1::text[], $2::boolean[], $3::text[], $4::text[], $5::bigint[])
        as d(o, l, u, c, a)
    order by o, l, u, c
    on conflict (org_id, livemode, user_id, currency, period)
        do update set amount = least(s.amount::numeric + excluded.amount,
                                     9223372036854775807)::bigint
    returning org_id, livemode, user_id, currency, period, amount
)
select spend.org_id, spend.livemode, spend.user_id, spend.currency, spend.period,
       spend.amount, a.id, a.threshold
from spend
left join ledger.spend_alerts a
    on a.org_id = spend.org_id and a.livemode = spend.livemode
    and a.user_id = spend.user_id and a.currency = spend.currency
    and a.triggered_period is distinct from spend.period
"""

# Conditional: an alert another debit already fired this month is left alone.
_TRIGGER = f"""
update ledger.spend_alerts set triggered_at = now(), triggered_period = $4
where org_id = $1 and livemode = $2 and id = any($3::text[])
  and triggered_period is distinct from $4
returning {_COLUMNS}
"""


async def list_for_user(db: asyncpg.Pool, org_id: str, livemode: bool, user_id: str,
                        limit: int, offset: int) -> tuple[list[asyncpg.Record], int]:
    """The user's alerts, newest first."""
    return await fetch_page(db, _LIST, org_id, livemode, user_id, limit, offset)


async def create(db: asyncpg.Pool, org_id: str, livemode: bool, alert_id: str,
                 new: NewAlert) -> asyncpg.Record:
    return await db.fetchrow(_CREATE, org_id, livemode, alert_id, new.user_id, new.title,
                             new.threshold, new.currency)


async def exists(db: asyncpg.Pool, org_id: str, livemode: bool, alert_id: str,
                 owner: str | None) -> bool:
    return bool(await db.fetchval(_EXISTS, org_id, livemode, alert_id, owner))


async def update(db: asyncpg.Pool, org_id: str, livemode: bool, alert_id: str,
                 owner: str | None, title: str, threshold: int | None
                 ) -> asyncpg.Record | None:
    """Replace the title when non-empty and the threshold when given; None if not found."""
    return await db.fetchrow(_UPDATE, org_id, livemode, alert_id, owner, title, threshold)


async def delete(db: asyncpg.Pool, org_id: str, livemode: bool, alert_id: str,
                 owner: str | None) -> bool:
    return await db.fetchval(_DELETE, org_id, livemode, alert_id, owner) is not None


Account = tuple[str, bool, str, str]  # org_id, livemode, user_id, currency


async def add_spend(conn: asyncpg.Connection, debits: dict[Account, int]
                    ) -> list[asyncpg.Record]:
    """Add each account's usage debits (their sum, at most INT64_MAX) to its monthly spend.
    One row per account and alert of that account's currency not yet fired this month (`id`
    null when none): org_id, livemode, user_id, currency, period (the month), amount (the
    new total), id, threshold."""
    org_ids, modes, users, currencies = (list(c) for c in zip(*debits, strict=True))
    try:
        return await conn.fetch(_ADD_SPEND, org_ids, modes, users, currencies,
                                list(debits.values()))
    except asyncpg.NumericValueOutOfRangeError:
        raise invalid("amount is too large", "amount") from None


async def mark_triggered(conn: asyncpg.Connection, org_id: str, livemode: bool,
                         alert_ids: list[str], period: date) -> list[asyncpg.Record]:
    """Record that the alerts fired this month; returns those this call fired (an alert
    already fired this month by a concurrent debit is not returned)."""
    return await conn.fetch(_TRIGGER, org_id, livemode, alert_ids, period)
