"""Webhook deliveries, pure: which endpoints an event goes to, when a failed delivery is
tried again, and what a sender's run through an endpoint's queue leaves behind (§6.5).
No I/O; times come from the caller's clock.

The schedule: a failed attempt is tried again after 1 m, 5 m, 30 m, 2 h, 8 h, 24 h, then
every 24 h (each ±10 %), and a last time three days after the endpoint's first failure
since it last succeeded. Deliveries go in order, so a failing one holds its endpoint's
queue: when it fails that last time, it is final (`failed`) and the endpoint is disabled."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from contracts.errors import invalid, not_found
from contracts.ids import new_id, rfc3339
from contracts.limits import Page
from contracts.webhooks import WEBHOOK_ENDPOINT_DISABLED, WebhookAttempt, WebhookDelivery
from services.payments.events.domain import Logged
from services.payments.webhook_endpoints.domain import matches

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
CANCELED = "canceled"

RETRY_AFTER_S = (60, 300, 1800, 7200, 28800, 86400)  # after the 1st, 2nd, … failure
GIVE_UP_AFTER = timedelta(days=3)
JITTER = 0.1  # each delay is ±10 %
TIMEOUT_S = 10.0  # success: a 2xx within this
RESPONSE_CHARS = 256  # what is kept of an answer

PAGE = Page(100, 100)  # a row with its latest attempt at every limit: ~4 KB as JSON

DELIVERY_NOT_FOUND = "webhook delivery not found"
STILL_PENDING = "webhook delivery is still pending"
ENDPOINT_DISABLED = "webhook endpoint is disabled"


# ---- fan-out -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewDelivery:
    id: str
    org_id: str
    livemode: bool
    endpoint_id: str
    event_id: str
    event_type: str


def deliveries_for(events: Iterable[Logged], endpoints: Iterable[Mapping[str, Any]],
                   ) -> list[NewDelivery]:
    """One delivery per event and enabled endpoint of its organization and mode that wants
    its type, in the events' order. An endpoint is not told of its own disabling."""
    by_scope: dict[tuple[str, bool], list[Mapping[str, Any]]] = {}
    for e in endpoints:
        by_scope.setdefault((e["org_id"], e["livemode"]), []).append(e)
    return [NewDelivery(new_id("whd_"), ev.org_id, ev.livemode, e["id"], ev.id, ev.type)
            for ev in events for e in by_scope.get((ev.org_id, ev.livemode), ())
            if matches(e["events"], ev.type)
            and not (ev.type == WEBHOOK_ENDPOINT_DISABLED and ev.object_id == e["id"])]


# ---- attempts --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    """One POST of a delivery; the store's columns by the same names."""

    delivery_id: str
    attempt: int
    at: datetime
    status_code: int  # 0: no answer
    latency_ms: int
    error: str = ""
    response: str = ""

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status_code < 300 and not self.error


def failure_text(status_code: int) -> str:
    return "" if 200 <= status_code < 300 else f"HTTP {status_code}"


def retry_at(failures: int, failing_since: datetime, now: datetime, jitter: float,
             ) -> datetime | None:
    """When a delivery that has now failed `failures` times is tried again (`jitter` in
    [-1, 1] scales the ±10 %); None when the endpoint has failed for three days."""
    give_up = failing_since + GIVE_UP_AFTER
    if now >= give_up:
        return None
    delay = RETRY_AFTER_S[min(failures, len(RETRY_AFTER_S)) - 1] * (1 + JITTER * jitter)
    return min(now + timedelta(seconds=delay), give_up)


@dataclass(frozen=True, slots=True)
class Settled:
    """What a run through an endpoint's queue leaves: the deliveries that succeeded, the
    one that failed (if any) and when it is next tried (None: never; the endpoint is
    disabled), and the endpoint's state."""

    delivered: list[Attempt]
    failed: Attempt | None
    failures: int  # the failed one's, now
    retry: datetime | None
    failing_since: datetime | None
    next_attempt_at: datetime | None  # None: leave it as fan-out set it meanwhile

    @property
    def disable(self) -> bool:
        return self.failed is not None and self.retry is None


def settle(attempts: list[Attempt], failures_before: int, failing_since: datetime | None,
           more_waiting: bool, now: datetime, jitter: float) -> Settled:
    """`attempts` were made in queue order, stopping at the first failure (which had
    failed `failures_before` times before); `more_waiting`: the run did not empty the
    queue it loaded."""
    delivered = [a for a in attempts if a.succeeded]
    failed = attempts[-1] if attempts and not attempts[-1].succeeded else None
    if delivered:
        failing_since = None
    if failed is None:
        return Settled(delivered, None, 0, None, failing_since, now if more_waiting else None)
    failing_since = failing_since or failed.at
    retry = retry_at(failures_before + 1, failing_since, now, jitter)
    return Settled(delivered, failed, failures_before + 1, retry, failing_since, retry)


# ---- views -----------------------------------------------------------------------------------


def attempt_view(row: Mapping[str, Any]) -> WebhookAttempt:
    return WebhookAttempt(attempt=row["attempt"], at=rfc3339(row["at"]),
                          latencyMs=row["latency_ms"], status=row["status_code"],
                          error=row["error"], response=row["response"])


def view(row: Mapping[str, Any], attempts: list[Mapping[str, Any]] | None = None,
         ) -> WebhookDelivery:
    last = _last_attempt(row)
    d = WebhookDelivery(id=row["id"], endpointId=row["endpoint_id"], eventId=row["event_id"],
                        eventType=row["event_type"], status=row["status"],
                        attemptCount=row["attempt_count"], created=rfc3339(row["created_at"]),
                        livemode=row["livemode"])
    if row["status"] == PENDING and row["next_attempt_at"] is not None:
        d.nextAttempt = rfc3339(row["next_attempt_at"])
    if row["delivered_at"] is not None:
        d.deliveredAt = rfc3339(row["delivered_at"])
    if last is not None:
        d.lastAttempt = attempt_view(last)
    if attempts is not None:
        d.attempts = [attempt_view(a) for a in attempts]
    return d


def _last_attempt(row: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A list row's latest attempt (its `last_<column>`s), if any."""
    if row.get("last_attempt") is None:
        return None
    return {name: row["last_" + name] for name in (
        "attempt", "at", "status_code", "latency_ms", "error", "response")}


def found(row: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if row is None:
        raise not_found(DELIVERY_NOT_FOUND)
    return row


def redeliverable(delivery_status: str, endpoint_status: str) -> None:
    if endpoint_status != "enabled":
        raise invalid(ENDPOINT_DISABLED)
    if delivery_status == PENDING:
        raise invalid(STILL_PENDING)
