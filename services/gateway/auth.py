"""Credentials → the calling principal (conventions §10.2). First match wins:
service token, IAM JWT, API key. Authentication never has side effects on money."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web

from contracts import Actor
from services.gateway import store
from services.gateway.iam import INVALID_TOKEN as INVALID_IAM_TOKEN
from services.gateway.iam import IamError, IamVerifier, looks_like_iam_jwt
from services.runtime.batching import SharedLoads
from services.runtime.config import Settings

log = logging.getLogger(__name__)

NO_TOKEN = "No access token provided."
UNKNOWN_ORG = "Unable to retrieve organization associated with access token"
CONFLICTING = "conflicting credentials"
UNSUPPORTED_SCHEME = "unsupported authorization scheme"
BAD_MODE = "X-Billing-Mode must be live or test"
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
    roles: tuple[str, ...] = ()  # an IAM caller's role claims, in order (billing accounts)


def provisionable(name: str) -> bool:
    """An org name we may create on first sight: plain, and not a leaked credential."""
    lowered = name.lower()
    return (bool(_ORG_NAME.match(name))
            and not lowered.startswith(("sk-", "sk_", "pk_", "hk-"))
            and not _JWT_SHAPED.match(name))


def _one(headers: Any, name: str) -> str:
    """A header that must be sent at most once: a second copy is refused, not ignored."""
    values = headers.getall(name, ())
    if len(values) > 1:
        raise AuthError(400, f"more than one {name} header")
    return values[0] if values else ""


def _header_key(header: str) -> str:
    """The API key in `Authorization`: `Bearer <key>`, `Basic <base64 key:>` (the key as
    user name) or the bare key. Any other scheme is refused rather than guessed at."""
    header = header.strip()
    if not header:
        return ""
    scheme, _, value = header.partition(" ")
    if not value:
        return scheme  # a bare key
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except ValueError:
            return ""
        return decoded.split(":", 1)[0]
    raise AuthError(401, UNSUPPORTED_SCHEME)


def _livemode(headers: Any) -> bool:
    """A service caller's mode: live unless `X-Billing-Mode: test`; anything else is a
    mistake to report, not a reason to move live money."""
    if "X-Billing-Mode" not in headers:
        return True
    mode = _one(headers, "X-Billing-Mode").lower()
    if mode not in ("live", "test"):
        raise AuthError(400, BAD_MODE)
    return mode == "live"


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
        self._keys = _TtlCache()  # presented key → (its hash, Caller or None, expiry)
        self._orgs = _TtlCache()  # org name → Org
        self._org_reads: SharedLoads[tuple[str, bool], store.Org] = SharedLoads()
        self._listener: asyncpg.Connection | None = None  # keys are cached only while set
        self._relisten: asyncio.Task | None = None
        self._changes = 0  # key changes heard so far

    # ---- key changes --------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for changed keys: the database announces every revocation (and change of
        expiry) at commit, so a key leaves every gateway's cache at once, whoever revoked
        it. Without the listening connection nothing is cached: each request reads the key."""
        conn = await self.db.acquire()
        try:
            await conn.add_listener(store.KEY_CHANGES, self._on_key_change)
        except BaseException:
            await self.db.release(conn)
            raise
        conn.add_termination_listener(self._on_listener_lost)
        self._listener = conn

    async def close(self) -> None:
        if self._relisten is not None:
            self._relisten.cancel()
        conn, self._listener = self._listener, None
        if conn is not None:
            conn.remove_termination_listener(self._on_listener_lost)
            await conn.remove_listener(store.KEY_CHANGES, self._on_key_change)
            await self.db.release(conn)

    def _on_key_change(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self._changes += 1
        self.forget_key(bytes.fromhex(payload))

    def _on_listener_lost(self, conn: Any) -> None:
        """Announcements may be missed from now on: forget every key, cache none until
        listening again."""
        self._listener = None
        self._changes += 1  # reads under way may be stale by the time it listens again
        self._keys.clear()
        self._relisten = asyncio.get_running_loop().create_task(self._listen_again(conn))

    async def _listen_again(self, lost: asyncpg.Connection) -> None:
        with contextlib.suppress(Exception):  # already closed: the pool replaces it
            await self.db.release(lost)
        while self._listener is None:
            try:
                await self.start()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                log.warning("cannot listen for API key changes; retrying in 1 s")
                await asyncio.sleep(1.0)

    async def authenticate(self, request: web.Request) -> Caller:
        header = _one(request.headers, "Authorization")
        bearer = header[7:].strip() if header[:7].lower() == "bearer " else ""
        query_key = self._query_key(request) if self.settings.allow_query_keys else ""
        if query_key and header and _header_key(header) != query_key:
            raise AuthError(400, CONFLICTING)  # neither silently wins
        if bearer and self._is_service_token(bearer):
            return await self._service_caller(request)
        if bearer and self.iam is not None and looks_like_iam_jwt(bearer):
            return await self.iam_caller(bearer)
        key = query_key or _header_key(header)
        if not key:
            raise AuthError(401, NO_TOKEN)
        return await self._key_caller(key)

    def forget_key(self, key_hash: bytes) -> None:
        """Drop a changed key from the cache (rare enough that a scan is fine)."""
        for key, (_, (cached_hash, *_)) in list(self._keys.items()):
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
        org = await self._org(name)
        livemode = _livemode(request.headers)
        return Caller(org.id, org.name, livemode,
                      Actor(kind="service", role="platform", may_mint=True))

    # ---- IAM ----------------------------------------------------------------------------

    async def iam_caller(self, token: str) -> Caller:
        """The caller an IAM token names (also how the portal page signs an end user in)."""
        if self.iam is None or not looks_like_iam_jwt(token):
            raise AuthError(401, INVALID_IAM_TOKEN)
        try:
            p = await self.iam.verify(token)
        except IamError as e:
            raise AuthError(e.status, e.message) from None
        org = await self._org(p.org_name)
        actor = Actor(kind="iam", role=p.role, user_id=p.user_id, subject=p.subject,
                      email=p.email, tier=p.tier, may_mint=p.role == "platform")
        return Caller(org.id, org.name, True, actor, p.roles)

    # ---- API keys -----------------------------------------------------------------------

    @staticmethod
    def _query_key(request: web.Request) -> str:
        """`?key=` or `?token=` (the reference's precedence); two different ones conflict."""
        if not request.query_string:
            return ""
        query = request.query
        found = {v for name in ("key", "token") for v in query.getall(name, ()) if v}
        if len(found) > 1:
            raise AuthError(400, CONFLICTING)
        return found.pop() if found else ""

    async def _key_caller(self, key: str) -> Caller:
        # Cached by the presented key, so a hit skips the HMAC and builds nothing (every
        # request pays a lookup).
        cached = self._keys.get_fresh(key)
        if cached is None:
            changes = self._changes
            key_hash = store.hash_key(self.settings.key_pepper, key)
            api_key = await store.find_key(self.db, key_hash)
            if api_key is None:
                raise AuthError(401, UNKNOWN_ORG)
            await store.touch_key(self.db, api_key.id)
            expires = api_key.expires_at.timestamp() if api_key.expires_at else math.inf
            cached = (key_hash, self._caller_of(api_key), expires)
            # Not cached if a change was heard meanwhile: it may be this key's, announced
            # after the read and before there was anything to forget.
            if self._listener is not None and changes == self._changes:
                self._keys.put(key, cached)
        _, caller, expires = cached
        if time.time() >= expires:
            raise AuthError(401, UNKNOWN_ORG)
        if caller is None:
            raise AuthError(403, "organization disabled")
        return caller

    def _caller_of(self, api_key: store.ApiKey) -> Caller | None:
        """The caller a key stands for; None when its organization is disabled."""
        if not api_key.org.enabled:
            return None
        secret = api_key.kind == "secret"
        actor = Actor(kind="api_key", role="admin" if secret else "publishable",
                      key_id=api_key.id,
                      may_mint=secret and self.settings.mint_policy == "secret_keys")
        return Caller(api_key.org.id, api_key.org.name, api_key.livemode, actor)

    # ---- organizations ------------------------------------------------------------------

    async def existing_org(self, name: str) -> store.Org:
        """The organization of that name, never created (provider webhooks name one)."""
        return await self._org(name, provision=False)

    async def _org(self, name: str, *, provision: bool = True) -> store.Org:
        org = self._orgs.get_fresh(name)
        if org is None:
            org = await self._read_org(name, provision)
        if not org.enabled:
            raise AuthError(403, "organization disabled")
        return org

    async def _read_org(self, name: str, provision: bool) -> store.Org:
        """The organization, read (or provisioned) and cached. Requests that miss it
        together share one read: a name not cached yet, or expired, under load is read
        once, not once per request in flight (each a pool connection)."""
        return await self._org_reads((name, provision), lambda: self._load_org(name, provision))

    async def _load_org(self, name: str, provision: bool) -> store.Org:
        org = await store.org_by_name(self.db, name)
        if org is None:
            if not (provision and self.settings.auto_provision_orgs and provisionable(name)):
                raise AuthError(401, UNKNOWN_ORG)
            org = await store.provision_org(self.db, name)
        self._orgs.put(name, org)
        return org
