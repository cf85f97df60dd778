"""Which provider serves a request (payments.md §1.3, §1.6 DO).

An organization has, in each mode, the providers of the credentials it stored
(provider_settings/), or else the platform's, from the environment: `STRIPE_SECRET_KEY`
(`sk_test_…` serves test mode, a live key live mode) and `SQUARE_*` (`SQUARE_ENVIRONMENT`
sandbox or test ⇒ test mode, empty or production ⇒ live). Never a mixture: an organization
with credentials of its own is never charged through the platform's accounts.

A new object goes to the provider that issued the token it carries, never to another
(`cnon:`/`ccof:` ⇒ Square, `pm_`/`tok_`/`src_`/`card_` ⇒ Stripe); without a token, to the
preferred processor, else Square, else Stripe. With none configured: the offline provider in
test mode; in live mode `400 no payment processor available` (never a faked payment).
`PAYMENTS_OFFLINE=1` ⇒ offline everywhere. A saved method or payment goes back to the
provider that issued it; one no longer configured refuses the call rather than another
provider taking it."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from contracts import ErrorCode, Scope
from contracts.errors import Failure, invalid
from services.payments.provider_settings.domain import NONE, Credentials, Stored
from services.payments.providers import square, stripe
from services.payments.providers.base import Provider
from services.payments.providers.offline import OfflineProvider
from services.runtime.batching import SharedLoads
from services.runtime.config import Settings

OFFLINE = OfflineProvider()
NO_PROCESSOR = "no payment processor available"
PRIORITY = ("square", "stripe")
_TOKEN_SHAPES = (("square", ("cnon:", "ccof:")), ("stripe", ("pm_", "tok_", "src_", "card_")))
TTL = 10.0  # seconds a replica trusts its copy of an organization's settings
# A registry replaced by new settings is closed this long after, when calls that were under
# way with it (a provider call with its retries) have ended.
GRACE = 300.0


def token_issuer(token: str) -> str:
    """The provider a token's shape names; "" when none does."""
    return next((name for name, shapes in _TOKEN_SHAPES if token.startswith(shapes)), "")


class NoProcessor(Failure):
    """No provider may serve this organization and mode (400; a top-up answers it 422)."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.INVALID_REQUEST, 400, NO_PROCESSOR)


def not_configured(name: str) -> Failure:
    return invalid(f"payment processor {name} is not configured")


@dataclass(frozen=True)
class Registry:
    """One organization's providers in one mode, by name, and its preferred processor."""

    providers: Mapping[str, Provider] = field(default_factory=dict)
    preferred: str = ""


def provider_for(registry: Registry, offline: bool, token: str = "") -> Provider:
    """The provider of a new object (`offline`: the offline provider may serve when none is
    configured: test mode, or `PAYMENTS_OFFLINE=1`)."""
    providers = registry.providers
    wanted = token_issuer(token)
    if wanted in providers:
        return providers[wanted]
    if wanted and providers:
        raise not_configured(wanted)
    for name in (registry.preferred, *PRIORITY):
        if name in providers:
            return providers[name]
    if offline:
        return OFFLINE
    raise NoProcessor()


def issuer(registry: Registry, offline: bool, name: str) -> Provider:
    """The provider that issued a saved method or payment. One recorded without a provider
    is served by the current choice."""
    if not name:
        return provider_for(registry, offline)
    if name in registry.providers:
        return registry.providers[name]
    if name == OFFLINE.name and offline:
        return OFFLINE
    raise not_configured(name)


def providers_of(credentials: Credentials, settings: Settings) -> dict[str, Provider]:
    """Clients of an organization's own accounts."""
    return {name: own_provider(credentials, name, settings) for name in ("stripe", "square")
            if getattr(credentials, name) is not None}


def own_provider(credentials: Credentials, name: str, settings: Settings) -> Provider:
    """A client of the organization's own account at one provider (its settings have it)."""
    if name == "stripe":
        return _stripe(credentials.stripe.secret_key, settings)
    account = credentials.square
    return square.SquareProvider(account.access_token, account.location_id,
                                 environment=square.environment(account.environment),
                                 base_url=settings.square_base_url or None)


