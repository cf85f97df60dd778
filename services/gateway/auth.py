"""Credentials → the calling principal (conventions §10.2). First match wins:
service token, IAM JWT, API key. Authentication never has side effects on money."""

from __future__ import annotations

import base64
import hmac
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from aiohttp import web

from contracts import Actor
from services.gateway import store
from services.gateway.iam import IamError, IamVerifier, looks_like_iam_jwt
from services.runtime.config import Settings

NO_TOKEN = "No access token provided."
UNKNOWN_ORG = "Unable to retrieve organization associated with access token"
_CACHE_SECONDS = 60.0
_ORG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_JWT_SHAPED = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


class AuthError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Caller:
    org_id: str
    org_name: str
    livemode: bool
    actor: Actor


def provisionable(name: str) -> bool:
    """An org name we may create on first sight: plain, and not a leaked credential."""
    lowered = name.lower()
    return (bool(_ORG_NAME.match(name))
            and not lowered.startswith(("sk-", "sk_", "pk_", "hk-"))
            and not _JWT_SHAPED.match(name))


class _TtlCache(dict):
    """A tiny positive-result cache; entries are (expires_at, value)."""

    def get_fresh(self, key):
        hit = self.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    def put(self, key, value) -> None:
        if len(self) > 100_000:
            self.clear()
        self[key] = (time.monotonic() + _CACHE_SECONDS, value)


class Authenticator:
    def __init__(self, settings: Settings, db: asyncpg.Pool, iam: IamVerifier | None):
        self.settings = settings
        self.db = db
        self.iam = iam
        self._service_tokens = [t.encode() for t in settings.service_tokens]
        self._keys = _TtlCache()  # presented key → (its hash, ApiKey)
        self._orgs = _TtlCache()  # org name → Org

    async def authenticate(self, request: web.Request) -> Caller:
        header = request.headers.get("Authorization", "")
        bearer = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if bearer and self._is_service_token(bearer):
            return await self._service_caller(request)
        if bearer and self.iam is not None and looks_like_iam_jwt(bearer):
            return await self._iam_caller(bearer)
        key = self._key_from(request, header)
        if not key:
            raise AuthError(401, NO_TOKEN)
        return await self._key_caller(key)

    def forget_key(self, key_hash: bytes) -> None:
        """Drop a revoked key from the cache (revocations are broadcast on the bus; rare
        enough that a scan is fine)."""
        for key, (_, (cached_hash, _)) in list(self._keys.items()):
            if cached_hash == key_hash:
                del self._keys[key]

    # ---- service tokens -----------------------------------------------------------------

    def _is_service_token(self, token: str) -> bool:
        presented = token.encode()
        # Compare against every token, in constant time, so timing reveals nothing.
        matched = False
        for candidate in self._service_tokens:
            matched |= hmac.compare_digest(presented, candidate)
        return matched

    async def _service_caller(self, request: web.Request) -> Caller:
        name = (request.headers.get("X-IAM-Org-Id") or request.headers.get("X-IAM-Org")
                or self.settings.service_org).strip()
        org = await self._org(name, may_provision=True)
        livemode = request.headers.get("X-Billing-Mode", "").lower() != "test"
        return Caller(org.id, org.name, livemode,
                      Actor(kind="service", role="platform", may_mint=True))

    # ---- IAM ----------------------------------------------------------------------------

    async def _iam_caller(self, token: str) -> Caller:
        try:
            p = await self.iam.verify(token)
        except IamError as e:
            raise AuthError(e.status, e.message) from None
        org = await self._org(p.org_name, may_provision=True)
        actor = Actor(kind="iam", role=p.role, user_id=p.user_id, subject=p.subject,
                      email=p.email, tier=p.tier, may_mint=p.role == "platform")
        return Caller(org.id, org.name, True, actor)

    # ---- API keys -----------------------------------------------------------------------

    def _key_from(self, request: web.Request, header: str) -> str:
        if self.settings.allow_query_keys:
            query = request.query
            if query.get("key"):
                return query["key"]
            if query.get("token"):
                return query["token"]
        header = header.strip()
        if not header:
            return ""
        scheme, _, value = header.partition(" ")
        if not value:
            return scheme  # a bare key
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except ValueError:
                return ""
            return decoded.split(":", 1)[0]
        return value.strip()

    async def _key_caller(self, key: str) -> Caller:
        # Cached by the presented key, so a hit skips the HMAC (every request pays a lookup).
        cached = self._keys.get_fresh(key)
        if cached is None:
            key_hash = store.hash_key(self.settings.key_pepper, key)
            api_key = await store.find_key(self.db, key_hash)
            if api_key is None:
                raise AuthError(401, UNKNOWN_ORG)
            await store.touch_key(self.db, api_key.id)
            cached = (key_hash, api_key)
            self._keys.put(key, cached)
        api_key = cached[1]
        if api_key.expires_at is not None and api_key.expires_at <= datetime.now(UTC):
            raise AuthError(401, UNKNOWN_ORG)
        if not api_key.org.enabled:
            raise AuthError(403, "organization disabled")
        secret = api_key.kind == "secret"
        actor = Actor(kind="api_key", role="admin" if secret else "publishable",
                      key_id=api_key.id,
                      may_mint=secret and self.settings.mint_policy == "secret_keys")
        return Caller(api_key.org.id, api_key.org.name, api_key.livemode, actor)

    # ---- organizations ------------------------------------------------------------------

    async def _org(self, name: str, *, may_provision: bool) -> store.Org:
        org = self._orgs.get_fresh(name)
        if org is None:
            org = await store.org_by_name(self.db, name)
            if org is None:
                if not (may_provision and self.settings.auto_provision_orgs
                        and provisionable(name)):
                    raise AuthError(401, UNKNOWN_ORG)
                org = await store.provision_org(self.db, name)
            self._orgs.put(name, org)
        if not org.enabled:
            raise AuthError(403, "organization disabled")
        return org
