"""Reading a JetStream pull consumer the way every consumer here does: `fetch_ready`, and
`EventReader` for the readers of the events stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import nats
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from contracts import events
from services.runtime.outbox import ensure_stream

log = logging.getLogger(__name__)


async def fetch_ready(sub: Any, most: int) -> list[Any]:
    """The messages ready now, up to `most` (waiting a few ms for a fuller fetch); when there
    are none, the next one as soon as it comes, so a lone message is not held back. Raises
    NATS' timeout when nothing came within a second."""
    try:
        return await sub.fetch(most, timeout=0.01)
    except (NatsTimeout, TimeoutError):
        pass
    return await sub.fetch(1, timeout=1.0)


RETRY_DELAY_S = 1.0  # a fetch that could not be written is delivered again after this


class EventReader:
    """A durable pull consumer of the events stream, shared by a service's replicas and
    resumed where it stopped, read by one task a fetch at a time. A subclass names it
    (`durable`, `subjects`, `what` for the log) and says in `write(msgs)` what a fetch
    changes (a message it cannot read is its own to drop); the fetch is acknowledged after
    that. A fetch that cannot be written (the database away) comes back after
    `RETRY_DELAY_S`.

    `current`: every event in the stream so far is written — False from a start until the
    reader has caught up, and while writes fail or NATS is away."""

    durable: str
    subjects: str | tuple[str, ...]  # one filter, or several (NATS 2.10)
    what: str

    def __init__(self, nats_servers: list[str], *, ack_wait_s: float = 30.0,
                 fetch_events: int = 256, max_ack_pending: int | None = None):
        self._servers = nats_servers
        self._ack_wait_s = ack_wait_s
        self._fetch_events = fetch_events
        self._max_ack_pending = max_ack_pending
        self._nc: nats.NATS | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._failing = False
        self.current = False

    async def write(self, msgs: list[Any]) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        self._nc = await nats.connect(servers=self._servers, name=f"billing-{self.durable}",
                                      max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                      disconnected_cb=self._on_disconnected)
        js = self._nc.jetstream()
        await ensure_stream(js)  # its publishers may not run yet: read nothing until then
        one = isinstance(self.subjects, str)
        filters = {"filter_subject": self.subjects if one else None,
                   "filter_subjects": None if one else list(self.subjects)}
        try:
            info = await js.consumer_info(events.STREAM, self.durable)
        except NotFoundError:
            with contextlib.suppress(APIError):  # another replica created it meanwhile
                await js.add_consumer(events.STREAM, ConsumerConfig(
                    durable_name=self.durable, name=self.durable, **filters,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_policy=AckPolicy.EXPLICIT, ack_wait=self._ack_wait_s, max_deliver=-1,
                    max_ack_pending=self._max_ack_pending or 4 * self._fetch_events))
        else:
            if (info.config.filter_subject or None, info.config.filter_subjects or None) != (
                    filters["filter_subject"], filters["filter_subjects"]):
                # Filtered otherwise by an earlier version: the same consumer, its filter
                # changed in place (it resumes where it stopped).
                with contextlib.suppress(APIError):
                    await js.add_consumer(events.STREAM, info.config.evolve(**filters))
        sub = await js.pull_subscribe_bind(durable=self.durable, stream=events.STREAM)
        info = await js.consumer_info(events.STREAM, self.durable)
        self.current = info.num_pending == 0 and info.num_ack_pending == 0
        self._stopping = False
        self._task = asyncio.create_task(self._run(sub), name=self.durable)

    async def stop(self) -> None:
        """Stop reading; a fetch being written is rolled back and delivered again later."""
        self._stopping = True
        self.current = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._nc is not None:
            await self._nc.close()
            self._nc = None

    async def _run(self, sub: Any) -> None:
        while not self._stopping:
            try:
                msgs = await fetch_ready(sub, self._fetch_events)
            except (NatsTimeout, TimeoutError):
                # Nothing came for a while: nothing left to read; unless NATS is away.
                self.current = self._nc is not None and self._nc.is_connected
                continue
            except (ConnectionClosedError, NoRespondersError, APIError):
                self.current = False
                await asyncio.sleep(0.5)
                continue
            if not msgs:  # nats-py's fetch may end on a status message, with no event
                continue
            try:
                await self.write(msgs)
            except Exception as error:  # the database away: the events come back later
                self.current = False
                if not self._failing:  # once per outage, not once per fetch
                    self._failing = True
                    log.warning("writing %s failed (%s); retrying", self.what, error)
                for msg in msgs:
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=RETRY_DELAY_S)
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            if self._failing:
                self._failing = False
                log.warning("%s are written again", self.what)
            for msg in msgs:
                await msg.ack()
            self.current = msgs[-1].metadata.num_pending == 0

    async def _on_disconnected(self) -> None:
        self.current = False
