"""The gateway's side of provider webhooks (`webhook` routes): `POST
/billing/webhooks/{provider}` and `/billing/webhooks/{provider}/{org}` (payments.md §5).

No credential: the provider's signature is one, and payments checks it. The gateway only
takes the raw body (at most `WEBHOOK_BODY_BYTES`, else 413), the signature headers and the
notification URL Square signs, and hands them over unchanged (`billing.payments.webhook.
ingest`), for the organization the URL names — never created from the URL — or else the
platform's (`BILLING_SERVICE_ORG`, §5.5), which payments replaces by the organization whose
settings name the event's provider account, if one does.

The notification URL: `SQUARE_WEBHOOK_URL` (where Square reaches the gateway, e.g.
`https://billing.example.com`) followed by the path and query the request came to; without
the setting, the request's own URL as the gateway saw it (scheme and `Host`).

Deliveries received together (in one event-loop turn) go to payments as one bus request,
`billing.payments.webhook.ingest_batch` (each with its own scope, answered as the route's
endpoint answers it): a round trip, and a message each way, for many."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from aiohttp import web

from contracts import Actor, ErrorCode, RawReply, Request, Scope
from contracts.errors import Failure
from contracts.webhooks_in import (
    SIGNATURE_HEADERS,
    WEBHOOK_BODY_BYTES,
    WEBHOOK_INGEST_BATCH,
    WebhookIngestBatch,
    WebhookIngestParams,
)
from services.gateway.auth import AuthError
from services.gateway.errors import TOO_LARGE, ApiError
from services.gateway.http import json_response, path_params
from services.gateway.pipeline import REQUEST_ID, Pipeline
from services.gateway.routing import Route
from services.runtime.batching import MicroBatcher

# Who a delivery acts as: nobody in particular (payments trusts the signature only).
PROVIDER = Actor(kind="service", role="publishable")

_decode_replies = msgspec.json.Decoder(list[RawReply]).decode


class ProviderWebhooks:
    def __init__(self, pipeline: Pipeline):
        self._pipeline = pipeline
        self._base_url = pipeline.settings.square_webhook_url.rstrip("/")
        self._batches = MicroBatcher(self._send)

    def handler(self, route: Route) -> Any:
        """The aiohttp handler of a `webhook` route."""
        async def handle(request: web.Request) -> web.Response:
            path_params(request.match_info)
            body = await _body(request)
            named = request.match_info.get("org")
            org = await self._org(named)
            pipeline = self._pipeline
            scope = Scope(org_id=org.id, org_name=org.name, livemode=True, actor=PROVIDER,
                          request_id=request[REQUEST_ID], deadline_ms=int(
                              (time.time() + pipeline.settings.request_timeout_s) * 1000))
            params = WebhookIngestParams(
                provider=request.match_info["provider"], body=body,
                headers={name: request.headers[name] for name in SIGNATURE_HEADERS
                         if name in request.headers},
                url=self._url(request), orgNamed=named is not None)
            reply = await self._batches(Request(scope, params))
            if reply.error is not None:
                raise Failure.of(reply.error)
            return json_response(bytes(reply.result), reply.status)

        return handle

    async def _send(self, deliveries: list[Request[WebhookIngestParams]]) -> list[RawReply]:
        """Each delivery's reply, from one bus request per at most `WEBHOOK_BODY_BYTES` of
        bodies (well inside the bus's message limit)."""
        replies = await asyncio.gather(*(self._send_one(chunk) for chunk in _chunks(deliveries)))
        return [reply for chunk in replies for reply in chunk]

    async def _send_one(self, deliveries: list[Request[WebhookIngestParams]],
                        ) -> list[RawReply]:
        scope = msgspec.structs.replace(deliveries[0].scope, deadline_ms=min(
            d.scope.deadline_ms for d in deliveries))
        reply = await self._pipeline.call(WEBHOOK_INGEST_BATCH.subject, scope,
                                          WebhookIngestBatch(deliveries), None)
        if reply.error is not None:  # the batch refused as a whole (its deadline past)
            return [reply] * len(deliveries)
        return _decode_replies(reply.result)

    async def _org(self, name: str | None) -> Any:
        try:
            return await self._pipeline.auth.existing_org(
                name or self._pipeline.settings.service_org)
        except AuthError as e:
            if e.status == 403:
                raise
            raise ApiError(404, "unknown organization", ErrorCode.NOT_FOUND) from None

    def _url(self, request: web.Request) -> str:
        if request.match_info["provider"].strip().lower() != "square":
            return ""  # only Square signs the URL
        if self._base_url:
            return self._base_url + request.rel_url.raw_path_qs
        return str(request.url)


def _chunks(deliveries: list[Request[WebhookIngestParams]],
            ) -> list[list[Request[WebhookIngestParams]]]:
    chunks: list[list[Request[WebhookIngestParams]]] = []
    size = WEBHOOK_BODY_BYTES
    for d in deliveries:
        if size + len(d.params.body) > WEBHOOK_BODY_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(d)
        size += len(d.params.body)
    return chunks


async def _body(request: web.Request) -> bytes:
    if (request.content_length or 0) > WEBHOOK_BODY_BYTES:
        raise ApiError(413, TOO_LARGE, ErrorCode.INVALID_REQUEST)
    raw = await request.read()
    if len(raw) > WEBHOOK_BODY_BYTES:
        raise ApiError(413, TOO_LARGE, ErrorCode.INVALID_REQUEST)
    return raw
