"""The gateway's one error boundary. Whatever a request raises on its way — the gateway's
own refusals (`ApiError`), aiohttp's (routing, body size), authentication (`AuthError`), a
service's refusal (`Failure`, also raised for an error reply), the bus (NATS errors) — is
turned into an `ApiError` here, by one table, and answered with the error envelope (REST)
or a ZAP error by the caller of `translate`. Anything not in the table is a bug: 500, logged."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from nats.errors import ConnectionClosedError, MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from contracts import ErrorCode
from contracts.errors import Failure
from services.gateway.auth import AuthError

TOO_LARGE = "request body too large"


class ApiError(Exception):
    """A refusal made by the gateway itself (validation, scope, limits), and what every
    other error becomes at the boundary."""

    def __init__(self, status: int, message: str, code: str = "", param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def _failure(e: Failure) -> ApiError:
    error = e.error
    return ApiError(error.status, error.message, error.code, error.param)


_AUTH_CODES = {400: ErrorCode.INVALID_REQUEST, 403: ErrorCode.FORBIDDEN,
               503: ErrorCode.UNAVAILABLE}


def _auth(e: AuthError) -> ApiError:
    return ApiError(e.status, e.message, _AUTH_CODES.get(e.status, ErrorCode.UNAUTHENTICATED))


def _aiohttp(e: web.HTTPException) -> ApiError:
    """aiohttp's own refusals: routing (404, 405: answered 404) and body size."""
    if e.status in (404, 405):
        return ApiError(404, "not found", ErrorCode.NOT_FOUND)
    if e.status == 413:
        return ApiError(413, TOO_LARGE, ErrorCode.INVALID_REQUEST)
    return ApiError(e.status, e.reason or "error")


def _unavailable(_: Exception) -> ApiError:
    return ApiError(503, "service unavailable", ErrorCode.UNAVAILABLE)


# Exception type → the answer. Looked up along the exception's class hierarchy, so a
# subclass is translated like its base unless it has its own row.
TABLE: dict[type[BaseException], Callable[[BaseException], ApiError]] = {
    ApiError: lambda e: e,
    Failure: _failure,
    AuthError: _auth,
    web.HTTPException: _aiohttp,
    NoRespondersError: _unavailable,  # the service is not running
    ConnectionClosedError: _unavailable,  # the bus connection is gone (reconnecting)
    NatsTimeout: lambda e: ApiError(504, "upstream timeout", ErrorCode.TIMEOUT),
    # A bus request over the server's limit: params that grew when re-encoded, or a server
    # reached after a reconnect that allows less than the body limit assumed.
    MaxPayloadError: lambda e: ApiError(413, TOO_LARGE, ErrorCode.INVALID_REQUEST),
}


def translate(exc: BaseException) -> ApiError | None:
    """The answer to `exc`, or None when it is not an expected failure (a bug: 500)."""
    for cls in type(exc).__mro__:
        row = TABLE.get(cls)
        if row is not None:
            return row(exc)
    return None
