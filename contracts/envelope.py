"""The request/reply envelope every bus message travels in."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

import msgspec

P = TypeVar("P")

ActorKind = Literal["service", "api_key", "iam"]
Role = Literal["platform", "admin", "user", "publishable"]


class Actor(msgspec.Struct, frozen=True, omit_defaults=True):
    """Who is calling, as the gateway authenticated them."""

    kind: ActorKind
    role: Role
    user_id: str | None = None  # canonical `owner/name`, lower-case (IAM users)
    subject: str | None = None  # IAM `sub`
    email: str | None = None
    tier: str | None = None
    key_id: str | None = None  # API key id (never the key itself)
    # Whether this caller may create money (deposit, grants, ...). Decided by the gateway's
    # mint policy and checked again by every service that mints.
    may_mint: bool = False


class Scope(msgspec.Struct, frozen=True, omit_defaults=True):
    """Tenancy, identity and request bookkeeping carried by every request."""

    org_id: str
    org_name: str
    livemode: bool
    actor: Actor
    request_id: str
    idempotency_key: str | None = None
    # SHA-256 of the request as the client sent it; a reused key with another fingerprint
    # is refused (conventions §10.7).
    fingerprint: str | None = None
    deadline_ms: int = 0  # Unix epoch milliseconds; 0 = none


class Request(msgspec.Struct, Generic[P], frozen=True):
    scope: Scope
    params: P


class ErrorCode:
    """Bus error codes and the HTTP status each one usually travels with."""

    INVALID_REQUEST = "invalid_request"  # 400
    INVALID_STATE = "invalid_state"  # 400
    UNAUTHENTICATED = "unauthenticated"  # 401
    PAYMENT_REQUIRED = "payment_required"  # 402
    FORBIDDEN = "forbidden"  # 403
    NOT_FOUND = "not_found"  # 404
    CONFLICT = "conflict"  # 409
    IDEMPOTENCY_IN_PROGRESS = "idempotency_in_progress"  # 409
    IDEMPOTENCY_MISMATCH = "idempotency_mismatch"  # 422
    UNPROCESSABLE = "unprocessable"  # 422
    RATE_LIMITED = "rate_limited"  # 429
    INTERNAL = "internal"  # 500
    REPLY_TOO_LARGE = "reply_too_large"  # 500: over the bus's message limit
    NOT_IMPLEMENTED = "not_implemented"  # 501
    UNAVAILABLE = "unavailable"  # 503
    TIMEOUT = "timeout"  # 504


class BusError(msgspec.Struct, frozen=True, omit_defaults=True):
    """A typed failure. `status` is the HTTP status the gateway must use; it never guesses."""

    code: str
    status: int
    message: str
    param: str | None = None
    retryable: bool = False
    details: dict[str, Any] | None = None


class Reply(msgspec.Struct, omit_defaults=True):
    """Exactly one of `result` / `error` is set.

    `status` is the HTTP success status (201 for creates and ledger writes, 200 otherwise).
    `replayed` marks a response served from the idempotency store.
    A page of a list says how many items there are in all (`total`) and whether more follow
    (`more`); the gateway sends them as `X-Total-Count` / `X-Has-More`.
    """

    result: Any = None
    error: BusError | None = None
    status: int = 200
    replayed: bool = False
    total: int | None = None
    more: bool | None = None


class RawReply(msgspec.Struct, omit_defaults=True):
    """`Reply` as the gateway reads it: the result stays undecoded JSON, written to HTTP as is."""

    result: msgspec.Raw = msgspec.Raw(b"null")
    error: BusError | None = None
    status: int = 200
    replayed: bool = False
    total: int | None = None
    more: bool | None = None
