"""Strict IAM (OIDC) JWT validation for the gateway.

Bearer tokens signed with an asymmetric algorithm come from the IAM (an OIDC
provider) and are verified against its published JWKS. HMAC-signed JWTs are
legacy API keys and are handled elsewhere; every other JWT-shaped token is
treated as an IAM token so that it must pass (or fail) validation here and can
never slip through another authentication path.

Validation fails closed: any problem yields ``IamError(401, ...)``, and when no
key set is available the gateway answers 503 instead of guessing.

Keys are loaded by ``IamVerifier.start()`` and refreshed by a background task;
the request path never touches the network except for a rate-limited refetch
when a token names a key id we do not know yet (key rotation).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

log = logging.getLogger(__name__)

# Algorithms an IAM token may be signed with, by key type. EC algorithms are
# tied to a curve so that a key can only verify signatures made for its curve.
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHM_CURVES = {"ES256": "P-256", "ES384": "P-384"}
IAM_ALGORITHMS = RSA_ALGORITHMS | frozenset(EC_ALGORITHM_CURVES)

# HMAC-signed JWTs are legacy API keys, never IAM tokens.
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})

ADMIN_ROLES = frozenset({"admin", "owner"})

INVALID_TOKEN = "invalid IAM token"
MISSING_OWNER = "IAM token missing owner claim"
UNAVAILABLE = "IAM authentication service is unavailable"

_B64URL_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


class IamError(Exception):
    """Authentication failure carrying the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class IamPrincipal:
    org_name: str
    user_id: str
    subject: str
    email: str | None
    tier: str | None
    roles: tuple[str, ...]
    role: str  # "user" | "admin" | "platform"


