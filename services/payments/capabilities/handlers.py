"""`GET /billing/capabilities` (subscriptions.md §3.7): static, the same for every tenant."""

from __future__ import annotations

from contracts import Scope
from contracts.payments import CAPABILITIES_GET, Capabilities, CapabilitiesQuery
from services.payments.capabilities.domain import CAPABILITIES
from services.runtime.service import Context, Router

router = Router()


@router.handler(CAPABILITIES_GET)
async def get_capabilities(ctx: Context, scope: Scope, p: CapabilitiesQuery) -> Capabilities:
    return CAPABILITIES
