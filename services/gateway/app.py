"""The gateway: aiohttp in front, NATS request/reply behind.

Every REST route and ZAP method follows one path: authenticate, authorize the route's access
class, decode and canonicalise the params, pin the target user for end users, attach the
idempotency key, send `Request(scope, params)` to the owning service, and answer with its
reply — the result bytes go to the client without being decoded.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import nats
from aiohttp import web
from nats.errors import ConnectionClosedError, MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from contracts import Actor, ErrorCode, RawReply, Request, Scope, subjects
from contracts.errors import INTERNAL_MESSAGE
from services.gateway.auth import Authenticator, AuthError, Caller
from services.gateway.http import (
    ApiError,
    decode_body,
    decode_query,
    error_response,
    json_response,
    request_id,
)
from services.gateway.iam import IamConfig, IamVerifier
from services.gateway.ingest import AsyncIngest
from services.gateway.routes import ROUTES, ZAP_METHODS, ZAP_ROUTE
from services.gateway.routing import ROLES_ALLOWED, Route
from services.runtime import db, telemetry
from services.runtime.bus import nats_servers
from services.runtime.config import Settings
from services.runtime.requests import Requester

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION = "0.1.0"
SCOPE_REFUSED = "Token doesn't support this scope"
REQUEST_ID = web.RequestKey("request_id", str)
# Room left in a bus message for what travels with a body: the request's scope (ids, the
# caller's claims) and params re-encoded. A body up to `max_payload` minus this is accepted.
ENVELOPE_ROOM = 64 * 1024
TOO_LARGE = "request body too large"

_encode = msgspec.json.Encoder().encode
_decode_reply = msgspec.json.Decoder(RawReply).decode


class _ZapCall(msgspec.Struct):
    method: str = ""
    id: str | int = ""
    params: msgspec.Raw = msgspec.Raw(b"")


_decode_zap = msgspec.json.Decoder(_ZapCall).decode


class Gateway:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.pool: asyncpg.Pool | None = None
        self.nc: nats.NATS | None = None
        self.requests: Requester | None = None
        self.iam: IamVerifier | None = None
        self.auth: Authenticator | None = None
        self.runner: web.AppRunner | None = None
        self.port = settings.port
        self._cors_any = settings.cors_allowed_origins == ("*",)
        self._required_keys = frozenset(settings.require_idempotency_key)
        self.ingest = AsyncIngest(self)  # meter events with `Prefer: respond-async`

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self.pool = await db.create_pool(s.database_url)
        async with self.pool.acquire() as conn:
            await db.migrate(conn, "gateway", MIGRATIONS)
        self.nc = await nats.connect(servers=nats_servers(s.nats_url), name="billing-gateway",
                                     max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        self.requests = Requester(self.nc)
        await self.requests.start()
        await self.ingest.start()
        iam_config = IamConfig.from_env(s.env)
        if iam_config.enabled:
            self.iam = IamVerifier(iam_config)
            await self.iam.start()
        self.auth = Authenticator(s, self.pool, self.iam)
        await self.nc.subscribe(subjects.GATEWAY_API_KEY_REVOKED,
                                cb=self._on_key_revoked)
        self.runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, s.host, s.port, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.iam is not None:
            await self.iam.close()
        if self.nc is not None:
            await self.nc.drain()
        if self.pool is not None:
            await self.pool.close()

    async def _on_key_revoked(self, msg: Any) -> None:
        self.auth.forget_key(msg.data)

    # ---- the application ----------------------------------------------------------------

    def body_limit(self) -> int:
        """The largest body accepted: every body goes on the bus (a request, or a JetStream
        message for asynchronous meter events), whose server caps messages at
        `max_payload` (1 MB by default); larger bodies are answered 413 up front."""
        return max(self.nc.max_payload - ENVELOPE_ROOM, self.nc.max_payload // 2)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._edge], client_max_size=self.body_limit())
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        for prefix in self.settings.path_prefixes:
            for route in ROUTES:
                handler = self.ingest.wrap(route, self._rest(route))
                app.router.add_route(route.method, prefix + route.path, handler)
            app.router.add_post(prefix + ZAP_ROUTE.path, self._zap)
        return app

    @web.middleware
    async def _edge(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Request ids, CORS, cache headers and the error envelope, for every response."""
        rid = request_id(request)
        request[REQUEST_ID] = rid
        if request.method == "OPTIONS":
            response = self._preflight(request)
        else:
            try:
                if telemetry.tracing_enabled():
                    with telemetry.server_span(_route_name(request), request.headers):
                        response = await handler(request)
                else:
                    response = await handler(request)
            except ApiError as e:
                response = error_response(e.status, e.message, rid, e.code, e.param)
            except web.HTTPException as e:
                if e.status in (404, 405):
                    response = error_response(404, "not found", rid, ErrorCode.NOT_FOUND)
                elif e.status == 413:
                    response = error_response(413, TOO_LARGE, rid, ErrorCode.INVALID_REQUEST)
                else:
                    response = error_response(e.status, e.reason or "error", rid)
            except Exception:
                log.exception("unhandled error (request %s)", rid)
                response = error_response(500, INTERNAL_MESSAGE, rid, ErrorCode.INTERNAL)
        headers = response.headers
        headers["X-Request-Id"] = rid
        headers.setdefault("Cache-Control", "private, no-store")
        self._cors(request, headers)
        return response

    def _cors(self, request: web.Request, headers: Any) -> None:
        if self._cors_any:
            headers["Access-Control-Allow-Origin"] = "*"
        else:
            origin = request.headers.get("Origin", "")
            if origin in self.settings.cors_allowed_origins:
                headers["Access-Control-Allow-Origin"] = origin
                headers["Access-Control-Allow-Credentials"] = "true"
            headers["Vary"] = "Origin"
        headers["Access-Control-Expose-Headers"] = (
            "X-Request-Id, Idempotent-Replayed, X-Total-Count, X-Has-More")

    def _preflight(self, request: web.Request) -> web.Response:
        response = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
        asked = request.headers.get("Access-Control-Request-Headers")
        if asked:
            response.headers["Access-Control-Allow-Headers"] = asked
        response.headers["Access-Control-Max-Age"] = "86400"
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        return json_response(_encode({"status": "ok", "service": "billing-gateway",
                                      "version": VERSION}))

    async def _readyz(self, request: web.Request) -> web.Response:
        checks = {"nats": self.nc is not None and self.nc.is_connected, "postgres": False}
        try:
            checks["postgres"] = await self.pool.fetchval("select true", timeout=2)
        except Exception:
            pass
        ready = all(checks.values())
        body = _encode({"status": "ready" if ready else "unavailable", "checks": checks})
        return json_response(body, 200 if ready else 503)

    # ---- REST ---------------------------------------------------------------------------

    def _rest(self, route: Route) -> Any:
        async def handle(request: web.Request) -> web.Response:
            caller, params = await self._accept(route, request)
            key = self._idempotency_key(request, route)
            fingerprint = _fingerprint(route, request, params, caller.actor) if key else None
            reply = await self._call(route.subject, self._scope(request, caller, key,
                                                                fingerprint), params, request)
            if reply.error is not None:
                e = reply.error
                raise ApiError(e.status, e.message, e.code, e.param)
            if reply.status == 204:  # No Content: no body at all, not `null`
                response = web.Response(status=204)
            else:
                response = json_response(bytes(reply.result), reply.status)
            if route.access == "public":
                _public_cache_headers(response.headers, route.path)
            if reply.replayed:
                response.headers["Idempotent-Replayed"] = "true"
            return response

        return handle

    async def _accept(self, route: Route, request: web.Request) -> tuple[Caller, Any]:
        """Authenticate, authorize the route's class, decode the params, pin the user."""
        caller = await self._authenticate(request)
        _authorize(route, caller.actor)
        if route.source == "query":
            params = decode_query(route.params, request.query)
        else:
            params = decode_body(route.params, await request.read())
        if request.match_info:  # path parameters (`{id}`) fill the param of the same name
            params = msgspec.structs.replace(params, **request.match_info)
        return caller, _pin_user(route, params, caller.actor)

    async def _authenticate(self, request: web.Request) -> Caller:
        try:
            return await self.auth.authenticate(request)
        except AuthError as e:
            code = ErrorCode.FORBIDDEN if e.status == 403 else (
                ErrorCode.UNAVAILABLE if e.status == 503 else ErrorCode.UNAUTHENTICATED)
            raise ApiError(e.status, e.message, code) from None

    def _idempotency_key(self, request: web.Request, route: Route) -> str | None:
        key = request.headers.get("Idempotency-Key")
        alias = request.headers.get("X-Idempotency-Key")
        if key is not None and alias is not None and key != alias:
            raise ApiError(400, "conflicting idempotency keys", ErrorCode.INVALID_REQUEST)
        key = key if key is not None else alias
        if key is None:
            if route.name in self._required_keys:
                raise ApiError(400, "Idempotency-Key is required", ErrorCode.INVALID_REQUEST)
            return None
        if not (1 <= len(key) <= 255 and all(" " <= c <= "~" for c in key)):
            raise ApiError(400, "invalid idempotency key", ErrorCode.INVALID_REQUEST)
        return key if route.idempotent else None  # accepted and ignored elsewhere

    def _scope(self, request: web.Request, caller: Caller, key: str | None,
               fingerprint: str | None) -> Scope:
        deadline = int((time.time() + self.settings.request_timeout_s) * 1000)
        return Scope(org_id=caller.org_id, org_name=caller.org_name, livemode=caller.livemode,
                     actor=caller.actor, request_id=request[REQUEST_ID],
                     idempotency_key=key, fingerprint=fingerprint, deadline_ms=deadline)

    async def _call(self, subject: str, scope: Scope, params: Any, request: web.Request,
                    timeout: float | None = None) -> RawReply:
        """One bus request; transport failures become 503 / 504 errors, never hangs."""
        if not self.nc.is_connected:
            raise ApiError(503, "service unavailable", ErrorCode.UNAVAILABLE)
        payload = _encode(Request(scope, params))
        if len(payload) > self.nc.max_payload:  # re-encoded params can outgrow the body
            raise ApiError(413, TOO_LARGE, ErrorCode.INVALID_REQUEST)
        with telemetry.client_span(subject):
            headers = telemetry.inject_headers({}) if telemetry.tracing_enabled() else None
            if headers is None and "traceparent" in request.headers:
                headers = {"traceparent": request.headers["traceparent"]}
            try:
                msg = await self.requests.request(
                    subject, payload, headers=headers,
                    timeout=timeout or self.settings.request_timeout_s)
            except NoRespondersError:
                raise ApiError(503, "service unavailable", ErrorCode.UNAVAILABLE) from None
            except NatsTimeout:
                raise ApiError(504, "upstream timeout", ErrorCode.TIMEOUT) from None
            except ConnectionClosedError:
                raise ApiError(503, "service unavailable", ErrorCode.UNAVAILABLE) from None
            except MaxPayloadError:  # a server reached after a reconnect allows less
                raise ApiError(413, TOO_LARGE, ErrorCode.INVALID_REQUEST) from None
        return _decode_reply(msg.data)

    # ---- ZAP ----------------------------------------------------------------------------

    async def _zap(self, request: web.Request) -> web.Response:
        caller = await self._authenticate(request)
        _authorize(ZAP_ROUTE, caller.actor)
        try:
            call = _decode_zap(await request.read())
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            return _zap_error("", -32700, f"parse error: {e}", 400)
        if not call.method:
            return _zap_error(call.id, -32600, "method is required", 400)
        route = ZAP_METHODS.get(call.method)
        if route is None:
            return _zap_error(call.id, -32601, f"method not found: {call.method}")
        if not call.params:
            return _zap_error(call.id, -32602, "invalid params: unexpected end of JSON input")
        try:
            _authorize(route, caller.actor)
            params = _pin_user(route, decode_body(route.params, bytes(call.params)),
                               caller.actor)
        except ApiError as e:
            if e.status == 400:
                return _zap_error(call.id, -32602, f"invalid params: {e.message}")
            return _zap_error(call.id, -32000, e.message)
        key = self._idempotency_key(request, route)
        fingerprint = _fingerprint(route, request, params, caller.actor) if key else None
        try:
            reply = await self._call(route.subject, self._scope(request, caller, key,
                                                                fingerprint), params, request)
        except ApiError as e:
            return _zap_error(call.id, -32000, e.message)
        if reply.error is not None:
            code = -32602 if reply.error.code == ErrorCode.INVALID_REQUEST else -32000
            return _zap_error(call.id, code, reply.error.message)
        body = b'{"id":' + _encode(call.id) + b',"result":' + bytes(reply.result) + b"}"
        return json_response(body)


