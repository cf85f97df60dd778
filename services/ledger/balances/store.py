"""The ledger's SQL, in one place.

Every money movement goes through `post`, inside the caller's transaction: one row in
`transactions` (both legs of the double entry) and an atomic increment of the customer's
stored balance. Customers with expiring money also have lots (see migration 004).
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from contracts.errors import invalid
from contracts.ids import new_id
from services.ledger.balances import domain
from services.ledger.balances.domain import USAGE_TAG, Movement, Refundable
from services.ledger.journal import store as journal
from services.ledger.journal.domain import Entry
from services.runtime.db import fetch_page

# Insert the movement and apply it to the customer's stored balance in one statement: one
# round trip, and the balance row changes by an atomic increment (no read-modify-write).
_POST = """
with t as (
    insert into ledger.transactions (org_id, livemode, id, type, user_id, debit_account,
        credit_account, currency, amount, notes, tags, metadata, expires_at, reverses)
    values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
    returning created_at
)
insert into ledger.balances as b (org_id, livemode, user_id, currency, balance)
values ($1, $2, $5, $8, $15)
on conflict (org_id, livemode, user_id, currency)
    do update set balance = b.balance + excluded.balance, updated_at = now()
returning (select created_at from t), b.balance, b.expiring
"""

# Open lots are consumed soonest-expiring first (ties by id, bytewise, as `verify_lots`
# replays them). The caller holds the balance row's lock (taken by `_POST`), which
# serialises every change to this customer's lots.
_CONSUME_LOTS = """
with open as (
    select id, remaining,
           coalesce(sum(remaining) over (order by expires_at, id collate "C"
                    rows between unbounded preceding and 1 preceding), 0) as before
    from ledger.lots
    where org_id = $1 and livemode = $2 and user_id = $3 and currency = $4
      and remaining > 0 and expires_at > now()
), taken as (
    update ledger.lots l set remaining = l.remaining - least(o.remaining, $5 - o.before)
    from open o
    where l.org_id = $1 and l.livemode = $2 and l.id = o.id and o.before < $5
    returning least(o.remaining, $5 - o.before) as took
)
update ledger.balances set expiring = expiring - (select coalesce(sum(took), 0) from taken)
where org_id = $1 and livemode = $2 and user_id = $3 and currency = $4
"""

_OPEN_LOT = """
with lot as (
    insert into ledger.lots (org_id, livemode, id, user_id, currency, amount, remaining,
                             expires_at)
    values ($1, $2, $3, $4, $5, $6, $7, $8)
    returning remaining
)
update ledger.balances set expiring = expiring + (select remaining from lot)
where org_id = $1 and livemode = $2 and user_id = $4 and currency = $5
"""

# What a read must not count: the unspent part of lots past their expiry that the sweeper
# has not lapsed yet. Free for customers without expiring money (`expiring` = 0).
_DUE = """
case when b.expiring > 0 then coalesce((
    select sum(l.remaining)::bigint from ledger.lots l
    where l.org_id = b.org_id and l.livemode = b.livemode and l.user_id = b.user_id
      and l.currency = b.currency and l.remaining > 0 and l.expires_at <= now()), 0)
else 0 end
"""


_BALANCE_BATCH = f"""
select k.i, b.balance - {_DUE} as balance, b.holds
from unnest($1::text[], $2::boolean[], $3::text[], $4::text[]) with ordinality
     as k(org_id, livemode, user_id, currency, i)
join ledger.balances b on b.org_id = k.org_id and b.livemode = k.livemode
                      and b.user_id = k.user_id and b.currency = k.currency
"""

# The status check: the balance in the default currency and whether the customer has a
# live payment method (what payments' events told the ledger, payment_methods/), in one
# query for many at once.
_STATUS_BATCH = f"""
select k.i, coalesce(b.balance - {_DUE}, 0) as balance, coalesce(b.holds, 0) as holds,
       exists (select 1 from ledger.payment_methods m
               where m.org_id = k.org_id and m.livemode = k.livemode
                 and m.customer_id = k.user_id and not m.detached) as has_payment_method
from unnest($1::text[], $2::boolean[], $3::text[]) with ordinality as k(org_id, livemode,
                                                                        user_id, i)
left join ledger.balances b on b.org_id = k.org_id and b.livemode = k.livemode
                           and b.user_id = k.user_id and b.currency = $4
