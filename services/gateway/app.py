"""The gateway: aiohttp in front, NATS request/reply behind.

Routes are a table (`routes.py`); each is served by its kind's handler — `bus` routes by
the request pipeline (`pipeline.py`), `ingest` by the asynchronous meter-event path
(`ingest.py`), `webhook` by provider deliveries (`webhooks.py`), `document` by files a
service made (`documents.py`), `gateway` by the gateway itself (`answers.py`), `page` by the
customer portal page (`portal_page.py`) — and ZAP methods reuse the REST routes. Every failure is
answered at one edge, translated by one table (`errors.py`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import nats
from aiohttp import web

from contracts import ErrorCode
from contracts.errors import INTERNAL_MESSAGE
from services.gateway import openapi
from services.gateway.answers import Answers
from services.gateway.auth import Authenticator
from services.gateway.documents import Documents
from services.gateway.errors import ApiError, translate
from services.gateway.http import (
    NUL_REFUSED,
    GatewayRunner,
    decode_body,
    error_response,
    json_response,
    request_id,
)
from services.gateway.iam import IamConfig, IamVerifier
from services.gateway.ingest import AsyncIngest
from services.gateway.pipeline import REQUEST_ID, Pipeline, authorize, fingerprint_of, pin_user
from services.gateway.portal_page import PortalPages
from services.gateway.routes import ROUTES, ZAP_METHODS, ZAP_ROUTE
from services.gateway.webhooks import ProviderWebhooks
from services.runtime import db, telemetry
from services.runtime.bus import nats_servers
from services.runtime.config import Settings
from services.runtime.requests import Requester

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION = "0.1.0"
# Room left in a bus message for what travels with a body: the request's scope (ids, the
# caller's claims) and params re-encoded. A body up to `max_payload` minus this is accepted.
ENVELOPE_ROOM = 64 * 1024

_encode = msgspec.json.Encoder().encode


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
        self.pipeline: Pipeline | None = None
        self.ingest: AsyncIngest | None = None  # meter events with `Prefer: respond-async`

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self.pool = await db.create_pool(s.database_url, max_size=s.db_pool_size)
        async with self.pool.acquire() as conn:
            await db.migrate(conn, "gateway", MIGRATIONS)
        self.nc = await nats.connect(servers=nats_servers(s.nats_url), name="billing-gateway",
                                     max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        self.requests = Requester(self.nc)
        await self.requests.start()
        iam_config = IamConfig.from_env(s.env)
        if iam_config.enabled:
            self.iam = IamVerifier(iam_config)
            await self.iam.start()
        self.auth = Authenticator(s, self.pool, self.iam)
        await self.auth.start()
        self.pipeline = Pipeline(s, self.nc, self.requests, self.auth)
        self.ingest = AsyncIngest(self.pipeline)
        await self.ingest.start()
        self.runner = GatewayRunner(self.app(), access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, s.host, s.port, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.auth is not None:
            await self.auth.close()
        if self.iam is not None:
            await self.iam.close()
        if self.nc is not None:
            await self.nc.drain()
        if self.pool is not None:
            await self.pool.close()

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
        openapi.add_routes(app.router, openapi.document(
            ROUTES, self.settings.path_prefixes, zap=ZAP_ROUTE, zap_methods=tuple(ZAP_METHODS),
            version=VERSION, query_keys=self.settings.allow_query_keys))
        # Each kind of route has its handler.
        handler_of = {"bus": self.pipeline.handler, "ingest": self.ingest.handler,
                      "webhook": ProviderWebhooks(self.pipeline).handler,
                      "document": Documents(self.pipeline).handler,
                      "gateway": Answers(self.pipeline).handler,
                      "page": PortalPages(self.pipeline).handler}
        for prefix in self.settings.path_prefixes:
            for route in ROUTES:
                app.router.add_route(route.method, prefix + route.path,
                                     handler_of[route.kind](route))
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
            except Exception as exc:
                e = translate(exc)
                if e is None:
                    log.exception("unhandled error (request %s)", rid)
                    e = ApiError(500, INTERNAL_MESSAGE, ErrorCode.INTERNAL)
                response = error_response(e.status, e.message, rid, e.code, e.param)
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

    # ---- ZAP ----------------------------------------------------------------------------

    async def _zap(self, request: web.Request) -> web.Response:
        pipeline = self.pipeline
        caller = await pipeline.auth.authenticate(request)
        authorize(ZAP_ROUTE, caller.actor)
        try:
            call = _decode_zap(await request.read())
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            return _zap_error("", -32700, f"parse error: {e}", 400)
        except RecursionError:
            return _zap_error("", -32700, "parse error: nested too deeply", 400)
        if isinstance(call.id, str) and "\x00" in call.id:  # refused like any NUL, not echoed
            return _zap_error("", -32600, f"id: {NUL_REFUSED}", 400)
        if not call.method:
            return _zap_error(call.id, -32600, "method is required", 400)
        route = ZAP_METHODS.get(call.method)
        if route is None:
            return _zap_error(call.id, -32601, f"method not found: {call.method}")
        if not call.params:
            return _zap_error(call.id, -32602, "invalid params: unexpected end of JSON input")
        try:
            authorize(route, caller.actor)
            params = pin_user(route, decode_body(route.params, bytes(call.params)),
                              caller.actor)
        except ApiError as e:
            if e.status == 400:
                return _zap_error(call.id, -32602, f"invalid params: {e.message}")
            return _zap_error(call.id, -32000, e.message)
        # Every ZAP method names a user (ledger.md §4): ZAP's own message when it is empty.
        if route.user_field and not getattr(params, route.user_field):
            return _zap_error(call.id, -32602, "user is required")
        key = pipeline.idempotency_key(request, route)
        fingerprint = fingerprint_of(route, request, params, caller.actor) if key else None
        try:
            reply = await pipeline.call(route.endpoint.subject, pipeline.scope(
                request, caller, key, fingerprint), params, request)
        except Exception as exc:
            e = translate(exc)
            if e is None:
                raise
            return _zap_error(call.id, -32000, e.message)
        if reply.error is not None:
            code = -32602 if reply.error.code == ErrorCode.INVALID_REQUEST else -32000
            return _zap_error(call.id, code, reply.error.message)
        body = b'{"id":' + _encode(call.id) + b',"result":' + bytes(reply.result) + b"}"
        return json_response(body)


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return f"{request.method} {resource.canonical if resource else request.path}"


def _zap_error(call_id: str | int, code: int, message: str, status: int = 200) -> web.Response:
    return json_response(_encode({"id": call_id, "error": {"code": code, "message": message}}),
                         status)
