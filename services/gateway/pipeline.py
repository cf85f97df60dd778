"""The request pipeline every REST route and ZAP method follows: authenticate, authorize the
route's access class, decode and canonicalise the params, pin the target user for end
users, attach the idempotency key, and call the route's endpoint with `Request(scope,
params)`. The reply's result bytes go to the client without being decoded.

Failures are raised as they come (`AuthError`, `ApiError`, `Failure` for a service's
refusal, NATS errors) and translated once, at the gateway's edge (`errors.py`). Special
routes (`ingest.py`) use the same steps.
"""

from __future__ import annotations

import functools
import hashlib
import time
from typing import Any

import msgspec
import nats
from aiohttp import web

from contracts import Actor, ErrorCode, RawReply, Reply, Request, Scope
from contracts.endpoint import Endpoint
from contracts.errors import Failure
from contracts.rules import user_id
from services.gateway.auth import Authenticator, Caller
from services.gateway.errors import ApiError
from services.gateway.http import (
    INVALID_BODY,
    decode_body,
    decode_query,
    json_response,
    path_params,
)
from services.gateway.routing import ROLES_ALLOWED, Route
from services.runtime import telemetry
from services.runtime.config import Settings
from services.runtime.idempotency import is_client_key
from services.runtime.requests import Requester

SCOPE_REFUSED = "Token doesn't support this scope"
REQUEST_ID = web.RequestKey("request_id", str)

_encode = msgspec.json.Encoder().encode
_decode_reply = msgspec.json.Decoder(RawReply).decode


class Pipeline:
    def __init__(self, settings: Settings, nc: nats.NATS, requests: Requester,
                 auth: Authenticator):
        self.settings = settings
        self.nc = nc
        self.requests = requests
        self.auth = auth
        self._required_keys = frozenset(settings.require_idempotency_key)

    # ---- a bus route, end to end ----------------------------------------------------------

    def handler(self, route: Route) -> Any:
        """The aiohttp handler of a `bus` route (`respond` itself: no extra call per
        request)."""
        return functools.partial(self.respond, route)

    async def respond(self, route: Route, request: web.Request,
                      endpoint: Endpoint | None = None) -> web.Response:
        """Every step for `route`, calling `endpoint` (the route's own by default)."""
        caller, params = await self.accept(route, request)
        key = self.idempotency_key(request, route)
        fingerprint = fingerprint_of(route, request, params, caller.actor) if key else None
        reply = await self.call((endpoint or route.endpoint).subject,
                                self.scope(request, caller, key, fingerprint), params, request)
        if reply.error is not None:
            raise Failure.of(reply.error)
        if reply.status == 204:  # No Content: no body at all, not `null`
            response = web.Response(status=204)
        else:
            response = json_response(bytes(reply.result), reply.status)
        if route.access == "public":
            _public_cache_headers(response.headers, route.path)
        if reply.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        page_headers(response.headers, reply)
        return response

    # ---- the steps ------------------------------------------------------------------------

    async def accept(self, route: Route, request: web.Request) -> tuple[Caller, Any]:
        """Authenticate, authorize the route's class, decode the params, pin the user."""
        caller = await self.auth.authenticate(request)
        authorize(route, caller.actor)
        return caller, pin_user(route, await self.params(route, request), caller.actor)

    async def params(self, route: Route, request: web.Request) -> Any:
        """The route's params from its query or body, and its path."""
        if route.source == "query":
            params = decode_query(route.params, request.query)
        elif route.source == "optional":
            # Body optional (payments.md §0.3): one that does not decode counts as absent;
            # a field over its size limit is still refused.
            try:
                params = decode_body(route.params, await _body(route, request))
            except ApiError as e:
                if e.message != INVALID_BODY:
                    raise
                params = route.params()
        else:
            params = decode_body(route.params, await _body(route, request))
        if request.match_info:  # path parameters (`{id}`) fill the param of the same name
            params = msgspec.structs.replace(params, **path_params(request.match_info))
        return params

    def idempotency_key(self, request: web.Request, route: Route) -> str | None:
        key = request.headers.get("Idempotency-Key")
        alias = request.headers.get("X-Idempotency-Key")
        if key is not None and alias is not None and key != alias:
            raise ApiError(400, "conflicting idempotency keys", ErrorCode.INVALID_REQUEST)
        key = key if key is not None else alias
        if key is None:
            if route.name in self._required_keys:
                raise ApiError(400, "Idempotency-Key is required", ErrorCode.INVALID_REQUEST)
            return None
        if not is_client_key(key):
            raise ApiError(400, "invalid idempotency key", ErrorCode.INVALID_REQUEST)
        return key if route.idempotent else None  # accepted and ignored elsewhere

    def scope(self, request: web.Request, caller: Caller, key: str | None,
              fingerprint: str | None) -> Scope:
        deadline = int((time.time() + self.settings.request_timeout_s) * 1000)
        return Scope(org_id=caller.org_id, org_name=caller.org_name, livemode=caller.livemode,
                     actor=caller.actor, request_id=request[REQUEST_ID],
                     idempotency_key=key, fingerprint=fingerprint, deadline_ms=deadline)

    async def call(self, subject: str, scope: Scope, params: Any, request: web.Request | None,
                   timeout: float | None = None) -> RawReply:
        """One bus request (for `request`: its trace continues). Transport failures are
        raised (503 / 504 at the edge), never hang: no responders, timeouts and a closed
        connection are NATS errors."""
        if not self.nc.is_connected:
            raise ApiError(503, "service unavailable", ErrorCode.UNAVAILABLE)
        # Re-encoded params can outgrow the body: nats-py refuses a payload over the server's
        # limit with MaxPayloadError, answered 413 at the edge (errors.py).
        payload = _encode(Request(scope, params))
        with telemetry.client_span(subject):
            headers = telemetry.inject_headers({}) if telemetry.tracing_enabled() else None
            if headers is None and request is not None and "traceparent" in request.headers:
                headers = {"traceparent": request.headers["traceparent"]}
            msg = await self.requests.request(
                subject, payload, headers=headers,
                timeout=timeout or self.settings.request_timeout_s)
        return _decode_reply(msg.data)

    async def ask(self, endpoint: Endpoint, scope: Scope, params: Any,
                  request: web.Request) -> Reply:
        """Another endpoint's reply with its result decoded, for what the gateway composes
        itself; a refusal is raised as the service's `Failure`, never taken for empty."""
        reply = await self.call(endpoint.subject, scope, params, request)
        if reply.error is not None:
            raise Failure.of(reply.error)
        return Reply(result=endpoint.decode_result(reply.result), status=reply.status,
                     total=reply.total, more=reply.more)


