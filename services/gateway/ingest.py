"""The gateway's side of the asynchronous meter-event path: `POST /billing/meter-events`
with `Prefer: respond-async`.

A batch without an `Idempotency-Key` is checked here by the rules of the synchronous path
(`services.metering.domain`), its meter ids against the organization's meters (cached here:
meters are never deleted), and every event gets its id. The batch then goes to JetStream
(`billing.meter_events.<org>`) under a fresh batch id — identical keyless requests are
distinct events, as on the synchronous path — and the client gets 202 only once JetStream
has acknowledged: from then on the events are durable, and metering workers store them.
While NATS is unreachable the answer is 503 at once.

A batch with an `Idempotency-Key` goes to metering instead (`events.accept`), which claims
the key where the synchronous path does (`services.metering.intake`): one key, one request,
whichever way it came in.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import msgspec
import nats
from aiohttp import web

from contracts import ErrorCode
from contracts.errors import Failure
from contracts.ids import now
from contracts.metering import AcceptedBatch, MeterIds, MeterIdsQuery
from contracts.metering_subjects import (
    METERING_EVENTS_ACCEPT,
    METERING_EVENTS_RECORD,
    METERING_METER_IDS,
)
from services.gateway.auth import Caller
from services.gateway.http import ApiError, json_response
from services.gateway.routing import Route
from services.metering import domain
from services.metering.intake import accepted
from services.metering.stream import ensure_stream, publish_batch

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

        # Keyed: the gateway's ordinary bus request, to metering's `events.accept`; the route
        # (and so the request's fingerprint) is the synchronous one's.
        keyed = self._gateway._rest(dataclasses.replace(route, subject=METERING_EVENTS_ACCEPT))

        async def handle(request: web.Request) -> web.StreamResponse:
            if "respond-async" not in request.headers.get("Prefer", ""):
                return await handler(request)
            if self._gateway._idempotency_key(request, route) is None:
                return await self._accept(route, request)
            response = await keyed(request)
            if response.status == 202:  # not a replayed synchronous answer
                response.headers["Preference-Applied"] = "respond-async"
            return response

        return handle

    async def _accept(self, route: Route, request: web.Request) -> web.Response:
        gateway = self._gateway
        caller, params = await gateway._accept(route, request)
        id_base = domain.fresh_id_base()  # also the batch id: unique, never derived
        try:
            events = domain.accept_batch(params.events, now(), id_base)
        except Failure as failure:
            raise _api_error(failure) from None
        await self._require_meters(caller, events, request)
        await self._publish(AcceptedBatch(id_base, caller.org_id, caller.livemode, events))
        body = _encode(accepted(events))
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

    async def _publish(self, batch: AcceptedBatch) -> None:
        if not self._gateway.nc.is_connected:  # reconnecting: refuse now, never hang
            raise _unavailable()
        try:
            await publish_batch(self._js, batch)
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


def _api_error(failure: Failure) -> ApiError:
    e = failure.error
    return ApiError(e.status, e.message, e.code, e.param)


def _unavailable() -> ApiError:
    return ApiError(503, "service unavailable", ErrorCode.UNAVAILABLE)