def platform_providers(settings: Settings, livemode: bool) -> dict[str, Provider]:
    """The platform's accounts (the environment, payments.md §1.2) that serve `livemode`."""
    env = settings.env
    providers: dict[str, Provider] = {}
    key = env.get("STRIPE_SECRET_KEY", "")
    if key and stripe.key_livemode(key) == livemode:
        providers["stripe"] = _stripe(key, settings)
    sandbox = square.environment(env.get("SQUARE_ENVIRONMENT", "")) is (
        square.SquareEnvironment.SANDBOX)
    if sandbox != livemode:
        account = square.SquareProvider.from_env(env, base_url=settings.square_base_url or None)
        if account is not None:
            providers["square"] = account
    return providers


def _stripe(secret_key: str, settings: Settings) -> Provider:
    return stripe.StripeProvider(secret_key, api_base=settings.stripe_api_base or stripe.API_BASE)


@dataclass
class _Cached:
    registry: Registry
    stored: Stored  # the settings it was built from (version -1: none stored)
    own: bool  # its clients are its own (else the platform's, shared)
    fresh_until: float


class Providers:
    """Every organization's registry in each mode, cached (built by the bootstrap).

    `load(org_id, livemode)` reads an organization's settings. A registry is trusted for
    `TTL` seconds, then the settings are read again and the registry rebuilt only if they
    changed (their version)."""

    def __init__(self, settings: Settings,
                 load: Callable[[str, bool], Awaitable[Stored]], *,
                 clock: Callable[[], float] = time.monotonic):
        self.offline_everywhere = settings.payments_offline
        self._settings = settings
        self._load = load
        self._clock = clock
        self._platform = {mode: Registry(platform_providers(settings, mode))
                          for mode in (False, True)}
        self._cache: dict[tuple[str, bool], _Cached] = {}
        self._loading: SharedLoads[tuple[str, bool], Registry] = SharedLoads()
        self._retired: list[tuple[float, Registry]] = []

    async def for_scope(self, scope: Scope, token: str = "") -> Provider:
        registry, offline = await self._lookup(scope)
        return provider_for(registry, offline, token)

    async def issuer(self, scope: Scope, name: str) -> Provider:
        registry, offline = await self._lookup(scope)
        return issuer(registry, offline, name)

    async def stored(self, org_id: str, livemode: bool) -> Stored:
        """The organization's settings of the mode, as read for its registry (the webhook
        secrets are read from them)."""
        await self._registry(org_id, livemode)
        return self._cache[(org_id, livemode)].stored

    def forget(self, org_id: str, livemode: bool) -> None:
        """The organization's settings changed: the next lookup reads them."""
        cached = self._cache.get((org_id, livemode))
        if cached is not None:
            cached.fresh_until = 0.0

    async def close(self) -> None:
        registries = [*(c.registry for c in self._cache.values() if c.own),
                      *(r for _, r in self._retired), *self._platform.values()]
        self._cache, self._retired = {}, []
        for registry in registries:
            await _close(registry)

    async def _lookup(self, scope: Scope) -> tuple[Registry, bool]:
        if self.offline_everywhere:
            return Registry(), True
        return await self._registry(scope.org_id, scope.livemode), not scope.livemode

    async def _registry(self, org_id: str, livemode: bool) -> Registry:
        key = (org_id, livemode)
        cached = self._cache.get(key)
        if cached is not None and cached.fresh_until > self._clock():
            return cached.registry
        # Concurrent lookups of one organization share one read (and one new registry).
        return await self._loading(key, lambda: self._refresh(key))

    async def _refresh(self, key: tuple[str, bool]) -> Registry:
        stored = await self._load(*key)
        now = self._clock()
        await self._close_retired(now)
        cached = self._cache.get(key)
        if cached is not None and cached.stored.version == stored.version:
            cached.fresh_until = now + TTL
            return cached.registry
        own = stored.credentials != NONE
        registry = Registry(
            providers_of(stored.credentials, self._settings) if own
            else self._platform[key[1]].providers, stored.preferred)
        if cached is not None and cached.own:
            self._retired.append((now + GRACE, cached.registry))
        self._cache[key] = _Cached(registry, stored, own, now + TTL)
        return registry

    async def _close_retired(self, now: float) -> None:
        due = [r for t, r in self._retired if t <= now]
        self._retired = [(t, r) for t, r in self._retired if t > now]
        for registry in due:
            await _close(registry)


async def _close(registry: Registry) -> None:
    for provider in registry.providers.values():
        await provider.close()
