"""Plans: the SQL of the platform-wide `subscriptions.plans` table (not per organization):
the catalog's upsert at boot, and the resolution of a plan reference."""

from __future__ import annotations

import asyncpg

from contracts.catalog import Catalog

Db = asyncpg.Pool | asyncpg.Connection

COLUMNS = ("id, slug, name, description, category, price, price_annual, price_annual_total,"
           " currency, interval, interval_count, trial_period_days, per_user, contact_sales")


async def upsert_catalog(db: Db, catalog: Catalog) -> None:
    """Every catalog plan as a row whose id is its slug; the catalog wins over earlier
    copies, except rows an operator manages (§7 D5). Replicas booting together converge."""
    plans = catalog.all()
    await db.execute(
        """insert into subscriptions.plans (id, slug, name, description, category, price,
            price_annual, price_annual_total, currency, per_user, contact_sales)
        select s, s, n, d, c, p, a, t, cur, pu, cs
        from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
                    $7::bigint[], $8::text[], $9::boolean[], $10::boolean[])
             as x(s, n, d, c, p, a, t, cur, pu, cs)
        on conflict (id) do update set name = excluded.name,
            description = excluded.description, category = excluded.category,
            price = excluded.price, price_annual = excluded.price_annual,
            price_annual_total = excluded.price_annual_total, currency = excluded.currency,
            per_user = excluded.per_user, contact_sales = excluded.contact_sales,
            updated_at = now()
        where not plans.managed and (plans.name, plans.description, plans.category,
            plans.price, plans.price_annual, plans.price_annual_total, plans.currency,
            plans.per_user, plans.contact_sales) is distinct from (excluded.name,
            excluded.description, excluded.category, excluded.price, excluded.price_annual,
            excluded.price_annual_total, excluded.currency, excluded.per_user,
            excluded.contact_sales)""",
        [p.slug for p in plans], [p.name for p in plans], [p.description for p in plans],
        [p.category for p in plans], [p.price_monthly_cents for p in plans],
        [p.price_annual_cents for p in plans], [p.price_annual_total_cents for p in plans],
        [p.currency for p in plans], [p.per_user for p in plans],
        [p.contact_sales for p in plans])


async def resolve(db: Db, ref: str) -> asyncpg.Record | None:
    """The plan `ref` names: by id, else by slug (§1.1)."""
    return await db.fetchrow(
        f"select {COLUMNS} from subscriptions.plans where id = $1 or slug = $1"
        " order by id = $1 desc limit 1", ref)