def _split_list(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(item.strip() for item in value.split(",") if item.strip())


@dataclass(frozen=True, slots=True)
class IamConfig:
    issuer: str = ""
    client_id: str = ""
    jwks_file: str = ""
    jwks_uri: str = ""
    accepted_issuers: tuple[str, ...] = ()
    accepted_audiences: tuple[str, ...] = ()
    platform_admin_orgs: tuple[str, ...] = ()
    # Operational timings; the defaults are the production values.
    http_timeout: float = 5.0
    refresh_interval: float = 3600.0
    unknown_kid_refetch_interval: float = 60.0
    stale_keys_ttl: float = 24 * 3600.0
    leeway: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> IamConfig:
        return cls(
            issuer=env.get("IAM_ISSUER", "").strip(),
            client_id=env.get("IAM_CLIENT_ID", "").strip(),
            jwks_file=env.get("IAM_JWKS_FILE", "").strip(),
            jwks_uri=env.get("IAM_JWKS_URI", "").strip(),
            accepted_issuers=_split_list(env.get("IAM_ACCEPTED_ISSUERS")),
            accepted_audiences=_split_list(env.get("IAM_ACCEPTED_AUDIENCES")),
            platform_admin_orgs=_split_list(env.get("PLATFORM_ADMIN_ORGS")),
        )

    @property
    def enabled(self) -> bool:
        return bool(self.jwks_file or self.jwks_uri or self.issuer)


def _b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _unverified_header(token: str) -> dict[str, Any] | None:
    """The JOSE header of a JWT-shaped token, or None if it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    header_segment, payload_segment, signature_segment = parts
    # The signature may be empty (alg "none"); header and payload may not.
    if not header_segment or not payload_segment:
        return None
    if not all(_B64URL_SEGMENT.fullmatch(p) for p in parts):
        return None
    try:
        header = json.loads(_b64url_decode(header_segment))
    except (binascii.Error, ValueError):
        return None
    return header if isinstance(header, dict) else None


def looks_like_iam_jwt(token: str) -> bool:
    """True for any JWT-shaped token that is not an HMAC-signed API key.

    Unknown algorithms (including "none") count as IAM tokens on purpose: they
    are then rejected by IAM validation instead of reaching another auth path.
    """
    header = _unverified_header(token)
    if header is None:
        return False
    return header.get("alg") not in HMAC_ALGORITHMS


def _normalize_issuer(issuer: str) -> str:
    return issuer.rstrip("/")


@dataclass(frozen=True, slots=True)
class _VerificationKey:
    kid: str | None
    kty: str
    alg: str | None  # as declared by the JWK, if it declares one
    crv: str | None
    key: Any  # cryptography public key

    def accepts(self, alg: str) -> bool:
        # A JWK that declares its algorithm may only verify that algorithm;
        # this is what stops algorithm-confusion (e.g. RS256 key used for PS256).
        if self.alg is not None and self.alg != alg:
            return False
        if self.kty == "RSA":
            return alg in RSA_ALGORITHMS
        return EC_ALGORITHM_CURVES.get(alg) == self.crv


def _parse_jwks(document: Any) -> list[_VerificationKey]:
    """Usable signature keys from a JWKS document (RSA and EC only)."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("JWKS document has no 'keys' array")

    keys: list[_VerificationKey] = []
    for data in document["keys"]:
        if not isinstance(data, dict) or data.get("kty") not in ("RSA", "EC"):
            continue
        if data.get("use", "sig") != "sig":
            continue  # encryption keys never verify signatures
        kid = data.get("kid")
        declared_alg = data.get("alg")
        if kid is not None and not isinstance(kid, str):
            continue
        if declared_alg is not None and declared_alg not in IAM_ALGORITHMS:
            continue
        try:
            key = jwt.PyJWK(data).key
        except jwt.PyJWTError:
            continue  # malformed or unsupported key: skip it, keep the others
        # Only ever verify with the public half, even if a private JWK leaked in.
        if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            key = key.public_key()
        candidate = _VerificationKey(
            kid=kid, kty=data["kty"], alg=declared_alg, crv=data.get("crv"), key=key
        )
        if candidate.kty == "EC" and candidate.crv not in EC_ALGORITHM_CURVES.values():
            continue
        if declared_alg is not None and not candidate.accepts(declared_alg):
            continue  # e.g. alg ES256 declared on a P-384 key
        keys.append(candidate)
    if not keys:
        raise ValueError("JWKS document has no usable RSA or EC signature keys")
    return keys


def _string_roles(value: Any) -> tuple[str, ...]:
    """The `roles` claim is either a list of names or a list of {"name": ...}."""
    if not isinstance(value, list):
        return ()
    roles: list[str] = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("name")
        if isinstance(item, str) and item:
            roles.append(item)
    return tuple(roles)


class IamVerifier:
    def __init__(self, config: IamConfig) -> None:
        self._config = config
        self._issuers = frozenset(
            _normalize_issuer(i) for i in (config.issuer, *config.accepted_issuers) if i
        )
        self._audiences = frozenset(a for a in (config.client_id, *config.accepted_audiences) if a)
        self._platform_orgs = frozenset(config.platform_admin_orgs)

        self._keys: list[_VerificationKey] | None = None
        self._keys_loaded_at = 0.0  # monotonic time of the last successful load
        self._last_unknown_kid_refetch: float | None = None
        self._fetch_lock = asyncio.Lock()
        self._refresh_task: asyncio.Task[None] | None = None
        self._kid_refetch_task: asyncio.Task[bool] | None = None

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Load keys once and start the background refresh. Never raises."""
        if not self._config.enabled or self._refresh_task is not None:
            return
        await self._refresh()
        self._refresh_task = asyncio.create_task(self._refresh_loop(), name="iam-jwks-refresh")

    async def close(self) -> None:
        tasks = [t for t in (self._refresh_task, self._kid_refetch_task) if t is not None]
        self._refresh_task = self._kid_refetch_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _refresh_loop(self) -> None:
        while True:
            # After a failed refresh retry sooner, so an IAM outage at boot or a
            # stale key set does not last a whole refresh interval.
            ok = self._keys is not None and self._keys_age() < self._config.refresh_interval
            delay = (
                self._config.refresh_interval
                if ok
                else min(self._config.refresh_interval, self._config.unknown_kid_refetch_interval)
            )
            await asyncio.sleep(delay)
            await self._refresh()

    # -- key loading ---------------------------------------------------------

    def _keys_age(self) -> float:
        return time.monotonic() - self._keys_loaded_at

    def _current_keys(self) -> list[_VerificationKey] | None:
        # Stale-while-error: the last good set is used for at most stale_keys_ttl.
        if self._keys is None or self._keys_age() > self._config.stale_keys_ttl:
            return None
        return self._keys

    async def _refresh(self) -> bool:
        """Fetch the key set; keep the previous one on failure. Never raises."""
        async with self._fetch_lock:
            try:
                keys = _parse_jwks(await self._fetch_jwks_document())
            except Exception as exc:  # any failure keeps the old keys
                # Only the exception type: messages may embed key material.
                log.warning("IAM key refresh failed (%s)", type(exc).__name__)
                return False
            self._keys = keys
            self._keys_loaded_at = time.monotonic()
            log.info("IAM key set loaded (%d keys)", len(keys))
            return True

    async def _fetch_jwks_document(self) -> Any:
        config = self._config
        if config.jwks_file:
            return await asyncio.to_thread(self._read_jwks_file, config.jwks_file)

        timeout = aiohttp.ClientTimeout(total=config.http_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            jwks_uri = config.jwks_uri or await self._discover_jwks_uri(session)
            async with session.get(jwks_uri) as response:
                response.raise_for_status()
                return await response.json(content_type=None)

    @staticmethod
    def _read_jwks_file(path: str) -> Any:
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    async def _discover_jwks_uri(self, session: aiohttp.ClientSession) -> str:
        issuer = _normalize_issuer(self._config.issuer)
        fallback = f"{issuer}/.well-known/jwks"
        try:
            async with session.get(f"{issuer}/.well-known/openid-configuration") as response:
                response.raise_for_status()
                discovery = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("IAM OIDC discovery failed (%s); using %s", type(exc).__name__, fallback)
            return fallback
        jwks_uri = discovery.get("jwks_uri") if isinstance(discovery, dict) else None
        return jwks_uri if isinstance(jwks_uri, str) and jwks_uri else fallback

    async def _refetch_for_unknown_kid(self) -> None:
        """Refetch keys for a token naming an unknown kid, at most once per interval.

        Requests arriving while a refetch is in flight wait for it rather than
        failing, so a key rotation costs one fetch, not a burst of 401s.
        """
        task = self._kid_refetch_task
        if task is None or task.done():
            now = time.monotonic()
            last = self._last_unknown_kid_refetch
            if last is not None and now - last < self._config.unknown_kid_refetch_interval:
                return
            self._last_unknown_kid_refetch = now
            task = self._kid_refetch_task = asyncio.create_task(self._refresh())
        # Shielded: a cancelled request must not cancel the shared refetch.
        await asyncio.shield(task)

    # -- verification --------------------------------------------------------

    async def verify(self, token: str) -> IamPrincipal:
        if self._current_keys() is None:
            raise IamError(503, UNAVAILABLE)

        header = _unverified_header(token)
        if header is None:
            raise IamError(401, INVALID_TOKEN)
        alg = header.get("alg")
        kid = header.get("kid")
        if alg not in IAM_ALGORITHMS or (kid is not None and not isinstance(kid, str)):
            raise IamError(401, INVALID_TOKEN)

        key = self._find_key(kid, alg)
        if key is None and kid is not None and not self._has_kid(kid):
            await self._refetch_for_unknown_kid()
            key = self._find_key(kid, alg)
        if key is None:
            log.debug("IAM token rejected: no matching key")
            raise IamError(401, INVALID_TOKEN)

        claims = self._decode(token, key, alg)
        return self._principal(claims)

    def _has_kid(self, kid: str) -> bool:
        return any(k.kid == kid for k in self._current_keys() or ())

    def _find_key(self, kid: str | None, alg: str) -> _VerificationKey | None:
        keys = self._current_keys() or []
        if kid is None:
            # Without a kid the key is only unambiguous when there is one.
            candidates = keys if len(keys) == 1 else []
        else:
            candidates = [k for k in keys if k.kid == kid]
        return next((k for k in candidates if k.accepts(alg)), None)

    def _decode(self, token: str, key: _VerificationKey, alg: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                leeway=self._config.leeway,
                options={
                    "require": ["exp"],
                    # Issuer and audience are checked below: PyJWT compares the
                    # issuer exactly and does not know about `azp`.
                    "verify_iss": False,
                    "verify_aud": False,
                    "enforce_minimum_key_length": True,
                },
            )
        except Exception as exc:  # fail closed on anything
            log.debug("IAM token rejected: %s", type(exc).__name__)
            raise IamError(401, INVALID_TOKEN) from None

        if not self._issuer_ok(claims) or not self._audience_ok(claims):
            log.debug("IAM token rejected: issuer or audience not accepted")
            raise IamError(401, INVALID_TOKEN)
        return claims

    def _issuer_ok(self, claims: dict[str, Any]) -> bool:
        issuer = claims.get("iss")
        return isinstance(issuer, str) and _normalize_issuer(issuer) in self._issuers

    def _audience_ok(self, claims: dict[str, Any]) -> bool:
        # With no configured audience there is nothing to match: refuse.
        if not self._audiences:
            return False
        aud = claims.get("aud")
        audiences: list[Any] = aud if isinstance(aud, list) else [aud]
        azp = claims.get("azp")
        return any(isinstance(a, str) and a in self._audiences for a in (*audiences, azp))

    def _principal(self, claims: dict[str, Any]) -> IamPrincipal:
        owner = claims.get("owner")
        if not isinstance(owner, str) or not owner:
            raise IamError(401, MISSING_OWNER)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise IamError(401, INVALID_TOKEN)

        name = claims.get("name")
        user_name = name if isinstance(name, str) and name else subject

        email = claims.get("email")
        properties = claims.get("properties")
        tier = properties.get("tier") if isinstance(properties, dict) else None

        roles = _string_roles(claims.get("roles"))
        is_admin = claims.get("isAdmin") is True
        if is_admin and owner in self._platform_orgs:
            role = "platform"
        elif is_admin or ADMIN_ROLES.intersection(roles):
            role = "admin"
        else:
            role = "user"

        return IamPrincipal(
            org_name=owner,
            user_id=f"{owner}/{user_name}".lower(),
            subject=subject,
            email=email if isinstance(email, str) and email else None,
            tier=tier if isinstance(tier, str) and tier else None,
            roles=roles,
            role=role,
        )
