"""The gateway's side of `gateway` routes: answered by the gateway itself (`Answered`), from
the caller alone (billing accounts) or composed from concurrent bus requests (the customer
portal's views). The request follows the pipeline's steps (authenticate, authorize, decode,
pin the user); the answer is a result (or a `Reply`, for a page of a list), sent as JSON with
the route's status. Refusals are raised and answered at the edge like every other."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from contracts import Reply
from services.gateway.http import json_response
from services.gateway.pipeline import Pipeline, page_headers
from services.gateway.routing import Route

_encode = msgspec.json.Encoder().encode


class Answers:
    def __init__(self, pipeline: Pipeline):
        self._pipeline = pipeline

    def handler(self, route: Route) -> Any:
        """The aiohttp handler of a `gateway` route."""
        async def handle(request: web.Request) -> web.Response:
            caller, params = await self._pipeline.accept(route, request)
            answered = await route.endpoint.answer(self._pipeline, request, caller, params)
            reply = answered if isinstance(answered, Reply) else Reply(result=answered)
            response = json_response(_encode(reply.result), route.status)
            page_headers(response.headers, reply)
            return response

        return handle