def _public_cache_headers(headers: Any, path: str) -> None:
    """The reference's caching of public answers (conventions §6.8, §10.9): an hour at the
    CDN, half that in browsers, tagged for purges (`dns-plans`, `plans`). Successes only."""
    headers["Cache-Control"] = "public, max-age=1800, s-maxage=3600, stale-while-revalidate=60"
    headers["CDN-Cache-Control"] = "max-age=3600"
    headers["Vary"] = "Accept-Encoding"
    headers["Cache-Tag"] = "dns-plans" if path.startswith("/dns/") else "plans"


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return f"{request.method} {resource.canonical if resource else request.path}"


def _zap_error(call_id: str | int, code: int, message: str, status: int = 200) -> web.Response:
    return json_response(_encode({"id": call_id, "error": {"code": code, "message": message}}),
                         status)


def _authorize(route: Route, actor: Actor) -> None:
    allowed = actor.may_mint if route.access == "mint" else (
        actor.role in ROLES_ALLOWED[route.access])
    if not allowed:
        raise ApiError(403, SCOPE_REFUSED, ErrorCode.FORBIDDEN)


def _pin_user(route: Route, params: Any, actor: Actor) -> Any:
    """Canonicalise the target user (trimmed, lower-case); an end user may only name
    themselves and names themselves by default."""
    if route.user_field is None:
        return params
    user = getattr(params, route.user_field).strip().lower()
    if actor.role == "user":
        if not user:
            user = actor.user_id or ""
        elif user != actor.user_id:
            raise ApiError(403, route.other_user_message, ErrorCode.FORBIDDEN)
    return msgspec.structs.replace(params, **{route.user_field: user})


# Of the decoded params, with object keys in a set order: a retry that serialises the same
# JSON differently (spacing, key order, in `dimensions` too) is the same request.
_encode_canonical = msgspec.json.Encoder(order="deterministic").encode


def _fingerprint(route: Route, request: web.Request, params: Any, actor: Actor) -> str:
    principal = actor.key_id or actor.user_id or actor.kind
    h = hashlib.sha256()
    h.update(f"{route.name}\n{sorted(request.match_info.items())}\n{principal}\n".encode())
    h.update(_encode_canonical(params))
    return h.hexdigest()
