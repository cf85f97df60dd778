"""Metering rules, free of I/O: meters, the validation of a meter-event batch, event ids,
summary windows and aggregation, DNS plans and daily limits.

The gateway's asynchronous path applies `accept_batch` too, so a batch is refused or accepted
by the same rules whichever way it comes in.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Container, Sequence
from datetime import UTC, date, datetime, timedelta

import msgspec

from contracts import ErrorCode
from contracts.catalog import Catalog, Plan
from contracts.errors import Failure, invalid
from contracts.ids import new_id
from contracts.common import INT64_MAX, INT64_MIN
from contracts.metering import AcceptedEvent, MeterEventInput, PlanLimits, PlanView

MAX_BATCH = 100
# Accepted event times: a late API node may send events up to 35 days old (the dedup window
# covers them); a little clock skew is tolerated ahead.
BACKDATE = timedelta(days=35)
AHEAD = timedelta(minutes=5)
# Dedup keys live at least as long as the oldest timestamp we accept, plus a day of margin.
DEDUP_RETENTION = BACKDATE + timedelta(days=1)

AGGREGATIONS = frozenset({"sum", "count", "last", "max", "min", "unique_count"})
# The ledger copies usage debits into the organization's meter of this event name: for
# summaries only, never invoiced (product decision Q4).
API_USAGE_EVENT_NAME = "api-usage"
DEFAULT_CURRENCY = "usd"
_CURRENCY = re.compile(r"^[a-z][a-z0-9]{2,9}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


# ---- time ------------------------------------------------------------------------------


def to_us(ts: datetime) -> int:
    """Unix microseconds (exact integer arithmetic)."""
    return (ts - _EPOCH) // _MICROSECOND


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def parse_rfc3339(raw: str) -> datetime | None:
    """RFC 3339 with a mandatory offset (fractional seconds allowed), else None."""
    if len(raw) < 20 or raw[10] not in "Tt":
        return None
    try:
        ts = msgspec.convert(raw, datetime)
    except msgspec.ValidationError:
        return None
    return ts if ts.tzinfo is not None else None


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


def currency_of(raw: str) -> str:
    currency = raw.strip().lower() or DEFAULT_CURRENCY
    if not _CURRENCY.match(currency):
        raise invalid("invalid currency", "currency")
    return currency


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


# ---- event ids -------------------------------------------------------------------------

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Two base62 characters number the events of one batch (62² > MAX_BATCH).
_SUFFIX = [_ALPHABET[i // 62] + _ALPHABET[i % 62] for i in range(MAX_BATCH)]


def fresh_id_base() -> str:
    """A new batch's id stem: a UUIDv7 id minus its last two (random) characters, so event
    ids stay 22 characters and time-ordered while costing one `new_id` per batch."""
    return new_id("mev_")[:-2]


def event_id(id_base: str, n: int) -> str:
    """The id of the `n`th event of the batch whose id stem is `id_base`."""
    return id_base + _SUFFIX[n]


def derived_id_base(batch_id: str) -> str:
    """The id stem of a batch accepted asynchronously, derived from its batch id: a retried
    request is answered with the ids its first attempt was given."""
    n = int(batch_id[:30], 16)  # 120 bits of the batch's SHA-256
    chars = []
    for _ in range(20):
        n, r = divmod(n, 62)
        chars.append(_ALPHABET[r])
    return "mev_" + "".join(chars)


# ---- event keys the platform derives ---------------------------------------------------

# Event idempotency keys are organization-wide. Keys of events the platform writes itself
# (the ledger's copies of usage debits) start with this prefix, which clients may not use:
# a client's event can neither take such a key nor be taken for a duplicate of one.
RESERVED_KEY_PREFIX = "billing:"


def refuse_reserved_keys(events: list[MeterEventInput]) -> None:
    for i, e in enumerate(events):
        if e.idempotency and e.idempotency.startswith(RESERVED_KEY_PREFIX):
            raise invalid(f"idempotency keys starting with {RESERVED_KEY_PREFIX!r} are"
                          f" reserved (event {i})", "idempotency")


def usage_copy_key(user: str, request_id: str) -> str:
    """The key of the copy of a usage debit: one per user and requestId, as the debit."""
    return RESERVED_KEY_PREFIX + "usage:" + msgspec.json.encode([user, request_id]).decode()


# ---- a batch of meter events -----------------------------------------------------------


def accept_batch(events: list[MeterEventInput] | None, now: datetime, id_base: str,
                 ) -> list[AcceptedEvent]:
    """Validates the whole batch (nothing of a refused batch is stored) and returns its
    events with ids, canonical user ids and timestamps. Meter existence is checked by the
    caller, which knows the organization's meters (`require_known_meters`)."""
    if not events:
        raise invalid("at least one event is required", "events")
    if len(events) > MAX_BATCH:
        raise invalid("maximum 100 events per batch", "events")
    refuse_reserved_keys(events)
    now_us = to_us(now)
    earliest, latest = to_us(now - BACKDATE), to_us(now + AHEAD)
    accepted = []
    for i, e in enumerate(events):
        if not e.meterId:
            raise invalid("meterId is required for each event", "meterId")
        user = (e.userId or "").strip().lower()
        if not user:
            raise invalid("userId is required for each event", "userId")
        value = e.value or 0
        if value < 0:
            raise invalid(f"negative value for event {i}", "value")
        if e.timestamp:
            ts = parse_rfc3339(e.timestamp)
            if ts is None:
                raise invalid(f"invalid timestamp for event {i}", "timestamp")
            ts_us = to_us(ts)
            if not earliest <= ts_us <= latest:
                raise invalid(f"timestamp out of range for event {i}: accepted from 35 days"
                              " ago to 5 minutes ahead", "timestamp")
        else:
            ts_us = now_us
        accepted.append(AcceptedEvent(id_base + _SUFFIX[i], e.meterId, user, value, ts_us,
                                      e.idempotency or "", e.dimensions))
    require_storable(accepted)
    return accepted


