"""Which provider serves a request (payments.md §1.3, §1.6 DO, §11 7–8): token shapes, the
preferred processor and the priority, the offline provider only where no money can move, the
platform's accounts by mode, and the per-organization cache. No network: providers are
stand-ins (the platform's are built but never called)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from services.payments import selection
from services.payments.provider_settings.domain import (
    NOTHING,
    Credentials,
    SquareAccount,
    Stored,
    StripeAccount,
)
from services.payments.providers.square import SquareProvider
from services.payments.providers.stripe import StripeProvider
from services.payments.selection import (
    NO_PROCESSOR,
    OFFLINE,
    Providers,
    Registry,
    issuer,
    provider_for,
    token_issuer,
)
from services.runtime.config import Settings
from tests.support import refused, scope


class Stub:
    def __init__(self, name: str):
        self.name = name
        self.closed = False

    async def close(self) -> None:
        self.closed = True


SQUARE, STRIPE = Stub("square"), Stub("stripe")
BOTH = Registry({"square": SQUARE, "stripe": STRIPE})


def test_a_tokens_shape_names_its_issuer():
    for token in ("cnon:card-nonce-ok", "ccof:GaJGNaZa8x4OgDJn4GB"):
        assert token_issuer(token) == "square"
    for token in ("pm_1Pgaf0", "tok_visa", "src_123", "card_123"):
        assert token_issuer(token) == "stripe"
    for token in ("", "4242424242424242", "nonce", "PM_1"):
        assert token_issuer(token) == ""


def test_a_token_goes_to_the_provider_that_issued_it_or_nowhere():  # §11 7
    preferring_square = Registry(BOTH.providers, preferred="square")
    assert provider_for(preferring_square, False, "pm_card_visa") is STRIPE
    assert provider_for(Registry(BOTH.providers, "stripe"), False, "cnon:ok") is SQUARE
    only_square = Registry({"square": SQUARE})
    assert refused(provider_for, only_square, True, "tok_visa") == (
        400, "payment processor stripe is not configured")
    assert provider_for(only_square, True, "4242424242424242") is SQUARE  # no shape: priority
    # Nothing configured: the offline provider stands in where it may (test mode).
    assert provider_for(Registry(), True, "tok_visa") is OFFLINE
    assert refused(provider_for, Registry(), False, "tok_visa") == (400, NO_PROCESSOR)


def test_without_a_token_the_preference_then_square_then_stripe():
    assert provider_for(BOTH, False) is SQUARE
    assert provider_for(Registry(BOTH.providers, "stripe"), False) is STRIPE
    assert provider_for(Registry({"stripe": STRIPE}, "square"), False) is STRIPE
    assert provider_for(Registry(), True) is OFFLINE  # test mode, no provider
    assert refused(provider_for, Registry(), False) == (400, NO_PROCESSOR)  # live, none


def test_later_calls_go_to_the_issuer_or_are_refused():
    assert issuer(BOTH, False, "stripe") is STRIPE
    assert issuer(Registry({"square": SQUARE}), True, "square") is SQUARE
    assert refused(issuer, Registry({"square": SQUARE}), True, "stripe") == (
        400, "payment processor stripe is not configured")
    assert issuer(BOTH, True, "offline") is OFFLINE  # test mode: a simulated method stays so
    assert refused(issuer, BOTH, False, "offline") == (
        400, "payment processor offline is not configured")
    assert issuer(BOTH, False, "") is SQUARE  # recorded without one: today's choice
    assert refused(issuer, Registry(), False, "") == (400, NO_PROCESSOR)


@pytest.mark.parametrize(("env", "test_mode", "live_mode"), [
    ({}, set(), set()),
    ({"STRIPE_SECRET_KEY": "sk_test_1"}, {"stripe"}, set()),
    ({"STRIPE_SECRET_KEY": "rk_live_1"}, set(), {"stripe"}),
    ({"SQUARE_ACCESS_TOKEN": "t", "SQUARE_LOCATION_ID": "L"}, set(), {"square"}),
    ({"SQUARE_ACCESS_TOKEN": "t", "SQUARE_LOCATION_ID": "L", "SQUARE_ENVIRONMENT": "test"},
     {"square"}, set()),
    ({"SQUARE_ACCESS_TOKEN": "t", "SQUARE_ENVIRONMENT": "sandbox"}, set(), set()),  # no location
    ({"STRIPE_SECRET_KEY": "sk_live_1", "SQUARE_ACCESS_TOKEN": "t", "SQUARE_LOCATION_ID": "L",
      "SQUARE_ENVIRONMENT": "production"}, set(), {"square", "stripe"}),
])
async def test_the_platforms_accounts_serve_the_mode_they_belong_to(env, test_mode, live_mode):
    settings = Settings.from_env(env)
    for livemode, expected in ((False, test_mode), (True, live_mode)):
        providers = selection.platform_providers(settings, livemode)
        assert set(providers) == expected
        for provider in providers.values():
            await provider.close()


async def test_an_organizations_accounts_point_at_the_platforms_base_urls():
    settings = Settings.from_env({"STRIPE_API_BASE": "http://127.0.0.1:9",
                                  "SQUARE_BASE_URL": "http://127.0.0.1:8"})
    built = selection.providers_of(Credentials(stripe=StripeAccount("sk_test_1")), settings)
    assert isinstance(built["stripe"], StripeProvider) and set(built) == {"stripe"}
    await built["stripe"].close()
    built = selection.providers_of(Credentials(
        square=SquareAccount("t", "L", "sandbox")), settings)
    assert isinstance(built["square"], SquareProvider)
    assert built["square"]._client._client_wrapper.get_base_url() == "http://127.0.0.1:8"
    await built["square"].close()


# ---- the cache ---------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Organization:
    """What the organization has stored, as the load function reads it."""

    def __init__(self):
        self.stored = NOTHING
        self.loads = 0

    async def load(self, org_id: str, livemode: bool) -> Stored:
        self.loads += 1
        await asyncio.sleep(0.01)
        return self.stored

    def store(self, version: int, preferred: str = "") -> None:
        self.stored = Stored(version, preferred, Credentials(stripe=StripeAccount("sk_test_1")),
                             datetime.now(UTC))


@pytest.fixture
def built(monkeypatch):
    """The stand-ins built from stored credentials, in order."""
    made: list[Stub] = []

    def providers_of(credentials, settings):
        made.append(Stub("stripe"))
        return {"stripe": made[-1]}

    monkeypatch.setattr(selection, "providers_of", providers_of)
    return made


async def test_a_registry_is_read_once_per_ttl_and_rebuilt_only_when_changed(built):
    clock, org = Clock(), Organization()
    providers = Providers(Settings(), org.load, clock=clock)
    test = scope("org_1")
    assert await providers.for_scope(test) is OFFLINE and org.loads == 1
    assert await providers.for_scope(test) is OFFLINE and org.loads == 1  # cached
    org.store(version=0)
    assert await providers.for_scope(test) is OFFLINE  # not seen before the TTL...
    providers.forget("org_1", False)  # ...unless this replica made the change
    first = await providers.for_scope(test)
    assert first is built[0] and org.loads == 2
    clock.now += selection.TTL + 1
    assert await providers.for_scope(test) is first and org.loads == 3  # same version: kept
    org.store(version=1, preferred="stripe")
    clock.now += selection.TTL + 1
    second = await providers.for_scope(test)
    assert second is built[1] and not first.closed  # calls under way may still use it
    clock.now += selection.GRACE
    await providers.for_scope(test)
    assert first.closed and not second.closed
    await providers.close()
    assert second.closed


async def test_concurrent_lookups_share_one_read(built):
    org = Organization()
    org.store(version=3)
    providers = Providers(Settings(), org.load)
    found = await asyncio.gather(*[providers.for_scope(scope("org_1")) for _ in range(20)])
    assert org.loads == 1 and len(built) == 1 and all(p is built[0] for p in found)
    await providers.close()


async def test_modes_and_organizations_are_apart(built):
    org = Organization()
    org.store(version=0)
    providers = Providers(Settings(), org.load)
    await providers.for_scope(scope("org_1"))
    await providers.for_scope(scope("org_1", livemode=True))
    await providers.for_scope(scope("org_2"))
    assert org.loads == 3 and len(built) == 3
    await providers.close()


async def test_a_settings_read_that_fails_is_not_cached():
    calls = []

    async def load(org_id, livemode):
        calls.append(org_id)
        if len(calls) == 1:
            raise RuntimeError("database unavailable")
        return NOTHING

    providers = Providers(Settings(), load)
    with pytest.raises(RuntimeError):
        await providers.for_scope(scope("org_1"))
    assert await providers.for_scope(scope("org_1")) is OFFLINE and len(calls) == 2


async def test_payments_offline_serves_everything_without_reading_settings():
    async def load(org_id, livemode):
        raise AssertionError("not read")

    providers = Providers(Settings.from_env({"PAYMENTS_OFFLINE": "1"}), load)
    live = scope("org_1", livemode=True)
    assert await providers.for_scope(live, "pm_card_visa") is OFFLINE
    assert await providers.issuer(live, "offline") is OFFLINE
    with pytest.raises(Exception, match="stripe is not configured"):
        await providers.issuer(live, "stripe")
