"""The gateway's SQL: organizations and API keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from contracts.ids import ALPHABET, new_id

# Where the database announces a changed key (migrations/002_api_key_changes.sql).
KEY_CHANGES = "gateway_api_key_changes"
_BASE62 = ALPHABET


@dataclass(frozen=True, slots=True)
class Org:
    id: str
    name: str
    enabled: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    org: Org
    livemode: bool
    kind: str  # "secret" | "publishable"
    expires_at: datetime | None


def hash_key(pepper: str, key: str) -> bytes:
    return hmac.new(pepper.encode(), key.encode(), hashlib.sha256).digest()


def generate_key(kind: str, livemode: bool) -> str:
    """`sk_live_…`, `sk_test_…`, `pk_live_…`, `pk_test_…` with 32 base62 characters."""
    head = ("sk" if kind == "secret" else "pk") + ("_live_" if livemode else "_test_")
    return head + "".join(secrets.choice(_BASE62) for _ in range(32))


def _org(row: asyncpg.Record) -> Org:
    return Org(row["id"], row["name"], row["enabled"], row["created_at"])


async def org_by_name(db: asyncpg.Pool, name: str) -> Org | None:
    row = await db.fetchrow("select id, name, enabled, created_at from gateway.orgs"
                            " where name = $1", name)
    return _org(row) if row else None


async def provision_org(db: asyncpg.Pool | asyncpg.Connection, name: str) -> Org:
    """Get or create the organization named `name` (one per name, even under races)."""
    await db.execute("insert into gateway.orgs (id, name) values ($1, $2)"
                     " on conflict (name) do nothing", new_id("org_"), name)
    return await org_by_name(db, name)


async def find_key(db: asyncpg.Pool, key_hash: bytes) -> ApiKey | None:
    """An active (not revoked) key by its hash; expiry is checked by the caller."""
    row = await db.fetchrow(
        "select k.id, k.livemode, k.kind, k.expires_at, o.id as org_id, o.name, o.enabled,"
        " o.created_at"
        " from gateway.api_keys k join gateway.orgs o on o.id = k.org_id"
        " where k.hash = $1 and k.revoked_at is null", key_hash)
    if row is None:
        return None
    return ApiKey(row["id"], Org(row["org_id"], row["name"], row["enabled"], row["created_at"]),
                  row["livemode"], row["kind"], row["expires_at"])


async def create_key(db: asyncpg.Pool | asyncpg.Connection, pepper: str, org: Org, *,
                     livemode: bool, kind: str, name: str = "",
                     plaintext: str | None = None) -> tuple[str, str]:
    """Store a key (generated unless `plaintext` is given); returns (key id, plaintext).

    Storing a given plaintext twice is a no-op that returns the existing key's id."""
    key = plaintext or generate_key(kind, livemode)
    key_hash = hash_key(pepper, key)
    key_id = await db.fetchval(
        "insert into gateway.api_keys (id, org_id, livemode, kind, name, prefix, hash)"
        " values ($1, $2, $3, $4, $5, $6, $7) on conflict (hash) do nothing returning id",
        new_id("key_"), org.id, livemode, kind, name, key[:12], key_hash)
    if key_id is None:
        key_id = await db.fetchval("select id from gateway.api_keys where hash = $1", key_hash)
    return key_id, key


async def revoke_key(db: asyncpg.Pool, key_id: str) -> bytes | None:
    """Revoke a key (gateways are told by the database); returns its hash, or None if there
    is no such active key."""
    return await db.fetchval(
        "update gateway.api_keys set revoked_at = now() where id = $1 and revoked_at is null"
        " returning hash", key_id)


async def touch_key(db: asyncpg.Pool, key_id: str) -> None:
    await db.execute("update gateway.api_keys set last_used_at = now() where id = $1", key_id)
