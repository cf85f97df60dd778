"""The journal's SQL, in one place. Every statement is scoped by org and mode, except the
hold sweeper, which works through every organization's due holds.

Lock order, the same everywhere so concurrent operations queue instead of deadlocking:
a hold row first (capture, void, sweep), then balance rows sorted by
(org, mode, account, currency).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

import asyncpg
import msgspec

from contracts.common import INT64_MAX
from contracts.errors import Failure, invalid
from contracts.ids import new_id
from services.ledger.journal.domain import (
    CAPTURED,
    Account,
    Balance,
    Draft,
    Entry,
    EntryFilter,
    Hold,
    Posting,
)
from services.runtime.idempotency import KeyId

Name = tuple[str, bool, str]  # org_id, livemode, account name


def _json(value: object) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()


# ---- accounts -----------------------------------------------------------------------------

_ACCOUNT_COLUMNS = "id, name, type, currency, normal_balance, metadata, created_at"

_INSERT_ACCOUNT = f"""
insert into ledger.journal_accounts (org_id, livemode, id, name, type, currency,
    normal_balance, metadata, created_at)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
on conflict (org_id, livemode, name) do nothing
returning {_ACCOUNT_COLUMNS}
"""

_ACCOUNT_BY_ID = f"""
select {_ACCOUNT_COLUMNS} from ledger.journal_accounts
where org_id = $1 and livemode = $2 and id = $3
"""

_ACCOUNT_BY_NAME = f"""
select {_ACCOUNT_COLUMNS} from ledger.journal_accounts
where org_id = $1 and livemode = $2 and name = $3
"""

_ACCOUNTS_BY_ID = f"""
select {_ACCOUNT_COLUMNS} from ledger.journal_accounts
where org_id = $1 and livemode = $2 and id = any($3::text[])
"""


def _account(row: asyncpg.Record) -> Account:
    return Account(id=row["id"], name=row["name"], type=row["type"], currency=row["currency"],
                   normal_balance=row["normal_balance"], metadata=row["metadata"],
                   created_at=row["created_at"])


async def insert_account(conn: asyncpg.Connection, org_id: str, livemode: bool,
                         account: Account, now: datetime) -> Account | None:
    """Store a new account; None when the name is taken in this org and mode."""
    row = await conn.fetchrow(_INSERT_ACCOUNT, org_id, livemode, new_id("jacct_"),
                              account.name, account.type, account.currency,
                              account.normal_balance, account.metadata, now)
    return _account(row) if row else None


async def ensure_account(conn: asyncpg.Connection, org_id: str, livemode: bool,
                         account: Account, now: datetime) -> Account:
    """The account with this name, created if missing (as given) — safe against a
    concurrent create of the same name."""
    created = await insert_account(conn, org_id, livemode, account, now)
    if created is not None:
        return created
    found = await account_by_name(conn, org_id, livemode, account.name)
    assert found is not None  # the conflicting row is committed and never deleted
    return found


async def account_by_id(db: asyncpg.Pool | asyncpg.Connection, org_id: str, livemode: bool,
                        account_id: str) -> Account | None:
    row = await db.fetchrow(_ACCOUNT_BY_ID, org_id, livemode, account_id)
    return _account(row) if row else None


async def account_by_name(db: asyncpg.Pool | asyncpg.Connection, org_id: str, livemode: bool,
                          name: str) -> Account | None:
    row = await db.fetchrow(_ACCOUNT_BY_NAME, org_id, livemode, name)
    return _account(row) if row else None


async def accounts_by_id(conn: asyncpg.Connection, org_id: str, livemode: bool,
                         ids: Iterable[str]) -> dict[str, Account]:
    rows = await conn.fetch(_ACCOUNTS_BY_ID, org_id, livemode, sorted(set(ids)))
    return {r["id"]: _account(r) for r in rows}


# Accounts of any org and mode by name; and the same accounts created where missing, in
# name order (concurrent batches creating the same names wait instead of deadlocking).
# Each account is looked up by its key: a join is planned on the table's statistics, and read
# the whole table for every batch (the planner takes `unnest` for a few rows). A subquery with
# a limit is not flattened into a join: an index lookup for each row, whatever the statistics.
_ACCOUNTS_BY_NAMES = f"""
select a.org_id, a.livemode, {_ACCOUNT_COLUMNS}
from unnest($1::text[], $2::boolean[], $3::text[]) as k(o, l, n)
cross join lateral (select * from ledger.journal_accounts a
                    where a.org_id = k.o and a.livemode = k.l and a.name = k.n limit 1) a
