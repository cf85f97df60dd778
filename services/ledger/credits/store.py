"""Credit-grant SQL, in one place. Every statement is scoped by org and mode."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import asyncpg

from contracts.common import INT64_MAX
from contracts.errors import invalid
from contracts.ids import new_id
from services.ledger.credits.domain import Grant
from services.runtime.db import fetch_page

_COLUMNS = """id, user_id, name, amount_cents, remaining_cents, currency, priority, eligibility,
    tags, effective_at, expires_at, voided, created_at"""

# A user's credit balance in a currency is at most the sum of its grants' remainders, and
# it must stay readable as an int64: a grant that would take that sum past it is not
# inserted. Creations for one user run one after another (`_LOCK_USER`, in a statement of
# its own, so that this one's snapshot sees every grant committed before the lock).
_LOCK_USER = "select pg_advisory_xact_lock(hashtextextended('credit-grants:' || $1, 0))"


_INSERT = f"""
insert into ledger.credit_grants (org_id, livemode, id, user_id, name, amount_cents,
    remaining_cents, currency, priority, eligibility, tags, effective_at, expires_at, created_at)
select $1::text, $2::boolean, $3::text, $4::text, $5::text, $6::bigint, $6::bigint,
       $7::text, $8::bigint, $9::text[], $10::text, $11::timestamptz, $12::timestamptz,
       $11::timestamptz
where $6::bigint + (select coalesce(sum(remaining_cents), 0) from ledger.credit_grants
            where org_id = $1 and livemode = $2 and user_id = $4 and currency = $7
              and not voided and remaining_cents > 0) <= {INT64_MAX}
returning id
"""

# Grants holding credit at `$4`: the SQL side of `credits.is_active` (the domain applies the
# predicate again), so reads and burns only touch rows that can matter.
_SPENDABLE = """
from ledger.credit_grants
where org_id = $1 and livemode = $2 and user_id = $3
  and not voided and remaining_cents > 0
  and effective_at <= $4 and (expires_at is null or expires_at >= $4)
"""

_ACTIVE = f"select {_COLUMNS} {_SPENDABLE}"

# The burn candidates in burn order (`credits.burn_order`; ids sort bytewise, collate "C").
# An empty meter id filters nothing; otherwise only grants for every meter or naming it.
_BURNABLE = f"""
select {_COLUMNS} {_SPENDABLE}
  and currency = $5
  and ($6 = '' or cardinality(eligibility) = 0 or $6 = any(eligibility))
order by priority, expires_at nulls last, effective_at, created_at, id
"""

# Locking the candidates in one fixed order means concurrent burns of the same user queue
# behind each other without deadlocks; a waiting burn then sees the committed remainder
# (READ COMMITTED re-checks `remaining_cents > 0` on the new row version).
_BURNABLE_FOR_UPDATE = _BURNABLE + "for update"

# The burn candidates of many (user, currency, meter) at once, each in burn order, numbered
# as asked: the previews that arrive together, in one query.
_BURNABLE_MANY = f"""
select k.i, {", ".join("g." + c.strip() for c in _COLUMNS.split(","))}
from unnest($1::text[], $2::boolean[], $3::text[], $4::text[], $5::text[]) with ordinality
     as k(org_id, livemode, user_id, currency, meter_id, i)
join ledger.credit_grants g on g.org_id = k.org_id and g.livemode = k.livemode
  and g.user_id = k.user_id and not g.voided and g.remaining_cents > 0
  and g.effective_at <= $6 and (g.expires_at is null or g.expires_at >= $6)
  and g.currency = k.currency
  and (k.meter_id = '' or cardinality(g.eligibility) = 0 or k.meter_id = any(g.eligibility))
