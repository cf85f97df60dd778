"""The ledger's reader of payments' payment-method events (`billing.events.payment_method.*`,
published by payments' outbox relay): it keeps `ledger.payment_methods` current, so the
status check answers from the ledger's own table.

One durable JetStream consumer, shared by the ledger's replicas (each event is written by
one of them, into the table they all read) and resumed where it stopped after a restart. A
fetch of events is written in one statement and acknowledged after it: an event delivered
again (a lost ack, a relay publishing again) finds nothing left to change.

How current the table is: an event reaches it a few milliseconds after payments committed
the change (the relay wakes on the commit's NOTIFY; this consumer's pull is waiting). Until
the consumer has read every event already in the stream — just after a start, or while
writes fail or NATS is away — `current` is False and the status check asks payments too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
import msgspec
import nats
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from contracts import events
from services.ledger.payment_methods import domain, store
from services.runtime.outbox import ensure_stream
from services.runtime.streams import fetch_ready

log = logging.getLogger(__name__)

CONSUMER = "ledger-payment-methods"
SUBJECTS = events.subject("payment_method.>")
RETRY_DELAY_S = 1.0  # a fetch that could not be written is delivered again after this


class PaymentMethodEvents:
    def __init__(self, pool: Callable[[], asyncpg.Pool], nats_servers: list[str], *,
                 ack_wait_s: float = 30.0, fetch_events: int = 256):
        self._pool = pool
        self._servers = nats_servers
        self._ack_wait_s = ack_wait_s
        self._fetch_events = fetch_events
        self._nc: nats.NATS | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._failing = False
        # Whether every event in the stream so far is in the table (see the module's doc).
        self.current = False

    async def start(self) -> None:
        self._nc = await nats.connect(servers=self._servers,
                                      name="billing-ledger-payment-methods",
                                      max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                      disconnected_cb=self._on_disconnected)
        js = self._nc.jetstream()
        await ensure_stream(js)  # payments may not be deployed (yet): read nothing until then
        try:
            await js.consumer_info(events.STREAM, CONSUMER)
        except NotFoundError:
            with contextlib.suppress(APIError):  # another replica created it meanwhile
                await js.add_consumer(events.STREAM, ConsumerConfig(
                    durable_name=CONSUMER, name=CONSUMER, filter_subject=SUBJECTS,
                    deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=self._ack_wait_s, max_deliver=-1))
        sub = await js.pull_subscribe_bind(durable=CONSUMER, stream=events.STREAM)
        info = await js.consumer_info(events.STREAM, CONSUMER)
        self.current = info.num_pending == 0 and info.num_ack_pending == 0
        self._stopping = False
        self._task = asyncio.create_task(self._run(sub), name="ledger-payment-methods")

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
                self._failed(error)
                for msg in msgs:
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=RETRY_DELAY_S)
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            self.current = msgs[-1].metadata.num_pending == 0

    async def write(self, msgs: list[Any]) -> None:
        """Record what the events say, then acknowledge them."""
        states = []
        for msg in msgs:
            try:
                state = domain.read(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as error:
                # Never readable, whatever we do: dropped, and said so once.
                log.error("payment-method event %s (%s) is not one; dropped: %s",
                          (msg.headers or {}).get("Nats-Msg-Id", "?"), msg.subject, error)
                continue
            if state is not None:
                states.append(state)
        if states:
            await store.apply(self._pool(), domain.merged(states))
        if self._failing:
            self._failing = False
            log.warning("payment-method events are written again")
        for msg in msgs:
            await msg.ack()

    def _failed(self, error: Exception) -> None:
        self.current = False
        if not self._failing:  # once per outage, not once per fetch
            self._failing = True
            log.warning("writing payment-method events failed (%s); the status check asks "
                        "payments meanwhile", error)

    async def _on_disconnected(self) -> None:
        self.current = False
