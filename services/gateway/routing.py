"""What a route is: its subject, access class, parameters and where it names its user."""

from __future__ import annotations

from dataclasses import dataclass

# Access classes (conventions §10.3) and the roles each admits. `mint` is decided by the
# caller's `may_mint` (mint policy), not by role alone.
ROLES_ALLOWED = {
    "public": frozenset({"platform", "admin", "user", "publishable"}),
    "user": frozenset({"platform", "admin", "user"}),
    "admin": frozenset({"platform", "admin"}),
    "platform": frozenset({"platform"}),
}


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str  # below the prefix, aiohttp syntax for path parameters
    subject: str
    access: str  # public | user | admin | mint | platform
    params: type  # the msgspec struct the body or query decodes into
    source: str = "body"  # "body" or "query"
    user_field: str | None = "user"  # the param naming the target user, scoped for role user
    idempotent: bool = False  # honours Idempotency-Key
    other_user_message: str = "cannot access another user's account"

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"