order by k.i, g.priority, g.expires_at nulls last, g.effective_at, g.created_at, g.id
"""

_BURN = """
update ledger.credit_grants as g
set remaining_cents = g.remaining_cents - b.amount, updated_at = now()
from unnest($3::text[], $4::bigint[]) as b(id, amount)
where g.org_id = $1 and g.livemode = $2 and g.id = b.id
"""

_LIST = f"""
select {_COLUMNS}, count(*) over () as total from ledger.credit_grants
where org_id = $1 and livemode = $2 and user_id = $3
order by created_at desc, id desc
limit $4 offset $5
"""

_VOID = """
update ledger.credit_grants set voided = true, updated_at = now()
where org_id = $1 and livemode = $2 and id = $3 and not voided
returning id
"""

_VOIDED = """
select voided from ledger.credit_grants where org_id = $1 and livemode = $2 and id = $3
"""


def _grant(row: asyncpg.Record) -> Grant:
    return Grant(
        id=row["id"], user_id=row["user_id"], name=row["name"], amount=row["amount_cents"],
        remaining=row["remaining_cents"], currency=row["currency"], priority=row["priority"],
        eligibility=tuple(row["eligibility"]), tags=row["tags"],
        effective_at=row["effective_at"], expires_at=row["expires_at"], voided=row["voided"],
        created_at=row["created_at"],
    )


async def insert(conn: asyncpg.Connection, org_id: str, livemode: bool, g: Grant) -> Grant:
    """Store a new grant; returns it with its id. Refused (400) when the user's credit in
    that currency would no longer fit in an int64."""
    g = replace(g, id=new_id("cg_"))
    await conn.execute(_LOCK_USER, f"{org_id}:{livemode}:{g.user_id}")
    if await conn.fetchval(_INSERT, org_id, livemode, g.id, g.user_id, g.name, g.amount,
                           g.currency, g.priority, list(g.eligibility), g.tags, g.effective_at,
                           g.expires_at) is None:
        raise invalid("amountCents would take the user's credit balance past the maximum "
                      f"({INT64_MAX} cents)", "amountCents")
    return g


async def void(conn: asyncpg.Connection, org_id: str, livemode: bool, grant_id: str
               ) -> bool | None:
    """Void the grant. Returns False when it was voided now, True when it already was, and
    None when there is no such grant in this org and mode."""
    if await conn.fetchval(_VOID, org_id, livemode, grant_id) is not None:
        return False
    # Voiding is terminal and grants are never deleted, so this answer cannot go stale.
    return await conn.fetchval(_VOIDED, org_id, livemode, grant_id)


async def grants(db: asyncpg.Pool, org_id: str, livemode: bool, user_id: str, limit: int,
                 offset: int) -> tuple[list[Grant], int]:
    """A page of the user's grants (voided, spent and expired included), newest first, and
    how many there are in all."""
    rows, total = await fetch_page(db, _LIST, org_id, livemode, user_id, limit, offset)
    return [_grant(r) for r in rows], total


async def active(db: asyncpg.Pool, org_id: str, livemode: bool, user_id: str, now: datetime
                 ) -> list[Grant]:
    """The user's grants that hold credit at `now`, every currency."""
    return [_grant(r) for r in await db.fetch(_ACTIVE, org_id, livemode, user_id, now)]


async def burnable(db: asyncpg.Pool | asyncpg.Connection, org_id: str, livemode: bool,
                   user_id: str, currency: str, meter_id: str, now: datetime, *,
                   lock: bool) -> list[Grant]:
    """The grants a burn may spend, in burn order; with `lock`, row-locked until the
    transaction ends (burns lock, previews do not)."""
    sql = _BURNABLE_FOR_UPDATE if lock else _BURNABLE
    rows = await db.fetch(sql, org_id, livemode, user_id, now, currency, meter_id)
    return [_grant(r) for r in rows]


BurnTarget = tuple[str, bool, str, str, str]  # org_id, livemode, user_id, currency, meter_id


async def burnable_many(db: asyncpg.Pool, targets: list[BurnTarget], now: datetime,
                        ) -> list[list[Grant]]:
    """`burnable(..., lock=False)` of many targets in one query, in the order of
    `targets`."""
    rows = await db.fetch(_BURNABLE_MANY, *zip(*targets, strict=True), now)
    found: list[list[Grant]] = [[] for _ in targets]
    for r in rows:
        found[r["i"] - 1].append(_grant(r))
    return found


async def burn(conn: asyncpg.Connection, org_id: str, livemode: bool,
               burned: tuple[tuple[str, int], ...]) -> None:
    """Take each (grant id, amount) off its grant, in one statement. The rows must be locked
    by `burnable(..., lock=True)` in the same transaction."""
    if not burned:
        return
    ids, amounts = zip(*burned, strict=True)
    await conn.execute(_BURN, org_id, livemode, list(ids), list(amounts))
