"""What a route is: the endpoint it calls, its access class, where its params come from and
where it names its user. Special routes (asynchronous ingest, provider webhooks, files,
what the gateway answers itself, pages) say so by their `kind` and are served by that
kind's handler."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from contracts.endpoint import Endpoint

# Access classes (conventions §10.3) and the roles each admits. `mint` is decided by the
# caller's `may_mint` (mint policy), not by role alone.
ROLES_ALLOWED = {
    "public": frozenset({"platform", "admin", "user", "publishable"}),
    "user": frozenset({"platform", "admin", "user"}),
    "admin": frozenset({"platform", "admin"}),
    "platform": frozenset({"platform"}),
}

# How a route is served: `bus` (one request to its endpoint), `ingest` (meter events that
# may be accepted asynchronously: `Prefer: respond-async`) or `webhook` (a provider's
# delivery: raw body, no credential, the signature checked by the service; access
# `webhook`) or `document` (a file the service made, answered as that file: an invoice's
# PDF) or `gateway` (answered by the gateway itself, `Answered`: from the caller alone, or
# composed from several bus requests) or `page` (the customer portal page and what it
# calls: a portal session instead of a credential, access `portal`).
KINDS = frozenset({"bus", "ingest", "webhook", "document", "gateway", "page"})


@dataclass(frozen=True, slots=True)
class Answered:
    """What a `gateway` or `page` route calls instead of a service's endpoint: `answer`, a
    coroutine of the gateway's. Named and typed like an `Endpoint` (its subject is never
    sent: `billing.gateway.<resource>.<action>`), so decoding and the OpenAPI document treat
    both alike."""

    subject: str
    params: type
    result: Any  # the success body's type; None: not JSON (a page, a redirect)
    answer: Callable[..., Awaitable[Any]]
_PATTERN = re.compile(r"\{(\w+):[^}]*\}")


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str  # below the prefix, aiohttp syntax for path parameters
    endpoint: Endpoint | Answered | None  # None: ZAP, which calls the methods' endpoints
    access: str  # public | user | admin | mint | platform | webhook | portal
    source: str = "body"  # "body", "query", "optional" (a body that does not decode is
    # ignored) or "raw" (the bytes as sent: webhook routes)
    user_field: str | None = "user"  # the param naming the target user, scoped for role user
    idempotent: bool = False  # honours Idempotency-Key
    status: int = 200  # the success status (201 creates and ledger writes, 202, 204)
    max_body: int = 0  # bytes; a larger body is `invalid request body` (0: the gateway's limit)
    kind: str = "bus"
    other_user_message: str = "cannot access another user's account"

    @property
    def params(self) -> Any:
        """The struct the body or query decodes into."""
        return self.endpoint.params if self.endpoint is not None else dict

    @property
    def template(self) -> str:
        """The path as OpenAPI writes it: aiohttp's segment patterns (`{id:.+}`) left out."""
        return _PATTERN.sub(r"{\1}", self.path)

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"
