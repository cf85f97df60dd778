"""Bus contracts: the only thing services share about each other.

Every request is `Request[P]` (a `Scope` plus typed params); every reply is `Reply`
(a result or a typed `BusError`). Each subject is declared once, as an `Endpoint`
(`contracts.endpoint`), next to its params and result structs.
"""

from contracts.envelope import (
    Actor,
    BusError,
    ErrorCode,
    RawReply,
    Reply,
    Request,
    Scope,
)

__all__ = ["Actor", "BusError", "ErrorCode", "RawReply", "Reply", "Request", "Scope"]