# What PostgreSQL would refuse once the batch is accepted: checked before any answer, so an
# asynchronous batch is never answered 202 and then found unstorable. Ids and keys are
# indexed (a B-tree entry holds at most ~2.7 KB), and no text can hold NUL.
MAX_ID_CHARS = 255
MAX_DIMENSIONS_BYTES = 4096  # the dimensions object as JSON
_encode_dimensions = msgspec.json.Encoder().encode


def require_storable(events: Sequence[AcceptedEvent]) -> None:
    """Refuses (400, naming the limit) an event with a field PostgreSQL would not store.
    One pass over the batch when all is well; the slow path says which event and field."""
    m = MAX_ID_CHARS
    for e in events:
        if (len(e.meterId) > m or len(e.userId) > m or len(e.idempotency) > m
                or "\x00" in e.meterId or "\x00" in e.userId or "\x00" in e.idempotency):
            _refuse_ids(events)
    dimensions = [e.dimensions for e in events if e.dimensions]
    if dimensions:
        encoded = _encode_dimensions(dimensions)
        # NUL is encoded as \u0000 (so is a literal backslash before "u0000": the slow path
        # looks at the values themselves).
        if len(encoded) > MAX_DIMENSIONS_BYTES or b"\\u0000" in encoded:
            _refuse_dimensions(events)


def _refuse_ids(events: Sequence[AcceptedEvent]) -> None:
    for i, e in enumerate(events):
        for name, text in (("meterId", e.meterId), ("userId", e.userId),
                           ("idempotency", e.idempotency)):
            if len(text) > MAX_ID_CHARS:
                raise invalid(f"{name} of event {i} exceeds {MAX_ID_CHARS} characters", name)
            if "\x00" in text:
                raise invalid(f"{name} of event {i} contains a NUL character", name)


def _refuse_dimensions(events: Sequence[AcceptedEvent]) -> None:
    for i, e in enumerate(events):
        if not e.dimensions:
            continue
        encoded = _encode_dimensions(e.dimensions)
        if len(encoded) > MAX_DIMENSIONS_BYTES:
            raise invalid(f"dimensions of event {i} exceed {MAX_DIMENSIONS_BYTES} bytes as JSON",
                          "dimensions")
        if b"\\u0000" in encoded and _holds_nul(e.dimensions):
            raise invalid(f"dimensions of event {i} contain a NUL character", "dimensions")


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def require_known_meters(events: Sequence[AcceptedEvent], known: Container[str]) -> None:
    for e in events:
        if e.meterId not in known:
            raise invalid(f"unknown meterId: {e.meterId}", "meterId")


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
        return Window(start, end + timedelta(days=1), end_inclusive=False)
    return Window(start, end, end_inclusive=end is not None)


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


_LIMIT_KEYS = tuple(PlanLimits.__struct_fields__)


def plan_view(plan: Plan) -> PlanView:
    limits = None
    if plan.limits:
        limits = PlanLimits(**{k: int(plan.limits[k]) for k in _LIMIT_KEYS
                               if k in plan.limits and not isinstance(plan.limits[k], bool)})
    return PlanView(
        slug=plan.slug, name=plan.name, description=plan.description, category=plan.category,
        price=plan.price_monthly_cents or 0, priceAnnual=plan.price_annual_cents or 0,
        currency=plan.currency, interval="monthly", intervalCount=1, trialPeriodDays=0,
        contactSales=plan.contact_sales, popular=plan.popular,
        features=list(plan.features) or None, limits=limits)
