"""Webhook endpoints, pure: what a create or an update asks (the URL, the event filter, the
status), which events an endpoint wants, its secret and how it is kept. No I/O."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from msgspec import UNSET

from contracts import ErrorCode
from contracts.errors import Failure, invalid, not_found
from contracts.ids import rfc3339
from contracts.limits import Page
from contracts.webhooks import (
    ALL_EVENTS,
    EVENT_TYPES,
    WebhookEndpoint,
    WebhookEndpointCreateParams,
    WebhookEndpointUpdateParams,
)
from services.runtime.encryption import SecretBox, SecretsError

# A row at every limit is ~20 KB as JSON (a 2048-character URL, a description of control
# characters, every event type): 50 of them stay well inside one bus message.
PAGE = Page(50, 50)

# After a rotation the previous secret signs too (a second `v1`) for this long, so
# receivers can switch without missing a delivery (§6.3 DO).
ROTATION_OVERLAP = timedelta(hours=24)

ENABLED = "enabled"
DISABLED = "disabled"

ENDPOINT_NOT_FOUND = "webhook endpoint not found"
URL_REQUIRED = "url is required"
URL_NOT_HTTPS = "url must be an absolute https URL"
URL_NOT_PUBLIC = "url must be a public address in live mode"
NO_KEY_TO_STORE = "webhook endpoints cannot be stored: BILLING_SECRETS_KEY is not set"
NO_KEY_TO_READ = "webhook secrets cannot be read: BILLING_SECRETS_KEY is not set"


def new_secret() -> str:
    """`whsec_` + 64 lower-case hex characters (32 random bytes, §2.9)."""
    return "whsec_" + secrets.token_hex(32)


@dataclass(frozen=True, slots=True)
class Change:
    """An update, checked: None leaves a field as it is."""

    url: str | None
    events: list[str] | None
    status: str | None
    description: str | None


def url(raw: str, livemode: bool) -> str:
    """An absolute https URL (http only in test mode); in live mode not a loopback, private
    or link-local address, nor `localhost` (SSRF: the sender checks resolved names too)."""
    value = raw.strip()
    if not value:
        raise invalid(URL_REQUIRED, "url")
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - a port that is no number raises here
    except ValueError:
        raise invalid(URL_NOT_HTTPS, "url") from None
    schemes = ("https",) if livemode else ("https", "http")
    if (parts.scheme not in schemes or not host or any(c.isspace() or not c.isprintable()
                                                       for c in value)):
        raise invalid(URL_NOT_HTTPS, "url")
    if livemode and not public_host(host):
        raise invalid(URL_NOT_PUBLIC, "url")
    return value


def public_host(host: str) -> bool:
    """Whether a host name or address may be a live endpoint: no literal private address,
    no `localhost`."""
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        return True  # a name: its addresses are checked when it is resolved


def event_types(given: list[str] | None) -> list[str]:
    """The filter: known types (§7) or `*`, each once, in the order given."""
    out: list[str] = []
    for raw in given or ():
        name = raw.strip()
        if name != ALL_EVENTS and name not in EVENT_TYPES:
            raise invalid(f"unknown event type {name}", "events")
        if name not in out:
            out.append(name)
    return out


def matches(events: list[str] | None, event_type: str) -> bool:
    """Whether an endpoint with this filter wants events of this type (§2.9)."""
    return not events or ALL_EVENTS in events or event_type in events


def created(p: WebhookEndpointCreateParams, livemode: bool) -> tuple[str, list[str], str]:
    """(url, events, description) of a new endpoint."""
    return url(p.url, livemode), event_types(p.events), p.description


def change(p: WebhookEndpointUpdateParams, livemode: bool) -> Change:
    status = None
    if p.status is not UNSET:
        status = p.status.strip()
        if status not in (ENABLED, DISABLED):
            raise invalid("status must be enabled or disabled", "status")
    return Change(url=None if p.url is UNSET else url(p.url, livemode),
                  events=None if p.events is UNSET else event_types(p.events),
                  status=status,
                  description=None if p.description is UNSET else p.description)


def view(row: Mapping[str, Any], secret: str | None = None) -> WebhookEndpoint:
    return WebhookEndpoint(id=row["id"], url=row["url"], status=row["status"],
                           events=list(row["events"]), description=row["description"],
                           created=rfc3339(row["created_at"]), livemode=row["livemode"],
                           secret=UNSET if secret is None else secret)


def found(row: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if row is None:
        raise not_found(ENDPOINT_NOT_FOUND)
    return row


# ---- the secret at rest -------------------------------------------------------------------


def _context(org_id: str, livemode: bool, endpoint_id: str) -> str:
    return f"webhook-endpoint:{org_id}:{'live' if livemode else 'test'}:{endpoint_id}"


def seal(box: SecretBox | None, org_id: str, livemode: bool, endpoint_id: str,
         secret: str) -> tuple[str, bytes]:
    """(key id, sealed secret): it opens only for this endpoint."""
    if box is None:
        raise Failure(ErrorCode.UNAVAILABLE, 503, NO_KEY_TO_STORE)
    return box.seal(secret.encode(), _context(org_id, livemode, endpoint_id))


def unseal(box: SecretBox | None, org_id: str, livemode: bool, endpoint_id: str,
           key_id: str, sealed: bytes) -> str:
    """The secret; raises SecretsError when it cannot be opened (no key, another key)."""
    if box is None:
        raise SecretsError(NO_KEY_TO_READ)
    return box.open(key_id, sealed, _context(org_id, livemode, endpoint_id)).decode()