"""

_INSERT_ACCOUNTS = """
insert into ledger.journal_accounts (org_id, livemode, id, name, type, currency,
    normal_balance, metadata, created_at)
select o, l, i, n, t, c, nb, m::jsonb, $9
from unnest($1::text[], $2::boolean[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[]) as a(o, l, i, n, t, c, nb, m)
order by o, l, n
on conflict (org_id, livemode, name) do nothing
"""


async def accounts_by_names(conn: asyncpg.Pool | asyncpg.Connection, names: Iterable[Name]
                            ) -> dict[Name, Account]:
    orgs, modes, found = zip(*set(names), strict=True)
    rows = await conn.fetch(_ACCOUNTS_BY_NAMES, orgs, modes, found)
    return {(r["org_id"], r["livemode"], r["name"]): _account(r) for r in rows}


async def ensure_accounts(conn: asyncpg.Pool | asyncpg.Connection, accounts: dict[Name, Account],
                          now: datetime) -> dict[Name, Account]:
    """`ensure_account` for many accounts at once."""
    await conn.execute(_INSERT_ACCOUNTS, *zip(*[
        (org, mode, new_id("jacct_"), a.name, a.type, a.currency, a.normal_balance,
         _json(a.metadata)) for (org, mode, _), a in accounts.items()], strict=True), now)
    return await accounts_by_names(conn, accounts)


# ---- balances -----------------------------------------------------------------------------

# Apply posted and held deltas to many balance rows in one statement: rows are created at
# first use and otherwise changed by atomic increments. The input is sorted, so row locks
# are taken in one global order; `credit_normal` comes from the account, looked up by its key
# as `_ACCOUNTS_BY_NAMES` does. Its six parameters are numbered from $n (so that it can end a
# longer statement).
def applying(n: int) -> str:
    return f"""
insert into ledger.journal_balances as b (org_id, livemode, account_id, currency,
    credit_normal, posted, held)
select c.org_id, c.livemode, c.account_id, c.currency, a.normal_balance = 'credit',
       c.posted, c.held
from unnest(${n}::text[], ${n + 1}::boolean[], ${n + 2}::text[], ${n + 3}::text[],
            ${n + 4}::bigint[], ${n + 5}::bigint[])
     as c(org_id, livemode, account_id, currency, posted, held)
cross join lateral (select normal_balance from ledger.journal_accounts a
                    where a.org_id = c.org_id and a.livemode = c.livemode
                      and a.id = c.account_id limit 1) a
order by c.org_id, c.livemode, c.account_id, c.currency
on conflict (org_id, livemode, account_id, currency) do update
    set posted = b.posted + excluded.posted, held = b.held + excluded.held,
        updated_at = now()
returning b.account_id, b.currency, b.posted, b.held
"""


_APPLY = applying(1)

_BALANCE = """
select account_id, currency, posted, pending, held, available, updated_at
from ledger.journal_balances
where org_id = $1 and livemode = $2 and account_id = $3 and currency = $4
"""



def _past_int64() -> Failure:
    return invalid("amount would take an account balance past the int64 range", "amount")


# (org_id, livemode, account_id, currency) → (posted delta, held delta)
Changes = dict[tuple[str, bool, str, str], tuple[int, int]]


def add_change(changes: Changes, org_id: str, livemode: bool, account_id: str, currency: str,
               *, posted: int = 0, held: int = 0) -> None:
    key = (org_id, livemode, account_id, currency)
    before_posted, before_held = changes.get(key, (0, 0))
    changes[key] = (before_posted + posted, before_held + held)


def _deltas(changes: Changes) -> tuple[tuple, tuple, tuple, tuple, list[int], list[int]]:
    """`_APPLY`'s parameters: the changes sorted (its lock order), past int64 refused (the
    clients reading a balance, or the sum of one entry's legs on an account, could not)."""
    keys = sorted(changes)
    orgs, modes, accounts, currencies = zip(*keys, strict=True)
    posted, held = [changes[k][0] for k in keys], [changes[k][1] for k in keys]
    if any(not -INT64_MAX - 1 <= delta <= INT64_MAX for delta in (*posted, *held)):
        raise _past_int64()
    return orgs, modes, accounts, currencies, posted, held


async def apply(conn: asyncpg.Connection, changes: Changes
                ) -> dict[tuple[str, str], tuple[int, int]]:
    """Apply the deltas; returns (posted, held) after, by (account_id, currency)."""
    if not changes:
        return {}
    try:
        rows = await conn.fetch(_APPLY, *_deltas(changes))
    except asyncpg.NumericValueOutOfRangeError:
        raise _past_int64() from None
    return {(r["account_id"], r["currency"]): (r["posted"], r["held"]) for r in rows}


async def balance(db: asyncpg.Pool | asyncpg.Connection, org_id: str, livemode: bool,
                  account_id: str, currency: str) -> Balance | None:
    row = await db.fetchrow(_BALANCE, org_id, livemode, account_id, currency)
    if row is None:
        return None
    return Balance(account_id=row["account_id"], currency=row["currency"],
                   posted=row["posted"], pending=row["pending"], held=row["held"],
                   available=row["available"], updated_at=row["updated_at"])


# ---- entries ------------------------------------------------------------------------------

_ENTRY_COLUMNS = """e.id, e.idempotency_key, e.payload_hash, e.description, e.payment_intent_id,
    e.refund_id, e.payout_id, e.transfer_id, e.dispute_id, e.metadata, e.created_at"""

# Entries and their postings, as two CTEs (`e`, `p`) of a longer statement whose 22
# parameters are numbered from $n (`entry_args` gives them).
def entries_and_postings(n: int) -> str:
    entry_params = ", ".join(f"${n + i}::{t}[]" for i, t in enumerate(
        ("text", "boolean", "text", "text", "text", "text", "text", "text", "text", "text",
         "text", "text", "timestamptz")))
    posting_params = ", ".join(f"${n + 13 + i}::{t}[]" for i, t in enumerate(
        ("text", "boolean", "text", "text", "smallint", "text", "bigint", "text",
         "timestamptz")))
    return f"""
e as (
    insert into ledger.journal_entries (org_id, livemode, id, idempotency_key, payload_hash,
        description, payment_intent_id, refund_id, payout_id, transfer_id, dispute_id,
        metadata, created_at)
    select o, l, i, nullif(k, ''), h, d, nullif(pi, ''), nullif(r, ''), nullif(po, ''),
           nullif(t, ''), nullif(di, ''), m::jsonb, c
    from unnest({entry_params}) as e(o, l, i, k, h, d, pi, r, po, t, di, m, c)
), p as (
    insert into ledger.journal_postings (org_id, livemode, id, entry_id, line, account_id,
        amount, currency, created_at)
    select * from unnest({posting_params})
)"""


# An entry, its postings and their balances in one statement (the postings' and balances'
# checks run at its end, when the entry's row is there): the entries, the postings, then the
# balance deltas as `_APPLY` takes them.
_INSERT_ENTRIES = "with" + entries_and_postings(1) + applying(23)

_ENTRY_BY_ID = f"""
select {_ENTRY_COLUMNS} from ledger.journal_entries e
where e.org_id = $1 and e.livemode = $2 and e.id = $3
"""

_ENTRIES_BY_KEYS = f"""
select e.org_id, e.livemode, {_ENTRY_COLUMNS} from ledger.journal_entries e
join unnest($1::text[], $2::boolean[], $3::text[]) as k(org_id, livemode, key)
  on e.org_id = k.org_id and e.livemode = k.livemode and e.idempotency_key = k.key
"""

_POSTINGS_OF = """
select id, entry_id, account_id, amount, currency, created_at from ledger.journal_postings
where org_id = $1 and livemode = $2 and entry_id = any($3::text[])
order by entry_id, line
"""

# Serialises posts that share an idempotency key, so the second one finds the first's entry.
# Many keys are locked in one global order, so batches never deadlock.
_LOCK_KEYS = ("select pg_advisory_xact_lock(hashtextextended(k, 0))"
              " from unnest($1::text[]) as k")


async def lock_keys(conn: asyncpg.Pool | asyncpg.Connection, keys: Iterable[KeyId]) -> None:
    await conn.execute(_LOCK_KEYS, sorted({f"ledger.journal|{org_id}|{int(livemode)}|{key}"
                                           for org_id, livemode, key in keys}))


def new_entry(draft: Draft, now: datetime) -> Entry:
    """The entry `draft` becomes, with its ids; not stored yet (`insert_entries`)."""
    entry_id = new_id("jent_")
    return Entry(id=entry_id, postings=tuple(
                     Posting(id=new_id("jpst_"), entry_id=entry_id, account_id=leg.account_id,
                             amount=leg.amount, currency=leg.currency, created_at=now)
                     for leg in draft.postings),
                 created_at=now, payload_hash=draft.payload_hash(),
                 idempotency_key=draft.idempotency_key, description=draft.description,
                 payment_intent_id=draft.payment_intent_id, refund_id=draft.refund_id,
                 payout_id=draft.payout_id, transfer_id=draft.transfer_id,
                 dispute_id=draft.dispute_id, metadata=draft.metadata)


async def insert_entries(conn: asyncpg.Connection, entries: list[tuple[str, bool, Entry]],
                         changes: Changes | None = None) -> None:
    """Write (org_id, livemode, entry) entries and their postings, and apply them, together
    with `changes` (e.g. a hold released by the same operation), to the stored balances:
    one statement however many entries."""
    try:
        await conn.execute(_INSERT_ENTRIES, *entry_args(entries, changes))
    except asyncpg.NumericValueOutOfRangeError:
        raise _past_int64() from None


def entry_args(entries: list[tuple[str, bool, Entry]], changes: Changes | None = None,
               ) -> list:
    """The parameters of `entries_and_postings` followed by `applying`'s: the entries, their
    postings, and the balance deltas of both with `changes` (empty arrays for none)."""
    changes = dict(changes or {})
    for org, mode, e in entries:
        for p in e.postings:
            add_change(changes, org, mode, p.account_id, p.currency, posted=p.amount)
    return [*_columns(13, [(org, mode, e.id, e.idempotency_key, e.payload_hash, e.description,
                            e.payment_intent_id, e.refund_id, e.payout_id, e.transfer_id,
                            e.dispute_id, _json(e.metadata), e.created_at)
                           for org, mode, e in entries]),
            *_columns(9, [(org, mode, p.id, e.id, line, p.account_id, p.amount, p.currency,
                           p.created_at) for org, mode, e in entries
                          for line, p in enumerate(e.postings, start=1)]),
            *(_deltas(changes) if changes else [[]] * 6)]


def _columns(n: int, rows: list[tuple]) -> list:
    """Rows as `n` columns (arrays for `unnest`), empty ones for no rows."""
    return list(zip(*rows, strict=True)) if rows else [[]] * n


async def insert_entry(conn: asyncpg.Connection, org_id: str, livemode: bool, draft: Draft,
                       now: datetime, changes: Changes | None = None) -> Entry:
    entry = new_entry(draft, now)
    await insert_entries(conn, [(org_id, livemode, entry)], changes)
    return entry


async def _with_postings(db: asyncpg.Pool | asyncpg.Connection, org_id: str, livemode: bool,
                         rows: list[asyncpg.Record]) -> list[Entry]:
    if not rows:
        return []
    by_entry: dict[str, list[Posting]] = {r["id"]: [] for r in rows}
    for p in await db.fetch(_POSTINGS_OF, org_id, livemode, list(by_entry)):
        by_entry[p["entry_id"]].append(Posting(
            id=p["id"], entry_id=p["entry_id"], account_id=p["account_id"],
            amount=p["amount"], currency=p["currency"], created_at=p["created_at"]))
    return [Entry(id=r["id"], postings=tuple(by_entry[r["id"]]), created_at=r["created_at"],
                  payload_hash=r["payload_hash"], idempotency_key=r["idempotency_key"] or "",
                  description=r["description"],
                  payment_intent_id=r["payment_intent_id"] or "",
                  refund_id=r["refund_id"] or "", payout_id=r["payout_id"] or "",
                  transfer_id=r["transfer_id"] or "", dispute_id=r["dispute_id"] or "",
                  metadata=r["metadata"])
            for r in rows]


async def entry_by_id(db: asyncpg.Pool | asyncpg.Connection, org_id: str, livemode: bool,
                      entry_id: str) -> Entry | None:
    rows = await db.fetch(_ENTRY_BY_ID, org_id, livemode, entry_id)
    found = await _with_postings(db, org_id, livemode, rows)
    return found[0] if found else None


async def entries_by_keys(conn: asyncpg.Connection, keys: Iterable[KeyId]) -> dict[KeyId, Entry]:
    """The entries posted under these keys (those that were)."""
    orgs, modes, names = zip(*set(keys), strict=True)
    rows = await conn.fetch(_ENTRIES_BY_KEYS, orgs, modes, names)
    by_book: dict[tuple[str, bool], list[asyncpg.Record]] = {}
    for r in rows:  # rare: replays
        by_book.setdefault((r["org_id"], r["livemode"]), []).append(r)
    return {(org, mode, e.idempotency_key): e for (org, mode), found in by_book.items()
            for e in await _with_postings(conn, org, mode, found)}


async def entries(db: asyncpg.Pool | asyncpg.Connection, org_id: str, livemode: bool,
                  f: EntryFilter) -> list[Entry]:
    """A page of entries matching every given filter, oldest first (created_at, id)."""
    where = ["e.org_id = $1", "e.livemode = $2"]
    args: list[object] = [org_id, livemode]

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    for column, value in (("payment_intent_id", f.payment_intent_id),
                          ("refund_id", f.refund_id), ("payout_id", f.payout_id),
                          ("transfer_id", f.transfer_id), ("dispute_id", f.dispute_id)):
        if value:
            where.append(f"e.{column} = {arg(value)}")
    if f.account_id:  # §9.16: the reference accepted this filter and ignored it
        where.append("exists (select 1 from ledger.journal_postings p"
                     " where p.org_id = e.org_id and p.livemode = e.livemode"
                     f" and p.entry_id = e.id and p.account_id = {arg(f.account_id)})")
    if f.created_after is not None:
        where.append(f"e.created_at > {arg(f.created_after)}")
    if f.created_before is not None:
        where.append(f"e.created_at < {arg(f.created_before)}")
    sql = (f"select {_ENTRY_COLUMNS} from ledger.journal_entries e"
           f" where {' and '.join(where)} order by e.created_at, e.id"
           f" limit {arg(f.limit)} offset {arg(f.offset)}")
    return await _with_postings(db, org_id, livemode, await db.fetch(sql, *args))


# ---- holds --------------------------------------------------------------------------------

_HOLD_COLUMNS = """id, account_id, amount, currency, status, payment_intent_id,
    captured_entry_id, captured_amount, expires_at, created_at, updated_at"""

_INSERT_HOLD = f"""
insert into ledger.journal_holds (org_id, livemode, id, account_id, amount, currency, status,
    payment_intent_id, expires_at, created_at, updated_at)
values ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $9)
returning {_HOLD_COLUMNS}
"""

_HOLD = f"""
select {_HOLD_COLUMNS} from ledger.journal_holds
where org_id = $1 and livemode = $2 and id = $3
"""

_LOCK_HOLD = _HOLD + "for update"

_FINISH_HOLD = f"""
update ledger.journal_holds
set status = $4, captured_entry_id = $5, captured_amount = $6, updated_at = $7
where org_id = $1 and livemode = $2 and id = $3 and status = 'pending'
returning {_HOLD_COLUMNS}
"""

# Due holds of every organization, oldest expiry first. SKIP LOCKED: replicas sweep
# side by side, and a hold being captured or voided right now is left to that operation.
_EXPIRE_DUE = """
with due as (
    select org_id, livemode, id from ledger.journal_holds
    where status = 'pending' and expires_at <= $1
    order by expires_at, org_id, livemode, id
    limit $2
    for update skip locked
)
update ledger.journal_holds h set status = 'expired', updated_at = $1
from due
where h.org_id = due.org_id and h.livemode = due.livemode and h.id = due.id
returning h.org_id, h.livemode, h.account_id, h.currency, h.amount
"""


def _hold(row: asyncpg.Record) -> Hold:
    return Hold(id=row["id"], account_id=row["account_id"], amount=row["amount"],
                currency=row["currency"], status=row["status"],
                payment_intent_id=row["payment_intent_id"] or "",
                captured_entry_id=row["captured_entry_id"],
                captured_amount=row["captured_amount"], expires_at=row["expires_at"],
                created_at=row["created_at"], updated_at=row["updated_at"])


async def reserve(conn: asyncpg.Connection, org_id: str, livemode: bool, hold: Hold
                  ) -> tuple[int, int]:
    """Add the hold to the account's held balance (locking the row until commit); returns
    (posted, held) after, for the funds check."""
    changes: Changes = {}
    add_change(changes, org_id, livemode, hold.account_id, hold.currency, held=hold.amount)
    after = await apply(conn, changes)
    return after[(hold.account_id, hold.currency)]


async def insert_hold(conn: asyncpg.Connection, org_id: str, livemode: bool, hold: Hold,
                      now: datetime) -> Hold:
    hold = replace(hold, id=new_id("jhold_"))
    row = await conn.fetchrow(_INSERT_HOLD, org_id, livemode, hold.id, hold.account_id,
                              hold.amount, hold.currency, hold.payment_intent_id or None,
                              hold.expires_at, now)
    return _hold(row)


async def hold_by_id(db: asyncpg.Pool | asyncpg.Connection, org_id: str, livemode: bool,
                     hold_id: str, *, lock: bool = False) -> Hold | None:
    """The hold; with `lock`, row-locked until the transaction ends (capture, void)."""
    row = await db.fetchrow(_LOCK_HOLD if lock else _HOLD, org_id, livemode, hold_id)
    return _hold(row) if row else None


async def finish_hold(conn: asyncpg.Connection, org_id: str, livemode: bool, hold: Hold,
                      status: str, now: datetime, *, entry_id: str | None = None,
                      captured: int | None = None) -> Hold:
    """Move a locked pending hold to its final status. The held amount is released by the
    caller, in the same transaction (with the capture's postings, if any)."""
    assert (status == CAPTURED) == (entry_id is not None)
    row = await conn.fetchrow(_FINISH_HOLD, org_id, livemode, hold.id, status, entry_id,
                              captured, now)
    assert row is not None, "finish_hold needs the pending hold locked by hold_by_id"
    return _hold(row)


def release(changes: Changes, org_id: str, livemode: bool, hold: Hold) -> None:
    """The whole hold leaves the held balance (a partial capture releases the rest)."""
    add_change(changes, org_id, livemode, hold.account_id, hold.currency, held=-hold.amount)


async def expire_due_holds(conn: asyncpg.Connection, now: datetime, limit: int) -> int:
    """Expire up to `limit` pending holds past their expiry and release what they held.
    Returns how many expired."""
    rows = await conn.fetch(_EXPIRE_DUE, now, limit)
    changes: Changes = {}
    for r in rows:
        add_change(changes, r["org_id"], r["livemode"], r["account_id"], r["currency"],
                   held=-r["amount"])
    await apply(conn, changes)
    return len(rows)


async def verify(db: asyncpg.Pool | asyncpg.Connection) -> list[asyncpg.Record]:
    """Every journal balance whose `posted` disagrees with the sum of its postings."""
    return await db.fetch("""
        with computed as (
            select org_id, livemode, account_id, currency, sum(amount)::bigint as posted
            from ledger.journal_postings group by 1, 2, 3, 4
        )
        select coalesce(b.org_id, c.org_id) as org_id,
               coalesce(b.livemode, c.livemode) as livemode,
               coalesce(b.account_id, c.account_id) as account_id,
               coalesce(b.currency, c.currency) as currency,
               b.posted as stored, c.posted as computed
        from ledger.journal_balances b
        full join computed c using (org_id, livemode, account_id, currency)
        where coalesce(b.posted, 0) is distinct from coalesce(c.posted, 0)
        order by 1, 2, 3, 4
    """)
