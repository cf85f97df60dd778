"""A service's view of its customers' subscriptions (contracts/entitlements.py): asked of the
subscriptions service over the bus and kept briefly, so the limits that depend on a plan
(the ledger's tiers, metering's DNS limits) cost one bus question a user every `ttl_s`.

`None` when the subscriptions service does not answer (not deployed, or away): the asker
keeps its behaviour from before subscriptions existed. That is not cached, so the answer
comes back as soon as the service does."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from contracts import Scope
from contracts.entitlements import ENTITLEMENT_GET, EntitlementQuery, Entitlements

if TYPE_CHECKING:
    from services.runtime.service import Context

TTL_S = 30.0
MAX_USERS = 10_000  # cached answers; the least recently used go first
ASK_TIMEOUT_S = 0.5  # a limit check does not wait long for an optional answer


class EntitlementCache:
    def __init__(self, ttl_s: float = TTL_S, max_users: int = MAX_USERS):
        self._ttl_s = ttl_s
        self._max = max_users
        self._known: OrderedDict[tuple[str, bool, str], tuple[float, Entitlements]] = (
            OrderedDict())

    async def of(self, ctx: Context, scope: Scope, user: str) -> Entitlements | None:
        key = (scope.org_id, scope.livemode, user)
        seen = self._known.get(key)
        clock = time.monotonic()
        if seen is not None and clock - seen[0] < self._ttl_s:
            self._known.move_to_end(key)
            return seen[1]
        found = await ctx.ask(ENTITLEMENT_GET, scope, EntitlementQuery(userId=user),
                              timeout=ASK_TIMEOUT_S)
        if found is None:
            self._known.pop(key, None)
            return None
        self._known[key] = (clock, found)
        self._known.move_to_end(key)
        while len(self._known) > self._max:
            self._known.popitem(last=False)
        return found
