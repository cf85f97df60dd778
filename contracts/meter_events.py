"""The rules of a meter-event batch, free of I/O: the same whichever way a batch comes in —
synchronously (metering's `events.record`), asynchronously (the gateway validates and
publishes it to the meter-event stream; metering's `events.accept` for keyed batches), or
as the ledger's copies of usage debits. Data rules about a contract, so they live with the
contracts and no service imports another's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Container, Iterable, Sequence
from datetime import UTC, datetime, timedelta

import msgspec

from contracts import limits
from contracts.errors import invalid
from contracts.ids import base62, new_id
from contracts.metering import AcceptedEvent, EventOutcome, MeterEventInput, RecordedEvents

MAX_BATCH = 100
# Accepted event times: a late API node may send events up to 35 days old (the dedup window
# covers them); a little clock skew is tolerated ahead.
BACKDATE = timedelta(days=35)
AHEAD = timedelta(minutes=5)

# The ledger copies usage debits into the organization's meter of this event name: for
# summaries only, never invoiced (product decision Q4).
API_USAGE_EVENT_NAME = "api-usage"

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
    return ts if ts.tzinfo is not None and limits.in_range(ts) else None


# ---- event ids -------------------------------------------------------------------------

# Two base62 characters number the events of one batch (62² > MAX_BATCH).
_SUFFIX = [base62(i, 2) for i in range(MAX_BATCH)]


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
    return "mev_" + base62(n, 20)[::-1]  # least significant digit first (ids already given)


# ---- event keys the platform derives ---------------------------------------------------

# Event idempotency keys are organization-wide. Keys of events the platform writes itself
# (the ledger's copies of usage debits) start with this prefix, which clients may not use:
# a client's event can neither take such a key nor be taken for a duplicate of one.
RESERVED_KEY_PREFIX = "billing:"


def usage_copy_key(user: str, request_id: str) -> str:
    """The key of the copy of a usage debit: one per user and requestId, as the debit."""
    return RESERVED_KEY_PREFIX + "usage:" + msgspec.json.encode([user, request_id]).decode()


# ---- a batch of meter events -----------------------------------------------------------


def accept_batch(events: list[MeterEventInput] | None, now: datetime, id_base: str,
                 ) -> list[AcceptedEvent]:
    """Validates the whole batch (nothing of a refused batch is stored) and returns its
    events with ids, canonical user ids and timestamps. Meter existence is checked by the
    caller, which knows the organization's meters (`require_known_meters`).

    Also refused here, before any answer, is what PostgreSQL would refuse once the batch is
    accepted (so an asynchronous batch is never answered 202 and then found unstorable):
    ids and keys are indexed (a B-tree entry holds at most ~2.7 KB) and no text holds NUL.
    The usual batch passes in one loop; the slow paths say which event and field."""
    if not events:
        raise invalid("at least one event is required", "events")
    if len(events) > MAX_BATCH:
        raise invalid("maximum 100 events per batch", "events")
    now_us = to_us(now)
    earliest, latest = to_us(now - BACKDATE), to_us(now + AHEAD)
    m = MAX_ID_CHARS
    accepted = []
    for i, e in enumerate(events):
        meter_id = e.meterId
        if not meter_id:
            raise invalid("meterId is required for each event", "meterId")
        user = (e.userId or "").strip().lower()
        if not user:
            raise invalid("userId is required for each event", "userId")
        key = e.idempotency or ""
        if (len(meter_id) > m or len(user) > m or len(key) > m or "\x00" in meter_id
                or "\x00" in user or "\x00" in key or key.startswith(RESERVED_KEY_PREFIX)):
            _refuse_ids(i, meter_id, user, key)
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
        accepted.append(AcceptedEvent(id_base + _SUFFIX[i], meter_id, user, value, ts_us, key,
                                      e.dimensions))
    _require_storable_dimensions(accepted)
    return accepted


MAX_ID_CHARS = 255
MAX_DIMENSIONS_BYTES = 4096  # the dimensions object as JSON
_encode_dimensions = msgspec.json.Encoder().encode


def _require_storable_dimensions(events: Sequence[AcceptedEvent]) -> None:
    dimensions = [e.dimensions for e in events if e.dimensions]
    if dimensions:
        encoded = _encode_dimensions(dimensions)
        # NUL is encoded as \u0000 (so is a literal backslash before "u0000": the slow path
        # looks at the values themselves). Containers nested inside the dimensions objects:
        # fewer than MAX_DEPTH cannot make one too deep, so flat objects are never walked.
        nested = encoded.count(b"{") + encoded.count(b"[") - len(dimensions) - 1
        if (len(encoded) > MAX_DIMENSIONS_BYTES or b"\\u0000" in encoded
                or nested >= limits.MAX_DEPTH):
            _refuse_dimensions(events)


def _refuse_ids(i: int, meter_id: str, user: str, key: str) -> None:
    for name, text in (("meterId", meter_id), ("userId", user), ("idempotency", key)):
        if len(text) > MAX_ID_CHARS:
            raise invalid(f"{name} of event {i} exceeds {MAX_ID_CHARS} characters", name)
        if "\x00" in text:
            raise invalid(f"{name} of event {i} contains a NUL character", name)
    if key.startswith(RESERVED_KEY_PREFIX):
        raise invalid(f"idempotency keys starting with {RESERVED_KEY_PREFIX!r} are"
                      f" reserved (event {i})", "idempotency")


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
        try:
            limits.require_shallow(f"dimensions of event {i}", e.dimensions, encoded)
        except ValueError as error:
            raise invalid(str(error), "dimensions") from None


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


class KnownMeters:
    """Meter ids per organization and mode, for whoever checks a batch's meters (metering's
    handlers, the gateway's asynchronous path). Meters are never deleted, so an id once seen
    stays valid; an id not seen yet is looked up again (`lookup`: a new meter, perhaps made
    by another replica, or a typo). No I/O of its own: the caller says how to look up."""

    MAX_ACCOUNTS = 100_000

    def __init__(self) -> None:
        self._ids: dict[tuple[str, bool], frozenset[str]] = {}

    async def require(self, org_id: str, livemode: bool, events: Sequence[AcceptedEvent],
                      lookup: Callable[[], Awaitable[Iterable[str]]]) -> None:
        account = (org_id, livemode)
        known = self._ids.get(account, frozenset())
        if all(e.meterId in known for e in events):
            return
        known = frozenset(await lookup())
        if len(self._ids) > self.MAX_ACCOUNTS:
            self._ids.clear()
        self._ids[account] = known
        require_known_meters(events, known)


def accepted(events: list[AcceptedEvent]) -> RecordedEvents:
    """The answer to a batch accepted asynchronously (202)."""
    return RecordedEvents([EventOutcome(e.id, "accepted") for e in events], len(events))
