"""Pricing-rule SQL, in one place. Every query is scoped by organization and mode."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from services.invoicing.pricing.domain import NewRule
from services.runtime.db import fetch_page

_COLUMNS = ("id, meter_id, plan_id, model, currency, unit_price, unit_price_decimal,"
            " package_size, tiers, created_at, updated_at")

_CREATE = f"""
insert into invoicing.pricing_rules (org_id, livemode, id, meter_id, plan_id, model, currency,
                                     unit_price, unit_price_decimal, package_size, tiers)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
returning {_COLUMNS}
"""

# Filters are exact; an empty one matches every rule.
_LIST = f"""
select {_COLUMNS}, count(*) over () as total from invoicing.pricing_rules
where org_id = $1 and livemode = $2
  and ($3 = '' or meter_id = $3) and ($4 = '' or plan_id = $4)
order by created_at, id
limit $5 offset $6
"""

_DELETE = """
delete from invoicing.pricing_rules where org_id = $1 and livemode = $2 and id = $3
returning id
"""

_OF_METERS = f"""
select {_COLUMNS} from invoicing.pricing_rules
where org_id = $1 and livemode = $2 and meter_id = any($3::text[])
order by created_at desc, id desc
"""


async def create(conn: asyncpg.Connection, org_id: str, livemode: bool, rule_id: str,
                 new: NewRule) -> asyncpg.Record:
    return await conn.fetchrow(_CREATE, org_id, livemode, rule_id, new.meter_id, new.plan_id,
                               new.model, new.currency, new.unit_price,
                               new.unit_price_decimal, new.package_size, new.tiers)


async def rules(db: asyncpg.Pool, org_id: str, livemode: bool, meter_id: str, plan_id: str,
                limit: int, offset: int) -> tuple[list[asyncpg.Record], int]:
    """A page of the rules, oldest first."""
    return await fetch_page(db, _LIST, org_id, livemode, meter_id, plan_id, limit, offset)


async def delete(conn: asyncpg.Connection, org_id: str, livemode: bool, rule_id: str) -> bool:
    return await conn.fetchval(_DELETE, org_id, livemode, rule_id) is not None


async def rules_of_meters(db: asyncpg.Pool, org_id: str, livemode: bool,
                          meter_ids: Sequence[str]) -> list[asyncpg.Record]:
    """Every rule of these meters, newest first."""
    return await db.fetch(_OF_METERS, org_id, livemode, list(meter_ids))