order by k.i
"""

_BALANCES = f"""
select b.currency, b.balance - {_DUE} as balance, b.holds from ledger.balances b
where b.org_id = $1 and b.livemode = $2 and b.user_id = $3
order by b.currency
"""

_LOCK_BALANCE = """
update ledger.balances set updated_at = now()
where org_id = $1 and livemode = $2 and user_id = $3 and currency = $4
returning balance, holds, expiring
"""

_DUE_LOTS = """
select id, remaining from ledger.lots
where org_id = $1 and livemode = $2 and user_id = $3 and currency = $4
  and remaining > 0 and expires_at <= now()
order by expires_at, id
"""

_CLOSE_LOT = """
with lot as (
    update ledger.lots set remaining = 0, lapsed_at = now()
    where org_id = $1 and livemode = $2 and id = $3 and remaining = $4
    returning remaining
)
update ledger.balances set expiring = expiring - $4
where org_id = $1 and livemode = $2 and user_id = $5 and currency = $6
  and exists (select 1 from lot)
"""

_ACCOUNTS_WITH_DUE_LOTS = """
select distinct org_id, livemode, user_id, currency from ledger.lots
where remaining > 0 and expires_at <= now()
limit $1
"""

_USAGE = f"""
select id, amount, currency, notes, metadata, created_at, count(*) over () as total
from ledger.transactions
where org_id = $1 and livemode = $2 and user_id = $3 and tags = '{USAGE_TAG}'
  and ($4 = '' or currency = $4)
order by created_at desc, id desc
limit $5 offset $6
"""

# Saturates at the int64 maximum: a day's usage past it uses up any allowance all the same.
_USAGE_SINCE = f"""
select least(coalesce(sum(amount), 0), 9223372036854775807)::bigint from ledger.transactions
where org_id = $1 and livemode = $2 and user_id = $3 and tags = '{USAGE_TAG}'
  and currency = $4 and created_at >= $5
"""

_TRANSACTIONS = """
select id, type, amount, currency, notes, tags, metadata, expires_at, created_at,
       count(*) over () as total
