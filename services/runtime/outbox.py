"""The transactional outbox (conventions §10.10): events commit with the state they announce,
and a relay publishes them to JetStream afterwards.

`add_event(conn, schema, ...)` inserts a row in `<schema>.outbox` in the caller's transaction:
a rolled-back change never announces anything, a committed one always does.
`add_messages(...)` does the same for messages to another service's stream (a subject of
their own, e.g. the ledger's copies of usage debits for metering).

`OutboxRelay` (one per service replica, started by `Service.start()`) publishes pending rows
in batches to `billing.events.<type>` (or the row's own subject) with `Nats-Msg-Id` = event
id, and marks them published only after JetStream acked them; a service that logs its own
events (payments) writes them with that mark (`log_published`).

When it looks: every `add_event` nudges the relays of its schema in this process; a nudged
relay looks every few milliseconds for a moment (the events are visible once their
transaction commits, which the nudge cannot see), so under load events go out in batches a
few milliseconds old, and an idle relay looks again at once. Rows written by another
process wait for its relay, or at most `poll_interval`. (A NOTIFY at every commit woke
relays before; it took PostgreSQL's global notify lock on every commit that added events,
about a tenth of a top-up's cost.)

What holds:
- At least once. A row is marked published only after its ack; a relay that dies between the
  ack and the mark publishes it again. JetStream drops that copy within its duplicate window
  (`DUPLICATE_WINDOW`); a later one (the relay was down longer) reaches the stream, so
  consumers deduplicate by event id.
- In outbox order (`seq`), so in commit order for each aggregate: one relay of a schema
  publishes at a time (a transaction-scoped advisory lock; the other replicas wait their
  turn), in order on one connection; and events of one aggregate are added while its row is
  locked, so their `seq` order is their commit order. Across aggregates `seq` order is not
  commit order (a transaction that started earlier may commit later).
- Except after a failed publish: publishes are pipelined, so an event JetStream refused
  (its subject has no stream, say) is sent again next round, after events that followed it.
  Consumers that must see an aggregate's events in order check their `created` times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import nats
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from contracts import events
from contracts.ids import new_id, now, rfc3339

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
_EVENT_TYPE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")  # subject tokens: no wildcards

DUPLICATE_WINDOW = 120.0  # seconds JetStream remembers a Nats-Msg-Id
RETENTION = timedelta(days=7)  # published rows are kept this long, for inspection


_relays: dict[str, set[OutboxRelay]] = {}  # this process's running relays, by schema


def nudge(schema: str, *, committed: bool = False) -> None:
    """Events were added to `schema`'s outbox: its relays in this process look soon; once,
    `committed_delay` later, when the caller's transaction has `committed` already (no need
    to keep looking for the moment it does; the events other commits add meanwhile go out
    in the same round)."""
    for relay in _relays.get(schema, ()):
        relay.nudge(committed=committed)


async def add_event(conn: asyncpg.Connection, schema: str, *, type: str, object_type: str,
                    object_id: str, org_id: str, livemode: bool, customer_id: str | None,
                    data: Any) -> str:
    """Add an event to `schema`'s outbox inside the caller's transaction; returns its id.

    `type` is `<object_type>.<event>` (e.g. `spend_alert.triggered`); `data` is a dict or a
    msgspec struct, usually the object after the change."""
    return (await add_events(conn, schema, type=type, object_type=object_type,
                             objects=[(org_id, livemode, object_id, customer_id, data)]))[0]


async def add_events(conn: asyncpg.Connection, schema: str, *, type: str, object_type: str,
                     objects: list[tuple[str, bool, str, str | None, Any]]) -> list[str]:
    """`add_event` for many objects' events of one type, in one statement: (org_id,
    livemode, object_id, customer_id, data) each. Returns the events' ids, in order."""
    return await add_many_events(conn, schema, [(type, object_type, *o) for o in objects])


# type, object_type, org_id, livemode, object_id, customer_id, data
EventRow = tuple[str, str, str, bool, str, str | None, Any]


async def add_many_events(conn: asyncpg.Connection, schema: str, rows: list[EventRow],
                          ) -> list[str]:
    """`add_event` for events of any types (a batch's changes of several kinds), in one
    statement. Returns the events' ids, in order."""
    made = new_events(schema, rows)
    ids = [event_id for event_id, _ in made]
    await conn.execute(
        insert_events(schema, "select * from unnest($1::text[], $2::text[], $3::text[],"
                              " $4::boolean[], $5::bytea[])"),
        ids, [r[0] for r in rows], [r[2] for r in rows], [r[3] for r in rows],
        [payload for _, payload in made])
    nudge(schema)
    return ids


