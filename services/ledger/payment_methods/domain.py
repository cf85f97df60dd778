"""What a payment-method event tells the ledger, free of I/O."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from contracts import events
from contracts.payments import (
    PAYMENT_METHOD_ATTACHED,
    PAYMENT_METHOD_DETACHED,
    PAYMENT_METHOD_UPDATED,
    PaymentMethod,
)
from contracts.rules import user_id

_decode = msgspec.json.Decoder(events.Event).decode
_KINDS = frozenset({PAYMENT_METHOD_ATTACHED, PAYMENT_METHOD_UPDATED, PAYMENT_METHOD_DETACHED})


@dataclass(frozen=True, slots=True)
class MethodState:
    """A method as an event leaves it. Each flag only ever turns true (a provider does not
    take back its acceptance; a detached method never returns), so states of one method
    combine by `or`, in any order, any number of times."""

    org_id: str
    livemode: bool
    method_id: str
    customer_id: str
    verified: bool
    detached: bool


def read(raw: bytes) -> MethodState | None:
    """The method as the event (an encoded `events.Event`) leaves it; None for a kind of
    payment-method event that says nothing of whether it can pay. Raises msgspec's errors
    for a message that is no such event."""
    event = _decode(raw)
    if event.type not in _KINDS:
        return None
    method = msgspec.convert(event.data, PaymentMethod)
    return MethodState(event.orgId, event.livemode, method.id, user_id(method.customerId),
                       verified=method.metadata.get("verified") is True,
                       detached=event.type == PAYMENT_METHOD_DETACHED)


def merged(states: list[MethodState]) -> list[MethodState]:
    """One state per method (a batch of events may carry several of one method; a statement
    writes a row once)."""
    out: dict[tuple[str, bool, str], MethodState] = {}
    for s in states:
        key = (s.org_id, s.livemode, s.method_id)
        seen = out.get(key)
        out[key] = s if seen is None else MethodState(
            s.org_id, s.livemode, s.method_id, seen.customer_id,
            seen.verified or s.verified, seen.detached or s.detached)
    return list(out.values())
