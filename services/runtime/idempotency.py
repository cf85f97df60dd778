"""Idempotency keys, recorded by the service that owns the effect (conventions §10.7).

Inside the effect's own transaction: take a transaction-scoped advisory lock on the key
(held by someone else → 409 in progress), look for a completed reply (same fingerprint →
replay it, another fingerprint → 422), else run the effect and store its reply before
commit. A crash, a 5xx or a `retryable` refusal rolls everything back, which releases the key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta

import asyncpg
import msgspec

from contracts import ErrorCode, Reply, Scope
from contracts.errors import Failure
from services.runtime.db import delete_older_than

_encode = msgspec.json.Encoder().encode

KeyId = tuple[str, bool, str]  # a key as stored: organization, mode, key
RETENTION = timedelta(days=7)  # how long a key is remembered (conventions §10.7)

# Deterministic business outcomes are stored and replayed; validation failures (400), server
# errors and refusals marked `retryable` (a dependency did not answer) are not, so the
# client can fix the request or retry.
STORED_ERROR_STATUSES = frozenset({402, 403, 404, 409, 422})


def is_client_key(key: str) -> bool:
    """A key a client may send (conventions §10.7): 1–255 printable ASCII characters."""
    return 1 <= len(key) <= 255 and key.isascii() and key.isprintable()


# Keys a service derives itself (a usage debit's user and requestId) start with a control
# character, which no client key may contain (`is_client_key`, checked by the gateway and
# again by the runtime for every request): no `Idempotency-Key` can take or block them.
_DERIVED = "\x1f"


def derived_key(route: str, *parts: str) -> str:
    """The key of a request known by a natural key, in `route`'s own namespace; the parts
    are JSON-quoted, so no part can run into the next."""
    return _DERIVED + route + msgspec.json.encode(parts).decode()


def fingerprint_of(params: object) -> str:
    """The fingerprint of a request known by a natural key (its body is the request)."""
    return hashlib.sha256(msgspec.json.encode(params)).hexdigest()


class IdempotencyKeys:
    def __init__(self, schema: str):
        self._lock = "select pg_try_advisory_xact_lock(hashtextextended($1, 0))"
        self._find = (f"select fingerprint, reply from {schema}.idempotency_keys"
                      " where org_id = $1 and livemode = $2 and key = $3")
        self._store = (f"insert into {schema}.idempotency_keys"
                       " (org_id, livemode, key, fingerprint, reply) values ($1, $2, $3, $4, $5)"
                       " on conflict do nothing")
        self._schema = schema

    async def prune(self, db: asyncpg.Pool, older_than: datetime) -> int:
        """Forget keys older than `older_than`."""
        return await delete_older_than(db, f"{self._schema}.idempotency_keys", older_than)

    async def begin(self, conn: asyncpg.Connection, scope: Scope) -> bytes | None:
        """Claim the key for this transaction; returns a stored reply to replay, if any."""
        key = scope.idempotency_key
        lock_name = f"{self._schema}|{scope.org_id}|{int(scope.livemode)}|{key}"
        if not await conn.fetchval(self._lock, lock_name):
            raise in_progress()
        row = await conn.fetchrow(self._find, scope.org_id, scope.livemode, key)
        if row is None:
            return None
        if row["fingerprint"] != (scope.fingerprint or ""):
            raise mismatch()
        return row["reply"]

    async def complete(self, conn: asyncpg.Connection, scope: Scope, reply: bytes) -> None:
        """Store the reply. The advisory lock keeps out other requests of this service's
        per-request path, not its batched writers (`claim_many`): if one of those took the
        key meanwhile, this request is refused, and its effect rolls back with it."""
        status = await conn.execute(self._store, scope.org_id, scope.livemode,
                                    scope.idempotency_key, scope.fingerprint or "", reply)
        if status.endswith(" 0"):
            raise in_progress()

    async def remember(self, conn: asyncpg.Connection, scope: Scope, reply: Reply) -> bytes:
        """Store `reply` under the scope's key (its replays say they are) and return it
        encoded as this request answers it."""
        reply.replayed = True
        await self.complete(conn, scope, _encode(reply))
        reply.replayed = False
        return _encode(reply)

    # A request answered across transactions (a provider called between them): `replay`
    # in the first, `answer` in the last.

    async def replay(self, conn: asyncpg.Connection, scope: Scope) -> bytes | None:
        """The stored reply of the scope's key, if any (None without a key)."""
        return await self.begin(conn, scope) if scope.idempotency_key else None

    async def answer(self, conn: asyncpg.Connection, scope: Scope, reply: Reply) -> bytes:
        """`reply` encoded, and remembered under the scope's key when it has one."""
        return await self.remember(conn, scope, reply) if scope.idempotency_key else _encode(reply)

    # ---- many keys at once (batched writers) --------------------------------------------

    async def claim_many(self, conn: asyncpg.Connection,
                         claims: list[tuple[str, bool, str, str, bytes]]
                         ) -> set[KeyId]:
        """Insert (org_id, livemode, key, fingerprint, reply) rows, sorted so concurrent
        batches wait for each other instead of deadlocking. Returns the keys claimed; a key
        held by a concurrent transaction is waited for, then reported as not claimed."""
        claims = sorted(claims, key=lambda c: (c[0], c[1], c[2]))
        orgs, modes, keys, fingerprints, replies = zip(*claims, strict=True)
        rows = await conn.fetch(
            f"insert into {self._schema}.idempotency_keys"
            " (org_id, livemode, key, fingerprint, reply)"
            " select * from unnest($1::text[], $2::boolean[], $3::text[], $4::text[],"
            " $5::bytea[]) on conflict do nothing returning org_id, livemode, key",
            orgs, modes, keys, fingerprints, replies)
        return {(r["org_id"], r["livemode"], r["key"]) for r in rows}

    async def find_many(self, conn: asyncpg.Connection, keys: list[KeyId]
                        ) -> dict[KeyId, tuple[str, bytes]]:
        """Stored (fingerprint, reply) by (org_id, livemode, key)."""
        orgs, modes, names = zip(*keys, strict=True)
        rows = await conn.fetch(
            f"select i.org_id, i.livemode, i.key, i.fingerprint, i.reply"
            f" from {self._schema}.idempotency_keys i"
            " join unnest($1::text[], $2::boolean[], $3::text[]) as k(org_id, livemode, key)"
            " using (org_id, livemode, key)", orgs, modes, names)
        return {(r["org_id"], r["livemode"], r["key"]): (r["fingerprint"], r["reply"])
                for r in rows}


def in_progress() -> Failure:
    return Failure(ErrorCode.IDEMPOTENCY_IN_PROGRESS, 409,
                   "a request with this idempotency key is in progress")


def mismatch() -> Failure:
    return Failure(ErrorCode.IDEMPOTENCY_MISMATCH, 422,
                   "idempotency key reused with different parameters")


def first_of_each_key(keys: Iterable[KeyId]) -> dict[KeyId, int]:
    """The index of each key's first use in a batch (batched writers): a key sent twice in
    one batch takes effect once, and its later uses replay it."""
    first: dict[KeyId, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    return first


def stored_answer(stored: tuple[str, bytes], fingerprint: str) -> bytes:
    """What a request under a key used before gets (batched writers): the stored
    (fingerprint, reply) replayed when it asks the same, else the 422."""
    stored_fingerprint, reply = stored
    return reply if stored_fingerprint == fingerprint else _encode(Reply(error=mismatch().error))
