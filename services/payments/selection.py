"""Which provider serves a request (payments.md §1.3, §1.6 DO).

Per-organization provider settings come later; until then no organization has a provider of
its own, so: `PAYMENTS_OFFLINE=1` ⇒ offline everywhere; test mode ⇒ offline; live mode ⇒
`400 no payment processor available` (never a faked payment)."""

from __future__ import annotations

from contracts import Scope
from contracts.errors import invalid
from services.payments.providers.base import Provider
from services.payments.providers.offline import OfflineProvider

OFFLINE = OfflineProvider()
NO_PROCESSOR = "no payment processor available"


def provider_for(livemode: bool, offline_everywhere: bool,
                 configured: Provider | None = None) -> Provider:
    if offline_everywhere:
        return OFFLINE
    if configured is not None:
        return configured
    if not livemode:
        return OFFLINE
    raise invalid(NO_PROCESSOR)


class Providers:
    """The providers of every organization and mode (built by the bootstrap; per-org
    credentials will be looked up and cached here)."""

    def __init__(self, offline_everywhere: bool):
        self.offline_everywhere = offline_everywhere

    def for_scope(self, scope: Scope) -> Provider:
        return provider_for(scope.livemode, self.offline_everywhere)

    def issuer(self, scope: Scope, name: str) -> Provider:
        """The provider that issued a saved method or payment: its later calls go to it,
        never to another. One recorded without a provider is served by the current choice."""
        chosen = self.for_scope(scope)
        if name and name != chosen.name:
            raise invalid(NO_PROCESSOR)
        return chosen
