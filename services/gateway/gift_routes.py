"""Gift subscription routes (ledger.md §2.10; the reference had only its grant CLI).

`POST /billing/subscriptions/gifts` {userId, planId (a catalog slug), days, reason}: the
`mint` class (a gift is a plan for free), idempotent under `Idempotency-Key`; 201 with a new
gift, 200 when an existing gift of the plan was extended. `billing grant` sends the same
bus request."""

from __future__ import annotations

from contracts import gifts
from services.gateway.routing import Route

GIFT_ROUTES: tuple[Route, ...] = (
    Route("POST", "/billing/subscriptions/gifts", gifts.GIFT_GRANT, "mint",
          user_field="userId", idempotent=True, status=201),
)
