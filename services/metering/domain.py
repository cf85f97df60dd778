"""Metering rules, free of I/O: meters, the validation of a meter-event batch, event ids,
summary windows and aggregation, DNS plans and daily limits.

A batch's own rules (validation, event ids, reserved keys) are shared with the gateway and
the ledger: `contracts.meter_events`.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, date, datetime, timedelta

import msgspec

from contracts import ErrorCode
from contracts.catalog import Catalog, Plan
from contracts.common import INT64_MAX, INT64_MIN
from contracts.errors import Failure, invalid
from contracts.meter_events import AHEAD, BACKDATE, parse_rfc3339, to_us
from contracts.rules import currency_of

# Dedup keys live at least as long as the oldest timestamp we accept, plus a day of margin.
DEDUP_RETENTION = BACKDATE + timedelta(days=1)

AGGREGATIONS = frozenset({"sum", "count", "last", "max", "min", "unique_count"})
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def start_of_day(ts: datetime) -> datetime:
    ts = ts.astimezone(UTC)
    return datetime(ts.year, ts.month, ts.day, tzinfo=UTC)


def start_of_month(ts: datetime) -> datetime:
    ts = ts.astimezone(UTC)
    return datetime(ts.year, ts.month, 1, tzinfo=UTC)


def next_month(ts: datetime) -> datetime:
    return datetime(ts.year + ts.month // 12, ts.month % 12 + 1, 1, tzinfo=UTC)


# Event partitions are kept from a few days before the oldest accepted timestamp: upkeep
# runs hourly, and a batch may wait in the stream (or the dead letters) a while before it
# is stored.
PARTITION_MARGIN = timedelta(days=5)


def first_month_needed(now: datetime) -> datetime:
    """The oldest month an accepted event can still fall in."""
    return start_of_month(now - BACKDATE - PARTITION_MARGIN)


def retention_cutoff(now: datetime, months: int) -> datetime:
    """Event months before this one may be dropped under a retention of `months` months
    back from the current one — but never a month the accepted window still reaches."""
    oldest = start_of_month(now)
    for _ in range(months):
        oldest = start_of_month(oldest - timedelta(days=1))
    return min(oldest, first_month_needed(now))


# ---- meters ----------------------------------------------------------------------------


def new_meter(name: str, event_name: str, aggregation: str, currency: str) -> tuple[str, str]:
    """Checks a meter to create, in the reference's order; returns (aggregation, currency).
    Names are kept as given: only the empty string is refused."""
    if name == "":
        raise invalid("name is required", "name")
    if event_name == "":
        raise invalid("eventName is required", "eventName")
    aggregation = aggregation.lower() or "sum"
    if aggregation not in AGGREGATIONS:
        raise invalid("invalid aggregationType", "aggregationType")
    return aggregation, currency_of(currency)


def meter_exists_conflict() -> Failure:
    return Failure(ErrorCode.CONFLICT, 409, "meter with this eventName already exists")




# ---- summaries -------------------------------------------------------------------------


class Window(msgspec.Struct, frozen=True):
    start: datetime | None = None  # inclusive
    end: datetime | None = None
    end_inclusive: bool = False


def _bound(raw: str, message: str) -> tuple[datetime | None, bool]:
    """(instant, date_only) of a period bound; empty = unbounded."""
    if raw == "":
        return None, False
    if _DATE.match(raw):
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            raise invalid(message) from None
        return datetime(day.year, day.month, day.day, tzinfo=UTC), True
    ts = parse_rfc3339(raw)
    if ts is None:
        raise invalid(message)
    return ts, False


def summary_window(period_start: str, period_end: str) -> Window:
    """`periodStart` is inclusive. `periodEnd` as RFC 3339 is inclusive (the reference);
    date-only means up to the end of that day, exclusive of the next midnight (Δ)."""
    start, _ = _bound(period_start, "invalid periodStart format")
    end, date_only = _bound(period_end, "invalid periodEnd format")
    if end is not None and date_only:
        if end.date() == date.max:  # up to the end of time: no next midnight to stop at
            return Window(start, None)
        return Window(start, end + timedelta(days=1), end_inclusive=False)
    return Window(start, end, end_inclusive=end is not None)


HOUR = timedelta(hours=1)


def hour_of(ts: datetime) -> datetime:
    """The UTC hour `ts` falls in (the rollups' buckets)."""
    ts = ts.astimezone(UTC)
    return ts.replace(minute=0, second=0, microsecond=0)


def shards_folded_before(now: datetime) -> datetime:
    """The hours whose rollup shards upkeep folds: all but the current and the previous
    one, where concurrent writers still add most of their events."""
    return hour_of(now) - HOUR


class WindowParts(msgspec.Struct, frozen=True):
    """A window cut for the rollups: the whole hours [hours_from, hours_to) (None:
    unbounded) read from them — none when `whole_hours` is false — and the rest, at most
    two windows within an hour or two, read from the events."""

    whole_hours: bool
    hours_from: datetime | None
    hours_to: datetime | None
    edges: tuple[Window, ...]

    def edge_hours(self) -> list[datetime]:
        """The hours the edges' events fall in (an edge spans two at most)."""
        return sorted({hour_of(t) for e in self.edges for t in (
            e.start, e.end if e.end_inclusive else e.end - timedelta(microseconds=1))})


def window_parts(window: Window) -> WindowParts:
    """Whole hours from the rollups, the partial hours at either end from the events: exact
    for any window, and the events read are at most two hours' worth."""
    start, end = window.start, window.end
    first = None if start is None else hour_of(start) + (HOUR if start != hour_of(start)
                                                          else timedelta(0))
    last = None if end is None else hour_of(end)  # the hour holding the end: partial
    if first is not None and last is not None and first >= last:
        return WindowParts(False, None, None, (window,))  # within an hour or two: all raw
    edges = []
    if start is not None and start < first:
        edges.append(Window(start, first))
    if end is not None and (window.end_inclusive or last < end):
        edges.append(Window(last, end, window.end_inclusive))
    return WindowParts(True, first, last, tuple(edges))


DAY = timedelta(days=1)


class DayParts(msgspec.Struct, frozen=True):
    """The whole hours of a window cut again for the distinct values of unique_count: the
    whole UTC days [days.start, days.end) (None: unbounded; no `days`: none) and the hours
    of the partial days either side: less than a day on each side, or, without a whole
    day, one range of less than two."""

    days: Window | None
    hours: tuple[Window, ...]


def day_parts(parts: WindowParts) -> DayParts:
    """Whole days from the daily distinct values, the hours of partial days from the hourly
    ones: a month's values are read about a row a day, not a row an hour."""
    if not parts.whole_hours:
        return DayParts(None, ())
    start, end = parts.hours_from, parts.hours_to
    first = None if start is None else start_of_day(start) + (
        DAY if start != start_of_day(start) else timedelta(0))
    last = None if end is None else start_of_day(end)
    if first is not None and last is not None and first >= last:
        return DayParts(None, (Window(start, end),))  # within a day or two: all hours
    hours = []
    if start is not None and start < first:
        hours.append(Window(start, first))
    if end is not None and last < end:
        hours.append(Window(last, end))
    return DayParts(Window(first, last), tuple(hours))


def usage_window(start: str, end: str, end_inclusive: bool) -> Window:
    lo = parse_rfc3339(start) if start else None
    hi = parse_rfc3339(end) if end else None
    if (start and lo is None) or (end and hi is None):
        raise invalid("invalid period")
    return Window(lo, hi, end_inclusive)


def quantity(value: object) -> int:
    """An aggregate (a numeric sum may exceed int64) as the int64 the API returns."""
    n = int(value or 0)
    if not INT64_MIN <= n <= INT64_MAX:
        raise invalid("amount out of range")
    return n


# ---- DNS -------------------------------------------------------------------------------

DNS_METER_NAME = "DNS Queries"
DNS_EVENT_NAME = "dns-queries"
DNS_DIMENSIONS = ["zone", "errors"]
DNS_CATEGORY = "dns"
DEFAULT_DNS_PLAN = "dns-free"
DEFAULT_DAILY_LIMIT = 10_000  # when the plan states no queriesPerDay (reference)
UNLIMITED = -1


def dns_usage_request(zone: str, user: str) -> tuple[str, str]:
    if not zone:
        raise invalid("zone is required", "zone")
    if not user:
        raise invalid("user is required", "user")
    return zone, user


def dns_timestamp(raw: str, now: datetime) -> datetime:
    """The usage's time: now when absent; otherwise RFC 3339 inside the accepted window."""
    if not raw:
        return now
    ts = parse_rfc3339(raw)
    if ts is None:
        raise invalid("invalid timestamp", "timestamp")
    if not now - BACKDATE <= ts <= now + AHEAD:
        raise invalid("timestamp out of range: accepted from 35 days ago to 5 minutes ahead",
                      "timestamp")
    return ts.astimezone(UTC)


def dns_plan(catalog: Catalog, subscribed: str | None) -> Plan | None:
    """The customer's DNS plan: the plan of their DNS subscription when it is a catalog plan
    of category `dns`, else `dns-free`."""
    plan = catalog.get(subscribed) if subscribed else None
    if plan is None or plan.category != DNS_CATEGORY:
        plan = catalog.get(DEFAULT_DNS_PLAN)
    return plan


def daily_limit(plan: Plan | None) -> int:
    """Queries a day; -1 = unlimited. A stated 0 allows none (the reference read it as
    unlimited)."""
    if plan is None or "queriesPerDay" not in plan.limits:
        return DEFAULT_DAILY_LIMIT
    limit = int(plan.limits["queriesPerDay"])
    return UNLIMITED if limit < 0 else limit


def over_limit(limit: int, used: int, queries: int) -> bool:
    return limit != UNLIMITED and used + queries > limit


def limit_exceeded(limit: int, used: int, queries: int) -> Failure:
    return Failure(ErrorCode.RATE_LIMITED, 429,
                   f"daily DNS query limit exceeded: {used + queries}/{limit}")


def remaining(limit: int, used: int) -> int:
    return UNLIMITED if limit == UNLIMITED else max(limit - used, 0)


def dns_idempotency(user: str, zone: str, ts: datetime) -> str:
    """The reference's key, now enforced: one record per user, zone and instant."""
    return f"dns:{user}:{zone}:{to_us(ts) * 1000}"


def dns_window(period: str, now: datetime) -> tuple[datetime, datetime]:
    """`month`: the current UTC calendar month; anything else: the current UTC day."""
    if period == "month":
        start = start_of_month(now)
        return start, next_month(start)
    start = start_of_day(now)
    return start, start + timedelta(days=1)


def period_limit(limit: int, start: datetime) -> int:
    """The daily limit over a whole month."""
    if limit == UNLIMITED:
        return UNLIMITED
    return limit * calendar.monthrange(start.year, start.month)[1]