from ledger.transactions
where org_id = $1 and livemode = $2 and user_id = $3 and ($4 = '' or currency = $4)
order by created_at desc, id desc
limit $5 offset $6
"""


# Lock the original (rows are immutable, so this only serialises concurrent refunds of
# it); what was refunded of it so far is read after the lock, in its own statement, so it
# sees every refund committed before the lock was granted.
_LOCK_ORIGINAL = """
select user_id, currency, amount, tags from ledger.transactions
where org_id = $1 and livemode = $2 and id = $3
for update
"""

_REFUNDED = """
select coalesce(sum(amount), 0)::bigint from ledger.transactions
where org_id = $1 and livemode = $2 and reverses = $3 and tags = 'refund'
"""

_STARTER_CREDIT = """
select id, amount, currency, tags, expires_at from ledger.transactions
where org_id = $1 and livemode = $2 and user_id = $3 and tags = 'starter-credit'
"""


async def post(conn: asyncpg.Connection, org_id: str, livemode: bool, m: Movement,
               tx_id: str | None = None) -> tuple[str, int]:
    """Record `m` (in the caller's transaction); returns the transaction id and the
    customer's balance after it."""
    tx_id = tx_id or new_id("txn_")
    delta = m.balance_delta
    opens_lot = delta > 0 and m.expires_at is not None
    if opens_lot:
        # The new lot is sized from the balance: expired lots the sweeper has not lapsed
        # yet must be out of it first, or their money would lapse twice.
        key = (org_id, livemode, m.user_id, m.currency)
        if (await lock_balance(conn, *key))[2]:
            await lapse_due_lots(conn, *key)
    try:
        _, balance, expiring = await conn.fetchrow(
            _POST, org_id, livemode, tx_id, m.type, m.user_id, m.debit, m.credit, m.currency,
            m.amount, m.notes, m.tags, m.metadata, m.expires_at, m.reverses, m.balance_delta)
        if opens_lot:
            remaining = domain.lot_remaining(m.amount, balance)
            await conn.execute(_OPEN_LOT, org_id, livemode, tx_id, m.user_id, m.currency,
                               m.amount, remaining, m.expires_at)
    except asyncpg.NumericValueOutOfRangeError:  # the balance or its expiring part
        raise invalid("amount is too large", "amount") from None
    if delta < 0 and expiring > 0 and m.tags != domain.EXPIRY_TAG:
        await conn.execute(_CONSUME_LOTS, org_id, livemode, m.user_id, m.currency, -delta)
    return tx_id, balance


async def post_funded(conn: asyncpg.Connection, org_id: str, livemode: bool, m: Movement
                      ) -> tuple[str, int]:
    """Post debit `m` only if the customer's available balance covers it. The balance row
    is locked first, so concurrent debits are checked one after another: never overdrawn."""
    key = (org_id, livemode, m.user_id, m.currency)
    balance_now, holds, expiring = await lock_balance(conn, *key)
    if expiring:
        balance_now -= await lapse_due_lots(conn, *key)
    have = domain.available(balance_now, holds)
    if m.amount > have:
        raise domain.insufficient_balance(have, m.amount)
    return await post(conn, org_id, livemode, m)


# Many usage debits at once: the transactions, then each account's balance changed once by
# the sum of its debits (accounts in a fixed order, so concurrent batches never deadlock).
_POST_USAGE_BATCH = f"""
with t as (
    insert into ledger.transactions (org_id, livemode, id, type, user_id, debit_account,
        credit_account, currency, amount, notes, tags, metadata)
    select o, l, i, 'withdraw', u, 'user:' || u, '{domain.USAGE_REVENUE}', c, a, n,
           '{USAGE_TAG}', m::jsonb
    from unnest($1::text[], $2::boolean[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                $7::text[], $8::text[]) as r(o, l, i, u, c, a, n, m)
)
insert into ledger.balances as b (org_id, livemode, user_id, currency, balance)
select o, l, u, c, -sum(a)
from unnest($1::text[], $2::boolean[], $4::text[], $5::text[], $6::bigint[])
     as r(o, l, u, c, a)
group by o, l, u, c
order by o, l, u, c
on conflict (org_id, livemode, user_id, currency)
    do update set balance = b.balance + excluded.balance, updated_at = now()
returning b.org_id, b.livemode, b.user_id, b.currency, b.expiring
"""

MovementRow = tuple[str, bool, str, Movement]  # org_id, livemode, transaction id, the movement


async def post_usage_batch(conn: asyncpg.Connection, rows: list[MovementRow]) -> None:
    """Record many usage debits in the caller's transaction, in a handful of statements."""
    columns = list(zip(*[
        (org, mode, tx_id, m.user_id, m.currency, m.amount, m.notes,
         _json(m.metadata)) for org, mode, tx_id, m in rows], strict=True))
    try:
        accounts = await conn.fetch(_POST_USAGE_BATCH, *columns)
    except asyncpg.NumericValueOutOfRangeError:
        raise invalid("amount is too large", "amount") from None
    for account in accounts:
        if account["expiring"] > 0:  # rare: this customer holds expiring money
            key = (account["org_id"], account["livemode"], account["user_id"],
                   account["currency"])
            spent = sum(m.amount for org, mode, _, m in rows
                        if (org, mode, m.user_id, m.currency) == key)
            await conn.execute(_CONSUME_LOTS, *key, spent)


# Many movements at once: the transactions, then each account's balance changed once by the
# sum of its movements (accounts in a fixed order, so concurrent batches never deadlock).
_MOVEMENTS = """
t as (
    insert into ledger.transactions (org_id, livemode, id, type, user_id, debit_account,
        credit_account, currency, amount, notes, tags, metadata)
    select o, l, i, ty, u, d, cr, c, a, n, tg, m::jsonb
    from unnest($1::text[], $2::boolean[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[], $12::text[])
         as r(o, l, i, ty, u, d, cr, c, a, n, tg, m)
)
"""
_MOVED_BALANCES = """
insert into ledger.balances as b (org_id, livemode, user_id, currency, balance)
select o, l, u, c, sum(delta)
from unnest($1::text[], $2::boolean[], $5::text[], $8::text[], $13::bigint[])
     as r(o, l, u, c, delta)
group by o, l, u, c
order by o, l, u, c
on conflict (org_id, livemode, user_id, currency)
    do update set balance = b.balance + excluded.balance, updated_at = now()
returning b.org_id, b.livemode, b.user_id, b.currency, b.balance, b.expiring
"""
_POST_MANY = "with" + _MOVEMENTS + _MOVED_BALANCES

# Top-up credits, their keys and their journal entries in one statement: one round trip,
# its own transaction. The credits as `_POST_MANY` writes them; each key claimed with its
# answer, whose balance only this statement knows (the account's after the batch, less the
# credits after this one: `later`), put between the answer's two halves; the journal's
# entries and their balances. A key claimed before fails the whole statement.
_CREDIT_TOGETHER = f"""
with{_MOVEMENTS}, b as ({_MOVED_BALANCES}), k as (
    insert into ledger.idempotency_keys (org_id, livemode, key, fingerprint, reply)
    select r.o, r.l, r.k, r.f, r.head || convert_to((b.balance - r.later)::text, 'UTF8')
                               || r.tail
    from unnest($14::text[], $15::boolean[], $16::text[], $17::text[], $18::text[],
                $19::text[], $20::bytea[], $21::bytea[], $22::bigint[])
         as r(o, l, k, f, u, c, head, tail, later)
    join b on b.org_id = r.o and b.livemode = r.l and b.user_id = r.u and b.currency = r.c
    order by r.o, r.l, r.k
), {journal.entries_and_postings(23)}, j as ({journal.applying(45)})
select org_id, livemode, user_id, currency, balance from b
"""

async def post_many(conn: asyncpg.Connection, rows: list[MovementRow],
                    ) -> dict[BalanceKey, tuple[int, int]]:
    """Record many movements that open no lot (credits that never expire, withdrawals) in
    the caller's transaction, in one statement. Returns each account's (balance, expiring)
    after them all; consuming lots is the caller's (`consume_lots`)."""
    try:
        accounts = await conn.fetch(_POST_MANY, *_movement_args(rows))
    except asyncpg.NumericValueOutOfRangeError:
        raise invalid("amount is too large", "amount") from None
    return {(a["org_id"], a["livemode"], a["user_id"], a["currency"]):
            (a["balance"], a["expiring"]) for a in accounts}


def _movement_args(rows: list[MovementRow]) -> list:
    """`_MOVEMENTS`' and `_MOVED_BALANCES`' parameters, $1 to $13."""
    return list(zip(*[
        (org, mode, tx_id, m.type, m.user_id, m.debit, m.credit, m.currency, m.amount,
         m.notes, m.tags, _json(m.metadata), m.balance_delta)
        for org, mode, tx_id, m in rows], strict=True))


def _credited_later(rows: list[MovementRow]) -> list[int]:
    """For each credit of `rows`, the sum of the credits after it to the same account: its
    balance is the account's after them all less that."""
    later, sums = [], {}
    for org, mode, _, m in reversed(rows):
        key = (org, mode, m.user_id, m.currency)
        later.append(sums.get(key, 0))
        sums[key] = later[-1] + m.amount
    return later[::-1]


# A key claimed with its answer: the answer's bytes before and after its balance.
KeyClaim = tuple[str, str, bytes, bytes]  # key, fingerprint, head, tail


async def credit_together(db: asyncpg.Pool | asyncpg.Connection, rows: list[MovementRow],
                          keys: list[KeyClaim], entries: list[tuple[str, bool, Entry]],
                          ) -> list[int]:
    """Record many credits, claim a key for each (with its answer) and post the journal's
    `entries`, in one statement (`_CREDIT_TOGETHER`), so on `db`'s own transaction or the
    caller's. Returns each customer's balance after their credit, in order. A key claimed
    before raises `UniqueViolationError` on `idempotency_keys_pkey`, and nothing is written.
    """
    later = _credited_later(rows)
    claims = [(org, mode, key, fingerprint, m.user_id, m.currency, head, tail, behind)
              for (org, mode, _, m), (key, fingerprint, head, tail), behind
              in zip(rows, keys, later, strict=True)]
    try:
        accounts = await db.fetch(_CREDIT_TOGETHER, *_movement_args(rows),
                                  *zip(*claims, strict=True), *journal.entry_args(entries))
    except asyncpg.NumericValueOutOfRangeError:
        raise invalid("amount is too large", "amount") from None
    after = {(a["org_id"], a["livemode"], a["user_id"], a["currency"]): a["balance"]
             for a in accounts}
    return [after[(org, mode, m.user_id, m.currency)] - behind
            for (org, mode, _, m), behind in zip(rows, later, strict=True)]


async def consume_lots(conn: asyncpg.Connection, org_id: str, livemode: bool, user_id: str,
                       currency: str, spent: int) -> None:
    """`spent` cents taken from the account's open lots, soonest-expiring first (the
    balance row locked by the caller)."""
    await conn.execute(_CONSUME_LOTS, org_id, livemode, user_id, currency, spent)


async def stored_transactions(db: asyncpg.Pool, ids: list[tuple[str, bool, str]],
                              ) -> set[tuple[str, bool, str]]:
    """Which of these (org_id, livemode, transaction id) exist."""
    orgs, modes, tx_ids = zip(*ids, strict=True)
    rows = await db.fetch(
        "select t.org_id, t.livemode, t.id from ledger.transactions t"
        " join unnest($1::text[], $2::boolean[], $3::text[]) as u(org_id, livemode, id)"
        " using (org_id, livemode, id)", orgs, modes, tx_ids)
    return {(r["org_id"], r["livemode"], r["id"]) for r in rows}


def _json(value: object) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()


async def lock_balance(conn: asyncpg.Connection, org_id: str, livemode: bool, user_id: str,
                       currency: str) -> tuple[int, int, int]:
    """Lock the customer's balance row for this transaction: (balance, holds, expiring)."""
    row = await conn.fetchrow(_LOCK_BALANCE, org_id, livemode, user_id, currency)
    return (row["balance"], row["holds"], row["expiring"]) if row else (0, 0, 0)


_LOCK_BALANCES = """
select b.org_id, b.livemode, b.user_id, b.currency, b.balance, b.holds, b.expiring
from ledger.balances b
join unnest($1::text[], $2::boolean[], $3::text[], $4::text[])
     as k(org_id, livemode, user_id, currency) using (org_id, livemode, user_id, currency)
order by b.org_id, b.livemode, b.user_id, b.currency
for update of b
"""


async def lock_balances(conn: asyncpg.Connection, keys: list[BalanceKey],
                        ) -> dict[BalanceKey, tuple[int, int, int]]:
    """`lock_balance` of many accounts in one statement, locked in one order (concurrent
    batches wait for each other rather than deadlock); an account without a row has none."""
    rows = await conn.fetch(_LOCK_BALANCES, *zip(*keys, strict=True))
    return {(r["org_id"], r["livemode"], r["user_id"], r["currency"]):
            (r["balance"], r["holds"], r["expiring"]) for r in rows}


async def lapse_due_lots(conn: asyncpg.Connection, org_id: str, livemode: bool, user_id: str,
                         currency: str) -> int:
    """Lapse the unspent part of this customer's expired lots; returns the amount lapsed.
    Call with the balance row locked (`lock_balance`)."""
    lapsed = 0
    for lot in await conn.fetch(_DUE_LOTS, org_id, livemode, user_id, currency):
        movement = domain.lapse(user_id, currency, lot["id"], lot["remaining"])
        await post(conn, org_id, livemode, movement)
        await conn.execute(_CLOSE_LOT, org_id, livemode, lot["id"], lot["remaining"], user_id,
                           currency)
        lapsed += lot["remaining"]
    return lapsed


async def accounts_with_due_lots(db: asyncpg.Pool, limit: int) -> list[asyncpg.Record]:
    return await db.fetch(_ACCOUNTS_WITH_DUE_LOTS, limit)



BalanceKey = tuple[str, bool, str, str]  # org_id, livemode, user_id, currency


async def balance_batch(db: asyncpg.Pool, keys: list[BalanceKey]) -> list[tuple[int, int]]:
    """(balance, holds) for many accounts in one query, in the order of `keys`."""
    orgs, modes, users, currencies = zip(*keys, strict=True)
    rows = await db.fetch(_BALANCE_BATCH, orgs, modes, users, currencies)
    found = {row["i"]: (row["balance"], row["holds"]) for row in rows}
    return [found.get(i, (0, 0)) for i in range(1, len(keys) + 1)]


StatusKey = tuple[str, bool, str]  # org_id, livemode, user_id


async def status_batch(db: asyncpg.Pool, keys: list[StatusKey], currency: str,
                       ) -> list[tuple[int, int, bool]]:
    """(balance, holds, has a payment method) for many customers in one query, in the order
    of `keys`."""
    orgs, modes, users = zip(*keys, strict=True)
    rows = await db.fetch(_STATUS_BATCH, orgs, modes, users, currency)
    return [(r["balance"], r["holds"], r["has_payment_method"]) for r in rows]


async def balances(db: asyncpg.Pool, org_id: str, livemode: bool, user_id: str
                   ) -> list[asyncpg.Record]:
    return await db.fetch(_BALANCES, org_id, livemode, user_id)


async def usage(db: asyncpg.Pool, org_id: str, livemode: bool, user_id: str, currency: str,
                limit: int, offset: int) -> tuple[list[asyncpg.Record], int]:
    """A page of the user's usage debits, newest first, and how many there are in all."""
    return await fetch_page(db, _USAGE, org_id, livemode, user_id, currency, limit, offset)


async def usage_since(db: asyncpg.Pool, org_id: str, livemode: bool, user_id: str,
                      currency: str, since: datetime) -> int:
    return await db.fetchval(_USAGE_SINCE, org_id, livemode, user_id, currency, since)


async def transactions(db: asyncpg.Pool, org_id: str, livemode: bool, user_id: str,
                       currency: str, limit: int, offset: int
                       ) -> tuple[list[asyncpg.Record], int]:
    """A page of the user's transactions, newest first, and how many there are in all."""
    return await fetch_page(db, _TRANSACTIONS, org_id, livemode, user_id, currency, limit,
                            offset)


async def refundable(conn: asyncpg.Connection, org_id: str, livemode: bool, tx_id: str
                     ) -> Refundable | None:
    row = await conn.fetchrow(_LOCK_ORIGINAL, org_id, livemode, tx_id)
    if row is None:
        return None
    refunded = await conn.fetchval(_REFUNDED, org_id, livemode, tx_id)
    return Refundable(row["user_id"], row["currency"], row["amount"], row["tags"], refunded)


async def starter_credit(db: asyncpg.Pool | asyncpg.Connection, org_id: str, livemode: bool,
                         user_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(_STARTER_CREDIT, org_id, livemode, user_id)


async def verify(db: asyncpg.Pool | asyncpg.Connection) -> list[asyncpg.Record]:
    """Every stored balance or lot total that disagrees with the transactions."""
    return await db.fetch("""
        with moves as (
            select org_id, livemode, user_id, currency,
                   case when credit_account = 'user:' || user_id then amount
                        else -amount end as amount
            from ledger.transactions
        ), computed as (
            select org_id, livemode, user_id, currency, sum(amount)::bigint as balance
            from moves group by 1, 2, 3, 4
        ), lots as (
            select org_id, livemode, user_id, currency, sum(remaining)::bigint as expiring
            from ledger.lots group by 1, 2, 3, 4
        )
        select coalesce(b.org_id, c.org_id) as org_id,
               coalesce(b.livemode, c.livemode) as livemode,
               coalesce(b.user_id, c.user_id) as user_id,
               coalesce(b.currency, c.currency) as currency,
               b.balance as stored, c.balance as computed,
               b.expiring as stored_expiring, coalesce(l.expiring, 0) as computed_expiring
        from ledger.balances b
        full join computed c using (org_id, livemode, user_id, currency)
        left join lots l using (org_id, livemode, user_id, currency)
        where b.balance is distinct from c.balance
           or b.expiring is distinct from coalesce(l.expiring, 0)
        order by 1, 2, 3, 4
    """)


# The entries of every account that holds or held expiring money, per account in the order
# the lot replay needs (`domain.lot_excess`): by time, a lapse before the other entries of
# its transaction (lapsing due lots is a transaction's first write), then by id.
_LOT_HISTORY = f"""
select t.org_id, t.livemode, t.user_id, t.currency, t.id, t.created_at,
       case when t.credit_account = 'user:' || t.user_id then t.amount
            else -t.amount end as delta,
       case when t.credit_account = '{domain.EXPIRED}' then t.reverses end as lapses,
       l.expires_at as lot_expires_at, coalesce(l.remaining, 0) as lot_remaining
from ledger.transactions t
left join ledger.lots l on l.org_id = t.org_id and l.livemode = t.livemode and l.id = t.id
where (t.org_id, t.livemode, t.user_id, t.currency) in (
    select org_id, livemode, user_id, currency from ledger.lots)
order by t.org_id, t.livemode, t.user_id, t.currency, t.created_at,
         t.credit_account = '{domain.EXPIRED}' desc, t.id collate "C"
"""


async def verify_lots(conn: asyncpg.Connection) -> list[tuple[tuple, domain.LotExcess]]:
    """Every lot holding more unspent money than its account's entries allow, with its
    account (org_id, livemode, user_id, currency). Reads the history with a cursor, one
    account at a time."""
    found: list[tuple[tuple, domain.LotExcess]] = []
    account: tuple | None = None
    entries: list[domain.LotEntry] = []

    def replay() -> None:
        found.extend((account, excess) for excess in domain.lot_excess(entries))

    async with conn.transaction(readonly=True):
        async for r in conn.cursor(_LOT_HISTORY, prefetch=1000):
            key = (r["org_id"], r["livemode"], r["user_id"], r["currency"])
            if key != account:
                replay()
                account, entries = key, []
            entries.append(domain.LotEntry(r["id"], r["created_at"], r["delta"], r["lapses"],
                                           r["lot_expires_at"], r["lot_remaining"]))
        replay()
    return found
