"""The metering workers' side of the asynchronous path: batches the gateway acknowledged
(JetStream `billing.meter_events.<org>`) are stored in PostgreSQL.

Every replica pulls from one durable consumer, so `billing serve metering` started twice
splits the work. A fetch of many batches is written by one statement — the batch ids are
claimed with the events — and acknowledged only after the commit: a batch redelivered
because its worker died (or its ack was lost) finds its id claimed and is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import nats
from nats.errors import (
    ConnectionClosedError,
    NoRespondersError,
    StaleConnectionError,
    UnexpectedEOF,
)
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import APIError, NotFoundError

from contracts.metering_subjects import METER_EVENTS_CONSUMER, METER_EVENTS_STREAM
from services.metering import store
from services.metering.stream import consumer_config, ensure_stream

log = logging.getLogger(__name__)

RETRY_DELAY_S = 1.0  # before a batch whose write failed is delivered again


class MeterEventConsumer:
    def __init__(self, pool: Callable[[], asyncpg.Pool], nats_servers: list[str], *,
                 ack_wait_s: float = 30.0, pipelines: int = 2, fetch_batches: int = 64):
        self._pool = pool
        self._servers = nats_servers
        self._ack_wait_s = ack_wait_s
        self._pipelines = pipelines  # fetch → write → ack loops, overlapping round trips
        self._fetch_batches = fetch_batches
        self._nc: nats.NATS | None = None
        self._tasks: list[asyncio.Task] = []
        self._writing: set[asyncio.Task] = set()  # pipelines between fetch and ack
        self._stopping = False
        self._failing_since: float | None = None

    async def start(self) -> None:
        self._nc = await nats.connect(servers=self._servers, name="billing-metering-consumer",
                                      max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                      error_cb=self._on_error,
                                      disconnected_cb=self._on_disconnected,
                                      reconnected_cb=self._on_reconnected)
        js = self._nc.jetstream()
        await ensure_stream(js)
        try:
            await js.consumer_info(METER_EVENTS_STREAM, METER_EVENTS_CONSUMER)
        except NotFoundError:
            with contextlib.suppress(APIError):  # another worker created it meanwhile
                await js.add_consumer(METER_EVENTS_STREAM, consumer_config(self._ack_wait_s))
        self._stopping = False
        for i in range(self._pipelines):  # a subscription each: fetches never cross
            sub = await js.pull_subscribe_bind(durable=METER_EVENTS_CONSUMER,
                                               stream=METER_EVENTS_STREAM)
            self._tasks.append(asyncio.create_task(self._run(sub), name=f"meter-events-{i}"))

    async def stop(self) -> None:
        """Finish the batches being written (and ack them), then disconnect."""
        self._stopping = True
        if self._tasks:
            for task in self._tasks:
                if task not in self._writing:  # waiting for work: nothing to finish
                    task.cancel()
            await asyncio.wait(self._tasks, timeout=15)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        if self._nc is not None:
            await self._nc.close()
            self._nc = None

    async def _run(self, sub: Any) -> None:
        while not self._stopping:
            try:
                msgs = await self._next(sub)
            except (NatsTimeout, TimeoutError):
                continue  # nothing to do, or NATS is away: ask again
            except (ConnectionClosedError, NoRespondersError, APIError):
                await asyncio.sleep(0.5)
                continue
            task = asyncio.current_task()
            self._writing.add(task)
            try:
                await self.store(msgs)
            except Exception as error:
                # An ack or nak that could not be sent (NATS away): those batches come back
                # after `ack_wait` and are found already stored.
                self._failed(error)
            finally:
                self._writing.discard(task)

    async def _next(self, sub: Any) -> list[Any]:
        """The batches ready now (waiting a few ms for a fuller fetch); when there are none,
        the next one as soon as it comes: a lone batch is not held back to fill a fetch."""
        try:
            return await sub.fetch(self._fetch_batches, timeout=0.01)
        except (NatsTimeout, TimeoutError):
            pass
        return await sub.fetch(1, timeout=1.0)

    async def store(self, msgs: list[Any]) -> None:
        try:
            await self._write(msgs)
        except Exception as error:
            if len(msgs) == 1:
                await self._not_stored(msgs[0], error)
            else:  # find the one that fails; store the others
                for msg in msgs:
                    await self.store([msg])
            return
        self._recovered()
        for msg in msgs:
            await msg.ack()

    async def _write(self, msgs: list[Any]) -> None:
        # The messages are encoded `AcceptedBatch`es: the store reads them as they came.
        document = b"[" + b",".join(msg.data for msg in msgs) + b"]"
        await store.write_accepted(self._pool(), document.decode())

    async def _not_stored(self, msg: Any, error: Exception) -> None:
        if isinstance(error, (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError,
                              UnicodeDecodeError)):
            # Never storable (the gateway publishes only what it validated): drop it, loudly.
            log.error("dropping a meter-event batch that cannot be stored (%s): %s",
                      msg.subject, error)
            await msg.term()
        else:  # the database is away or failing: deliver it again soon
            self._failed(error)
            await msg.nak(delay=RETRY_DELAY_S)

    # One line per NATS outage, rather than a stack trace per reconnect attempt.
    async def _on_error(self, error: Exception) -> None:
        if not isinstance(error, (OSError, TimeoutError, UnexpectedEOF, StaleConnectionError)):
            log.warning("meter events: NATS error: %s", error)

    async def _on_disconnected(self) -> None:
        if not self._stopping:
            log.warning("meter events: NATS connection lost; reconnecting")

    async def _on_reconnected(self) -> None:
        log.warning("meter events: NATS connection back")

    def _failed(self, error: Exception) -> None:
        # Once per outage, not once per batch: the batches stay in JetStream meanwhile.
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning("storing meter events failed (%s); batches will be redelivered",
                        error)

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.warning("storing meter events works again after %.1f s",
                        time.monotonic() - self._failing_since)
            self._failing_since = None