def insert_events(schema: str, select: str) -> str:
    """The insert of events into `schema`'s outbox from `select`, a query of (id, type,
    org_id, livemode, payload) made with `new_events` (for a longer statement)."""
    return f"insert into {schema}.outbox (id, type, org_id, livemode, payload) {select}"


def new_events(schema: str, rows: list[EventRow]) -> list[tuple[str, bytes]]:
    """(id, payload) of each row's event, as `add_many_events` inserts them: for a caller
    whose own statement inserts the outbox rows (then `nudge(schema)`). A service publishes
    only the kinds of event `contracts.events.PUBLISHERS` says are its own."""
    created = rfc3339(now())
    made = []
    for type, object_type, org_id, livemode, object_id, customer_id, data in rows:
        if not _EVENT_TYPE.match(type):
            raise ValueError(f"invalid event type {type!r}")
        if schema in events.SERVICES and events.publisher(type) != schema:
            raise ValueError(f"{schema} does not publish {type!r}"
                             " (contracts.events.PUBLISHERS)")
        event_id = new_id("evt_")
        made.append((event_id, _encode(events.Event(
            id=event_id, type=type, objectType=object_type, objectId=object_id,
            customerId=customer_id or None, orgId=org_id, livemode=livemode,
            created=created, data=data))))
    return made


async def add_messages(conn: asyncpg.Connection, schema: str, *, type: str,
                       messages: list[tuple[str, str, str, bool, bytes]]) -> None:
    """Add messages to `schema`'s outbox inside the caller's transaction, in one statement:
    (subject, message id, org_id, livemode, payload) each. The message id is the
    `Nats-Msg-Id`; `type` says what they are (rows are kept a while for inspection)."""
    subjects, ids, orgs, modes, payloads = zip(*messages, strict=True)
    await conn.execute(
        f"insert into {schema}.outbox (subject, id, org_id, livemode, payload, type)"
        " select *, $6 from unnest($1::text[], $2::text[], $3::text[], $4::boolean[],"
        " $5::bytea[])", subjects, ids, orgs, modes, payloads, type)
    nudge(schema)


async def ensure_stream(js: Any) -> None:
    """Create the events stream if it is missing (relays publish to it, consumers of events
    read it: whoever starts first). An existing stream is left as it is (operators may have
    tuned its limits)."""
    try:
        await js.stream_info(events.STREAM)
        return
    except NotFoundError:
        pass
    config = StreamConfig(name=events.STREAM, subjects=[events.SUBJECT_PREFIX + ">"],
                          storage=StorageType.FILE, duplicate_window=DUPLICATE_WINDOW)
    try:
        await js.add_stream(config)
    except BadRequestError:
        # Another replica created it in between (with its own idea of the config).
        await js.stream_info(events.STREAM)


# `log_published(conn, rows)`: a service that keeps a log of its own events (payments' event
# log) writes the events its relay published (outbox rows: id, type, payload) in the
# transaction that marks them published; what it returns runs once that commits.
LogPublished = Callable[[asyncpg.Connection, list[asyncpg.Record]],
                        Awaitable[Callable[[], None] | None]]


