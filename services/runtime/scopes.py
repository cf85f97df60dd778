"""The scope a service acts in on its own account (its jobs and consumers), for an
organization and mode: the platform's role, no client key."""

from __future__ import annotations

from contracts import Scope
from contracts.envelope import Actor
from contracts.ids import new_id

SERVICE = Actor(kind="service", role="platform", may_mint=True)


def service_scope(org_id: str, livemode: bool, org_name: str = "") -> Scope:
    return Scope(org_id=org_id, org_name=org_name, livemode=livemode, actor=SERVICE,
                 request_id=new_id("req_"))
