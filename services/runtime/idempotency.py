"""Idempotency keys, recorded by the service that owns the effect (conventions §10.7).

Inside the effect's own transaction: take a transaction-scoped advisory lock on the key
(held by someone else → 409 in progress), look for a completed reply (same fingerprint →
replay it, another fingerprint → 422), else run the effect and store its reply before
commit. A crash or a 5xx rolls everything back, which releases the key.
"""

from __future__ import annotations

import asyncpg

from contracts import ErrorCode, Scope
from services.runtime.errors import Failure

# Deterministic business outcomes are stored and replayed; validation failures (400) and
# server errors are not, so the client can fix the request or retry.
STORED_ERROR_STATUSES = frozenset({402, 403, 404, 409, 422})


class IdempotencyKeys:
    def __init__(self, schema: str):
        self._lock = "select pg_try_advisory_xact_lock(hashtextextended($1, 0))"
        self._find = (f"select fingerprint, reply from {schema}.idempotency_keys"
                      " where org_id = $1 and livemode = $2 and key = $3")
        self._store = (f"insert into {schema}.idempotency_keys"
                       " (org_id, livemode, key, fingerprint, reply) values ($1, $2, $3, $4, $5)")
        self._schema = schema

    async def begin(self, conn: asyncpg.Connection, scope: Scope) -> bytes | None:
        """Claim the key for this transaction; returns a stored reply to replay, if any."""
        key = scope.idempotency_key
        lock_name = f"{self._schema}|{scope.org_id}|{int(scope.livemode)}|{key}"
        if not await conn.fetchval(self._lock, lock_name):
            raise Failure(ErrorCode.IDEMPOTENCY_IN_PROGRESS, 409,
                          "a request with this idempotency key is in progress")
        row = await conn.fetchrow(self._find, scope.org_id, scope.livemode, key)
        if row is None:
            return None
        if row["fingerprint"] != (scope.fingerprint or ""):
            raise Failure(ErrorCode.IDEMPOTENCY_MISMATCH, 422,
                          "idempotency key reused with different parameters")
        return row["reply"]

    async def complete(self, conn: asyncpg.Connection, scope: Scope, reply: bytes) -> None:
        await conn.execute(self._store, scope.org_id, scope.livemode, scope.idempotency_key,
                           scope.fingerprint or "", reply)