class OutboxRelay:
    """Publishes one schema's outbox to JetStream until stopped."""

    def __init__(self, schema: str, pool: asyncpg.Pool, nats_servers: list[str], *,
                 log_published: LogPublished | None = None,
                 batch_size: int = 256, poll_interval: float = 1.0,
                 nudged_interval: float = 0.004, nudged_for: float = 0.1,
                 committed_delay: float = 0.02,
                 publish_timeout: float = 5.0, retention: timedelta = RETENTION,
                 prune_every: float = 3600.0):
        self.schema = schema
        self.pool = pool
        self.nats_servers = nats_servers
        self.log_published = log_published
        self.batch_size = batch_size
        self.poll_interval = poll_interval  # for rows other processes add
        self.nudged_interval = nudged_interval  # how often a nudged relay looks ...
        self.nudged_for = nudged_for  # ... and for how long after the last nudge
        self.committed_delay = committed_delay  # a committed nudge's look waits this long
        self.publish_timeout = publish_timeout
        self.retention = retention
        self.prune_every = prune_every
        self.published = 0  # rows this relay published and marked (for tests and metrics)
        # One relay of the schema at a time (see the module's docstring): the others find
        # the lock taken and claim nothing.
        self._claim = (f"select seq, id, type, subject, payload from {schema}.outbox"
                       " where (select pg_try_advisory_xact_lock(hashtextextended($2, 0)))"
                       " and published_at is null order by seq limit $1"
                       " for update skip locked")
        self._owner = f"{schema}.outbox_relay"
        self._pending = (f"select exists (select from {schema}.outbox"
                         " where published_at is null)")
        self._mark = (f"update {schema}.outbox set published_at = now()"
                      " where seq = any($1::bigint[])")
        self._prune = (f"delete from {schema}.outbox where seq in ("
                       f" select seq from {schema}.outbox where published_at < $1 limit 10000)")
        self._nc: nats.NATS | None = None
        self._js: Any = None
        self._wake = asyncio.Event()
        self._nudged_at = -math.inf
        self._look: asyncio.TimerHandle | None = None  # a committed nudge's, to come
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._stream_ready = False
        self._next_prune = 0.0

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._nc = await nats.connect(servers=self.nats_servers,
                                      name=f"billing-{self.schema}-outbox",
                                      max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        self._js = self._nc.jetstream(timeout=self.publish_timeout)
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"{self.schema}-outbox-relay")
        _relays.setdefault(self.schema, set()).add(self)

    def nudge(self, *, committed: bool = False) -> None:
        """Events were added here: look for them soon (see the module's docstring), or
        just once more, shortly, when they are `committed`: under load, one round (a
        transaction) for the events of many commits, not one each."""
        if not committed:
            self._nudged_at = time.monotonic()
            self._wake.set()
        elif self._look is None:
            self._look = asyncio.get_running_loop().call_later(self.committed_delay,
                                                               self._look_now)

    def _look_now(self) -> None:
        self._look = None
        self._wake.set()

    async def stop(self) -> None:
        """Stop relaying. A batch in flight is rolled back; its rows go out next time."""
        _relays.get(self.schema, set()).discard(self)
        if self._look is not None:
            self._look.cancel()
            self._look = None
        if self._task is not None:
            # The flag too: client libraries (and Python 3.11's wait_for) sometimes swallow
            # a cancellation; the loop then ends at its next wait.
            self._stopping = True
            self._wake.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._nc is not None:
            await self._nc.close()
            self._nc = None

    # ---- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            try:
                if not self._stream_ready:
                    await self.ensure_stream()
                    self._stream_ready = True
                self._wake.clear()  # before reading: a nudge from here on wakes us again
                while await self.relay_once() == self.batch_size and not self._stopping:
                    pass  # a full batch: more may be waiting
                if time.monotonic() >= self._next_prune:
                    await self.prune()
                    self._next_prune = time.monotonic() + self.prune_every
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay %s failed; retrying", self.schema)
                await asyncio.sleep(1.0)
                continue
            if self._stopping:  # stop() was called while a library swallowed the cancel
                return
            if time.monotonic() - self._nudged_at < self.nudged_for:
                await asyncio.sleep(self.nudged_interval)  # what commits meanwhile: a batch
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def ensure_stream(self) -> None:
        await ensure_stream(self._js)

    async def relay_once(self) -> int:
        """Publish one batch of pending rows; returns how many were published."""
        async with self.pool.acquire() as conn:
            # A look that finds nothing (most of a nudged relay's) costs one statement, not a
            # transaction of three.
            if not await conn.fetchval(self._pending):
                return 0
            async with conn.transaction():
                published, committed = await self._relay_batch(conn)
        if committed is not None:
            committed()
        return published

    async def _relay_batch(self, conn: asyncpg.Connection,
                           ) -> tuple[int, Callable[[], None] | None]:
        """Publish the pending rows this relay claims, in the transaction on `conn`: how
        many, and what `log_published` asks to run once it commits."""
        rows = await conn.fetch(self._claim, self.batch_size, self._owner)
        if not rows:
            return 0, None
        # Sent in order on one connection, acks awaited together: one round trip a batch.
        acks: list[asyncio.Future] = []
        try:
            for r in rows:
                acks.append(await self._js.publish_async(
                    r["subject"] or events.subject(r["type"]), r["payload"],
                    headers={"Nats-Msg-Id": r["id"]}))
            done, _ = await asyncio.wait(acks, timeout=self.publish_timeout)
        finally:
            for ack in acks:
                ack.cancel()  # no-op when acked; frees the slot of one that never will be
        acked = [r for r, ack in zip(rows, acks, strict=True)
                 if ack in done and ack.exception() is None]
        committed = None
        if acked:
            await conn.execute(self._mark, [r["seq"] for r in acked])
            self.published += len(acked)
            events_published = [r for r in acked if r["subject"] is None]
            if self.log_published is not None and events_published:
                committed = await self.log_published(conn, events_published)
        if len(acked) < len(rows):
            failed = next((a.exception() for a in done if a.exception() is not None),
                          "no ack in time")
            log.warning("outbox relay %s: %d of %d events not acked (%s); will retry",
                        self.schema, len(rows) - len(acked), len(rows), failed)
        return len(acked), committed

    async def prune(self) -> int:
        """Delete rows published longer ago than the retention; returns how many."""
        cutoff = now() - self.retention
        deleted = 0
        while True:
            status = await self.pool.execute(self._prune, cutoff)
            count = int(status.split()[-1])
            deleted += count
            if count < 10000:
                return deleted
