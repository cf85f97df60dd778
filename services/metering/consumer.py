"""The metering workers' side of the asynchronous path: batches the gateway acknowledged
(JetStream `billing.meter_events.<org>`) are stored in PostgreSQL.

Every replica pulls from one durable consumer, so `billing serve metering` started twice
splits the work. A fetch of many batches is written by one statement — the batch ids are
claimed with the events — and acknowledged only after the commit: a batch redelivered
because its worker died (or its ack was lost) finds its id claimed and is stored once.

A batch that cannot be stored is written alone (its fetch-mates are stored without it) and
then goes to the dead letters (`dead_letters.py`): at once when the failure lies in the
data and can never succeed; after `max_deliveries` when it is of another kind (the
database away), with the delay between deliveries growing meanwhile.
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

from contracts.metering import METER_EVENTS_CONSUMER, METER_EVENTS_STREAM
from services.metering import dead_letters, store
from services.runtime.meter_stream import consumer_config, ensure_dead_letter_stream, ensure_stream
from services.runtime.streams import fetch_ready

log = logging.getLogger(__name__)

# Failures no later attempt can fix: the batch's own data (NUL, oversized index rows, values
# out of range, a month without a partition) or a message that is no batch at all.
NEVER_STORABLE = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError,
                  asyncpg.ProgramLimitExceededError, UnicodeDecodeError)
# Other failures (the database away, restarting, out of connections) are retried: delays of
# 1, 2, 4 … 60 s, so the default bound is about an hour of failing deliveries.
MAX_DELIVERIES = 64
MAX_RETRY_DELAY_S = 60.0


def retry_delay(deliveries: int) -> float:
    return min(2.0 ** min(deliveries - 1, 16), MAX_RETRY_DELAY_S)


def gives_up(error: BaseException, deliveries: int, max_deliveries: int) -> bool:
    """Whether a batch whose write failed with `error`, on its `deliveries`-th delivery,
    goes to the dead letters (else it is delivered again later)."""
    return isinstance(error, NEVER_STORABLE) or deliveries >= max_deliveries


class MeterEventConsumer:
    def __init__(self, pool: Callable[[], asyncpg.Pool], nats_servers: list[str], *,
                 ack_wait_s: float = 30.0, pipelines: int = 2, fetch_batches: int = 64,
                 max_deliveries: int = MAX_DELIVERIES):
        self._pool = pool
        self._servers = nats_servers
        self._ack_wait_s = ack_wait_s
        self._max_deliveries = max_deliveries
        self._pipelines = pipelines  # fetch → write → ack loops, overlapping round trips
        self._fetch_batches = fetch_batches
        self._nc: nats.NATS | None = None
        self.js: Any = None  # JetStream on this connection (also metering's publisher)
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
        self.js = js = self._nc.jetstream()
        await ensure_stream(js)
        await ensure_dead_letter_stream(js)
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
            self.js = None
            await self._nc.close()
            self._nc = None

    async def _run(self, sub: Any) -> None:
        while not self._stopping:
            try:
                msgs = await fetch_ready(sub, self._fetch_batches)
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
        deliveries = msg.metadata.num_delivered
        if not gives_up(error, deliveries, self._max_deliveries):
            self._failed(error)  # the database is away or failing: deliver it again later
            await msg.nak(delay=retry_delay(deliveries))
            return
        try:
            await dead_letters.bury(self.js, msg, error, deliveries)
        except Exception as publish_error:  # NATS away: keep it where it is, try again
            self._failed(publish_error)
            await msg.nak(delay=retry_delay(deliveries))
            return
        await msg.ack()
        # One line per dead letter (rare, and each needs an operator).
        log.error("meter-event batch %s (%s) moved to the dead letters after %d deliveries: %s",
                  (msg.headers or {}).get("Nats-Msg-Id", "?"), msg.subject, deliveries, error)

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
