"""The gateway's side of the asynchronous meter-event path: `POST /billing/meter-events`
with `Prefer: respond-async`.

The batch is checked by the rules of the synchronous path (`services.metering.domain`), its
meter ids against the organization's meters (cached here: meters are never deleted), and
every event gets its id. The batch then goes to JetStream (`billing.meter_events.<org>`)
with a message id derived from the batch, and the client gets 202 only once JetStream has
acknowledged: from then on the events are durable, and metering workers store them. A retried
request has the same batch id, so JetStream drops the copy and the answer carries the same
event ids. While NATS is unreachable the answer is 503 at once.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import msgspec
import nats
from aiohttp import web

from contracts import ErrorCode
from contracts.metering import AcceptedBatch, EventOutcome, MeterIds, MeterIdsQuery, RecordedEvents
from contracts.metering_subjects import (
    METERING_EVENTS_RECORD,
    METERING_METER_IDS,
    meter_events_subject,
)
from services.gateway.auth import Caller
from services.gateway.http import ApiError, json_response
from services.gateway.routing import Route
from services.metering import domain
from services.metering.stream import ensure_stream
from services.runtime.errors import Failure
from services.runtime.ids import now

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 3.0  # a JetStream ack slower than this is answered 503 (retry is safe)
_encode = msgspec.json.Encoder().encode
_decode_ids = msgspec.json.Decoder(MeterIds).decode


class AsyncIngest:
    def __init__(self, gateway: Any):
        self._gateway = gateway  # for its authentication, scopes and bus calls
        self._js: Any = None
        self._meters: dict[tuple[str, bool], frozenset[str]] = {}

    async def start(self) -> None:
        self._js = self._gateway.nc.jetstream(timeout=PUBLISH_TIMEOUT_S)
        try:
            await ensure_stream(self._js)
        except (nats.errors.Error, TimeoutError) as e:
            # The metering workers create it too; until then publishing answers 503.
            log.warning("meter events stream not ready yet (%s)", e)

    def wrap(self, route: Route, handler: Any) -> Any:
        """The route's handler, taking asynchronous meter-event requests for itself."""
        if route.subject != METERING_EVENTS_RECORD:
            return handler

        async def handle(request: web.Request) -> web.StreamResponse:
            if "respond-async" in request.headers.get("Prefer", ""):
                return await self._accept(route, request)
            return await handler(request)

        return handle

    async def _accept(self, route: Route, request: web.Request) -> web.Response:
        gateway = self._gateway
        caller, params = await gateway._accept(route, request)
        key = gateway._idempotency_key(request, route)
        batch_id = _batch_id(caller, key, await request.read())
        try:
            events = domain.accept_batch(params.events, now(), domain.derived_id_base(batch_id))
        except Failure as failure:
            raise _api_error(failure) from None
        await self._require_meters(caller, events, request)
        await self._publish(caller, AcceptedBatch(batch_id, caller.org_id, caller.livemode,
                                                  events))
        body = _encode(RecordedEvents([EventOutcome(e.id, "accepted") for e in events],
                                      len(events)))
        response = json_response(body, 202)
        response.headers["Preference-Applied"] = "respond-async"
        return response

    async def _require_meters(self, caller: Caller, events: list, request: web.Request) -> None:
        account = (caller.org_id, caller.livemode)
        known = self._meters.get(account, frozenset())
        if all(e.meterId in known for e in events):
            return
        # An id not seen yet: ask metering (a new meter, or a typo). Unanswered → 503.
        scope = self._gateway._scope(request, caller, None, None)
        reply = await self._gateway._call(METERING_METER_IDS, scope, MeterIdsQuery(), request)
        if reply.error is not None:
            e = reply.error
            raise ApiError(e.status, e.message, e.code, e.param)
        known = frozenset(_decode_ids(reply.result).ids)
        if len(self._meters) > 100_000:
            self._meters.clear()
        self._meters[account] = known
        try:
            domain.require_known_meters(events, known)
        except Failure as failure:
            raise _api_error(failure) from None

    async def _publish(self, caller: Caller, batch: AcceptedBatch) -> None:
        if not self._gateway.nc.is_connected:  # reconnecting: refuse now, never hang
            raise _unavailable()
        try:
            await self._js.publish(meter_events_subject(caller.org_id), _encode(batch),
                                   headers={"Nats-Msg-Id": batch.batchId})
        except nats.js.errors.NoStreamResponseError:
            await self._ensure_stream_quietly()
            raise _unavailable() from None
        except (nats.errors.Error, TimeoutError):
            raise _unavailable() from None

    async def _ensure_stream_quietly(self) -> None:
        try:
            await ensure_stream(self._js)
        except (nats.errors.Error, TimeoutError):
            pass


def _batch_id(caller: Caller, key: str | None, body: bytes) -> str:
    """The same request (body and Idempotency-Key, if any) from the same organization and
    mode always has the same batch id."""
    h = hashlib.sha256(f"{caller.org_id}|{int(caller.livemode)}|{key or ''}|".encode())
    h.update(body)
    return h.hexdigest()


def _api_error(failure: Failure) -> ApiError:
    e = failure.error
    return ApiError(e.status, e.message, e.code, e.param)


def _unavailable() -> ApiError:
    return ApiError(503, "service unavailable", ErrorCode.UNAVAILABLE)
