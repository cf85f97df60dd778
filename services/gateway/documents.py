"""The gateway's side of `document` routes: a file a service made (an invoice's PDF),
answered as that file rather than as JSON.

The request follows the pipeline's steps (authenticate, authorize, decode, call); the reply's
result is a `contracts.invoicing.InvoiceDocument` (name, content type, the bytes, base64 on
the bus), sent with its own content type, `inline` under its name. Failures are JSON
envelopes as everywhere."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from contracts.errors import Failure
from contracts.invoicing import InvoiceDocument
from services.gateway.pipeline import Pipeline
from services.gateway.routing import Route

_decode = msgspec.json.Decoder(InvoiceDocument).decode


class Documents:
    def __init__(self, pipeline: Pipeline):
        self._pipeline = pipeline

    def handler(self, route: Route) -> Any:
        """The aiohttp handler of a `document` route."""
        async def handle(request: web.Request) -> web.Response:
            pipeline = self._pipeline
            caller, params = await pipeline.accept(route, request)
            reply = await pipeline.call(route.endpoint.subject,
                                        pipeline.scope(request, caller, None, None), params,
                                        request)
            if reply.error is not None:
                raise Failure.of(reply.error)
            return file_response(_decode(reply.result))

        return handle


def file_response(document: InvoiceDocument) -> web.Response:
    """The file, with its own content type, `inline` under its name."""
    response = web.Response(body=document.content, content_type=document.contentType)
    response.headers["Content-Disposition"] = f'inline; filename="{document.filename}"'
    return response
