"""Ledger postings: the SQL."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

Db = asyncpg.Pool | asyncpg.Connection


def insert_owed(rows: str, lease: str) -> str:
    """The insert of owed postings from `rows`, a relation of (org_id, livemode, id, subject,
    params), left alone by the job for `lease` (for a longer statement)."""
    return ("insert into payments.ledger_postings"
            " (org_id, livemode, id, subject, params, next_attempt_at)"
            f" select *, now() + {lease} from {rows} on conflict do nothing")


async def add(conn: asyncpg.Connection, postings: list[tuple[str, bool, str, str, bytes]],
              lease: timedelta) -> None:
    """Owe (org_id, livemode, id, subject, params) postings (once: the same id again changes
    nothing). `lease`: the sender that owes them sends them right after the commit, so the
    job leaves them alone until then."""
    await conn.execute(insert_owed("unnest($1::text[], $2::boolean[], $3::text[], $4::text[],"
                                   " $5::bytea[])", "$6"), *zip(*postings, strict=True), lease)


async def take_due(db: Db, limit: int, lease: timedelta) -> list[asyncpg.Record]:
    """Postings due to be sent, leased to this sender (another replica skips them)."""
    return await db.fetch(
        "update payments.ledger_postings p set next_attempt_at = now() + $2,"
        " attempts = p.attempts + 1 from ("
        "  select org_id, livemode, id from payments.ledger_postings"
        "  where posted_at is null and next_attempt_at <= now()"
        "  order by next_attempt_at limit $1 for update skip locked) due"
        " where (p.org_id, p.livemode, p.id) = (due.org_id, due.livemode, due.id)"
        " returning p.org_id, p.livemode, p.id, p.subject, p.params, p.attempts",
        limit, lease)


async def mark_posted(db: Db, keys: list[tuple[str, bool, str]],
                      results: list[bytes | None] | None = None) -> None:
    """The ledger took these postings; `results`: what it answered each (kept, for whoever
    needs the answer later without asking again)."""
    orgs, modes, ids = zip(*keys, strict=True)
    await db.execute(
        "update payments.ledger_postings p set posted_at = now(), last_error = '',"
        " result = coalesce(k.r, p.result)"
        " from unnest($1::text[], $2::boolean[], $3::text[], $4::bytea[]) as k(o, l, i, r)"
        " where (p.org_id, p.livemode, p.id) = (k.o, k.l, k.i) and p.posted_at is null",
        list(orgs), list(modes), list(ids), results or [None] * len(keys))


async def result(db: Db, org_id: str, livemode: bool, posting_id: str) -> bytes | None:
    """What the ledger answered the posting, once it was posted (None before)."""
    return await db.fetchval(
        "select result from payments.ledger_postings"
        " where org_id = $1 and livemode = $2 and id = $3 and posted_at is not null",
        org_id, livemode, posting_id)


async def mark_failed(db: Db, org_id: str, livemode: bool, posting_id: str, error: str,
                      retry_in: timedelta) -> None:
    await db.execute(
        "update payments.ledger_postings set last_error = $4, next_attempt_at = now() + $5"
        " where org_id = $1 and livemode = $2 and id = $3 and posted_at is null",
        org_id, livemode, posting_id, error[:500], retry_in)
