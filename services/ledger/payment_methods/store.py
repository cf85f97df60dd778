"""The SQL of the ledger's copy of payment methods (`ledger.payment_methods`)."""

from __future__ import annotations

import asyncpg

from services.ledger.payment_methods.domain import MethodState

# A flag only turns true (domain.MethodState): an event already applied, late or again,
# matches no row to change and writes nothing.
_APPLY = """
insert into ledger.payment_methods as m (org_id, livemode, id, customer_id, verified, detached)
select * from unnest($1::text[], $2::boolean[], $3::text[], $4::text[], $5::boolean[],
                     $6::boolean[])
on conflict (org_id, livemode, id) do update
set verified = m.verified or excluded.verified, detached = m.detached or excluded.detached,
    updated_at = now()
where excluded.verified > m.verified or excluded.detached > m.detached
"""


async def apply(db: asyncpg.Pool, states: list[MethodState]) -> None:
    """Record what events say of methods (one state per method), in one statement."""
    orgs, modes, ids, customers, verified, detached = zip(*(
        (s.org_id, s.livemode, s.method_id, s.customer_id, s.verified, s.detached)
        for s in states), strict=True)
    await db.execute(_APPLY, orgs, modes, ids, customers, verified, detached)
