"""The gateway's side of the asynchronous meter-event path: `POST /billing/meter-events`
with `Prefer: respond-async`.

A batch without an `Idempotency-Key` is checked here by the rules of the synchronous path
(`contracts.meter_events`), its meter ids against the organization's meters (cached here:
meters are never deleted), and every event gets its id. The batch then goes to JetStream
(`billing.meter_events.<org>`) under a fresh batch id — identical keyless requests are
distinct events, as on the synchronous path — and the client gets 202 only once JetStream
has acknowledged: from then on the events are durable, and metering workers store them.
While NATS is unreachable the answer is 503 at once.

A batch with an `Idempotency-Key` goes to metering instead (`events.accept`), which claims
the key where the synchronous path does (metering's `intake.py`): one key, one request,
whichever way it came in. A request without `Prefer: respond-async` is an ordinary bus
request. The route's kind (`ingest`) brings it here; the steps are the pipeline's.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import nats
from aiohttp import web

from contracts import meter_events
from contracts.errors import Failure, unavailable
from contracts.ids import now
from contracts.metering import EVENTS_ACCEPT, METER_IDS, AcceptedBatch, MeterIdsQuery
from services.gateway.auth import Caller
from services.gateway.http import json_response
from services.gateway.pipeline import Pipeline
from services.gateway.routing import Route
from services.runtime.meter_stream import ensure_stream, publish_batch

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 3.0  # a JetStream ack slower than this is answered 503 (retry is safe)
_encode = msgspec.json.Encoder().encode


class AsyncIngest:
    def __init__(self, pipeline: Pipeline):
        self._pipeline = pipeline
        self._js: Any = None
        self._meters = meter_events.KnownMeters()

    async def start(self) -> None:
        self._js = self._pipeline.nc.jetstream(timeout=PUBLISH_TIMEOUT_S)
        try:
            await ensure_stream(self._js)
        except (nats.errors.Error, TimeoutError) as e:
            # The metering workers create it too; until then publishing answers 503.
            log.warning("meter events stream not ready yet (%s)", e)

    def handler(self, route: Route) -> Any:
        """The aiohttp handler of an `ingest` route."""
        pipeline = self._pipeline

        async def handle(request: web.Request) -> web.StreamResponse:
            if "respond-async" not in request.headers.get("Prefer", ""):
                return await pipeline.respond(route, request)
            if pipeline.idempotency_key(request, route) is None:
                return await self._accept(route, request)
            # Keyed: to metering's `events.accept`; the route (and so the request's
            # fingerprint) is the synchronous one's.
            response = await pipeline.respond(route, request, EVENTS_ACCEPT)
            if response.status == 202:  # not a replayed synchronous answer
                response.headers["Preference-Applied"] = "respond-async"
            return response

        return handle

    async def _accept(self, route: Route, request: web.Request) -> web.Response:
        caller, params = await self._pipeline.accept(route, request)
        id_base = meter_events.fresh_id_base()  # also the batch id: unique, never derived
        events = meter_events.accept_batch(params.events, now(), id_base)
        await self._require_meters(caller, events, request)
        await self._publish(AcceptedBatch(id_base, caller.org_id, caller.livemode, events))
        response = json_response(_encode(meter_events.accepted(events)), 202)
        response.headers["Preference-Applied"] = "respond-async"
        return response

    async def _require_meters(self, caller: Caller, events: list, request: web.Request) -> None:
        await self._meters.require(caller.org_id, caller.livemode, events,
                                   lambda: self._meter_ids(caller, request))

    async def _meter_ids(self, caller: Caller, request: web.Request) -> list[str]:
        # An id not seen yet: ask metering (a new meter, or a typo). Unanswered → 503.
        pipeline = self._pipeline
        reply = await pipeline.call(METER_IDS.subject, pipeline.scope(request, caller, None,
                                                                      None),
                                    MeterIdsQuery(), request)
        if reply.error is not None:
            raise Failure.of(reply.error)
        return METER_IDS.decode_result(reply.result).ids

    async def _publish(self, batch: AcceptedBatch) -> None:
        if not self._pipeline.nc.is_connected:  # reconnecting: refuse now, never hang
            raise unavailable()
        try:
            await publish_batch(self._js, batch)
        except nats.js.errors.NoStreamResponseError:
            await self._ensure_stream_quietly()
            raise unavailable() from None
        except (nats.errors.Error, TimeoutError):
            # Whatever JetStream said, the batch is not durable: 503, and a retry is safe.
            raise unavailable() from None

    async def _ensure_stream_quietly(self) -> None:
        try:
            await ensure_stream(self._js)
        except (nats.errors.Error, TimeoutError):
            pass