async def _body(route: Route, request: web.Request) -> bytes:
    """The body; over the route's own limit it is refused before it is decoded."""
    if route.max_body and (request.content_length or 0) > route.max_body:
        raise ApiError(400, INVALID_BODY, ErrorCode.INVALID_REQUEST)
    raw = await request.read()
    if route.max_body and len(raw) > route.max_body:
        raise ApiError(400, INVALID_BODY, ErrorCode.INVALID_REQUEST)
    return raw


def page_headers(headers: Any, reply: RawReply | Reply) -> None:
    """A page of a list says how many there are and whether more follow (§10.6)."""
    if reply.total is not None:
        headers["X-Total-Count"] = str(reply.total)
        headers["X-Has-More"] = "true" if reply.more else "false"


def authorize(route: Route, actor: Actor) -> None:
    allowed = actor.may_mint if route.access == "mint" else (
        actor.role in ROLES_ALLOWED[route.access])
    if not allowed:
        raise ApiError(403, SCOPE_REFUSED, ErrorCode.FORBIDDEN)


def pin_user(route: Route, params: Any, actor: Actor) -> Any:
    """Canonicalise the target user (`contracts.rules.user_id`, as the services do); an end
    user may only name themselves and names themselves by default."""
    if route.user_field is None:
        return params
    user = user_id(getattr(params, route.user_field))
    if actor.role == "user":
        if not user:
            user = actor.user_id or ""
        elif user != actor.user_id:
            raise ApiError(403, route.other_user_message, ErrorCode.FORBIDDEN)
    return msgspec.structs.replace(params, **{route.user_field: user})


# Of the decoded params, with object keys in a set order: a retry that serialises the same
# JSON differently (spacing, key order, in `dimensions` too) is the same request.
_encode_canonical = msgspec.json.Encoder(order="deterministic").encode


def fingerprint_of(route: Route, request: web.Request, params: Any, actor: Actor) -> str:
    principal = actor.key_id or actor.user_id or actor.kind
    h = hashlib.sha256()
    h.update(f"{route.name}\n{sorted(request.match_info.items())}\n{principal}\n".encode())
    h.update(_encode_canonical(params))
    return h.hexdigest()


def _public_cache_headers(headers: Any, path: str) -> None:
    """The reference's caching of public answers (conventions §6.8, §10.9): an hour at the
    CDN, half that in browsers, tagged for purges (`dns-plans`, `plans`). Successes only."""
    headers["Cache-Control"] = "public, max-age=1800, s-maxage=3600, stale-while-revalidate=60"
    headers["CDN-Cache-Control"] = "max-age=3600"
    headers["Vary"] = "Accept-Encoding"
    headers["Cache-Tag"] = "dns-plans" if path.startswith("/dns/") else "plans"
