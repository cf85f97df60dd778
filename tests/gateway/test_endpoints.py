"""Endpoints are declared once (contracts) and used by the handler, the route and callers;
the gateway translates failures by one table. Checks on the tables themselves."""

from __future__ import annotations

import importlib
import pkgutil
from collections import Counter

from aiohttp import web
from nats.errors import ConnectionClosedError, MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

import contracts
from contracts import ErrorCode
from contracts.endpoint import Endpoint
from contracts.errors import Failure, conflict
from services.gateway.auth import AuthError
from services.gateway.errors import ApiError, translate
from services.gateway.routes import ROUTES, ZAP_METHODS
from services.gateway.routing import KINDS, Answered
from services.specs import specs


def _declared() -> dict[str, Endpoint]:
    found = {}
    for module in pkgutil.iter_modules(contracts.__path__):
        for value in vars(importlib.import_module(f"contracts.{module.name}")).values():
            if isinstance(value, Endpoint):
                found[value.subject] = value
    return found


def _handled() -> list[Endpoint]:
    return [h.endpoint for spec in specs() for h in spec.handlers.handlers]


def test_every_subject_has_one_handler_and_every_declared_endpoint_is_served():
    handled = Counter(e.subject for e in _handled())
    assert [s for s, n in handled.items() if n > 1] == []
    declared = _declared()
    assert set(handled) <= set(declared)  # a handler serves a declared endpoint
    assert {s for s in declared if s not in handled} == set()


def test_every_route_calls_a_served_endpoint():
    handled = {e.subject for e in _handled()}
    for route in ROUTES:
        assert route.kind in KINDS, route.name
        if route.kind in ("gateway", "page"):  # answered by the gateway itself
            assert isinstance(route.endpoint, Answered), route.name
        else:
            assert route.endpoint is not None and route.endpoint.subject in handled, route.name
    assert all(route in ROUTES for route in ZAP_METHODS.values())


def test_one_table_translates_every_failure():
    cases = [
        (ApiError(418, "x", "c"), (418, "x", "c")),
        (Failure.of(conflict("taken").error), (409, "taken", ErrorCode.CONFLICT)),
        (AuthError(401, "no"), (401, "no", ErrorCode.UNAUTHENTICATED)),
        (AuthError(403, "off"), (403, "off", ErrorCode.FORBIDDEN)),
        (AuthError(503, "iam"), (503, "iam", ErrorCode.UNAVAILABLE)),
        (NoRespondersError(), (503, "service unavailable", ErrorCode.UNAVAILABLE)),
        (ConnectionClosedError(), (503, "service unavailable", ErrorCode.UNAVAILABLE)),
        (NatsTimeout(), (504, "upstream timeout", ErrorCode.TIMEOUT)),
        (MaxPayloadError(), (413, "request body too large", ErrorCode.INVALID_REQUEST)),
        (web.HTTPNotFound(), (404, "not found", ErrorCode.NOT_FOUND)),
        (web.HTTPMethodNotAllowed("PUT", ["GET"]), (404, "not found", ErrorCode.NOT_FOUND)),
        (web.HTTPRequestEntityTooLarge(10, 11),
         (413, "request body too large", ErrorCode.INVALID_REQUEST)),
        (web.HTTPBadRequest(), (400, "Bad Request", "")),
    ]
    for exc, expected in cases:
        e = translate(exc)
        assert (e.status, e.message, e.code) == expected, exc
    assert translate(KeyError("a bug")) is None  # answered 500 and logged
