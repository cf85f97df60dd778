"""HTTP details shared by the gateway's handlers: the error envelope, request ids, CORS and
cache headers, and decoding bodies and queries into contract structs."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

from contracts.common import INT64_MAX, INT64_MIN
from contracts.errors import INTERNAL_MESSAGE as INTERNAL
from contracts.ids import uuid7_int
from contracts.limits import ID_CHARS, limit_exceeded
from services.gateway.errors import ApiError

log = logging.getLogger(__name__)

JSON = "application/json"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
INVALID_BODY = "invalid request body"


class _ErrorBody(msgspec.Struct, omit_defaults=True):
    type: str
    message: str
    code: str = ""
    param: str | None = None
    requestId: str = ""


class _Envelope(msgspec.Struct):
    error: _ErrorBody


_encode = msgspec.json.Encoder().encode


def request_id(request: web.Request) -> str:
    inbound = request.headers.get("X-Request-Id", "")
    if inbound and _REQUEST_ID.match(inbound):
        return inbound
    return str(uuid.UUID(int=uuid7_int()))


def error_response(status: int, message: str, request_id: str, code: str = "",
                   param: str | None = None) -> web.Response:
    body = _encode(_Envelope(_ErrorBody("api-error", message, code, param, request_id)))
    return web.Response(status=status, body=body, content_type=JSON)


def json_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, content_type=JSON, charset="utf-8")


# ---- what aiohttp answers itself ----------------------------------------------------------


class GatewayRunner(web.AppRunner):
    """An AppRunner whose connections answer with the error envelope what aiohttp's HTTP
    parser refuses before any handler runs (a request line or header over 8190 bytes, too
    many headers, a bad Content-Length): aiohttp's own answer is text/plain and echoes the
    request line, a `?key=` credential included. aiohttp has no public hook for these: this
    builds aiohttp's Server from the one AppRunner made (its `_loop`, `_kwargs`), with a
    RequestHandler whose `handle_error` answers; tests/gateway/test_hardening_http.py catches a
    change of those internals."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return _EnvelopeServer(made.request_handler, request_factory=made.request_factory,
                               handler_cancellation=made.handler_cancellation,
                               loop=made._loop, **made._kwargs)


class _EnvelopeServer(web.Server):
    def __call__(self) -> RequestHandler:  # one per connection
        return _EnvelopeErrors(self, loop=self._loop, **self._kwargs)


class _EnvelopeErrors(RequestHandler):
    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """The envelope, and a log line naming the refusal only: aiohttp's messages quote
        the request (conventions §10.8: never log credentials)."""
        if request.writer.output_size > 0:  # a response is under way: only closing is left
            raise ConnectionError("response already started; closing the connection")
        if status >= 500:
            log.error("HTTP server error %s (%s)", status, type(exc).__name__)
            text, code = INTERNAL, "internal"
        else:
            log.info("refused a malformed HTTP request: %s (%s)", status,
                     type(exc).__name__)
            text = ("request line or header too long" if isinstance(exc, LineTooLong)
                    else "malformed HTTP request")
            code = "invalid_request"
        rid = str(uuid.UUID(int=uuid7_int()))
        response = error_response(status, text, rid, code)
        response.headers["X-Request-Id"] = rid
        response.headers["Cache-Control"] = "private, no-store"
        response.force_close()
        return response


# ---- decoding --------------------------------------------------------------------------

_decoders: dict[type, msgspec.json.Decoder] = {}
_field_names: dict[type, dict[str, str]] = {}
_int_fields: dict[type, frozenset[str]] = {}


def _info(struct: type) -> None:
    if struct in _decoders:
        return
    _decoders[struct] = msgspec.json.Decoder(struct)
    fields = msgspec.inspect.type_info(struct).fields
    _field_names[struct] = {f.encode_name.lower(): f.encode_name for f in fields}
    _int_fields[struct] = frozenset(
        f.encode_name for f in fields if isinstance(f.type, msgspec.inspect.IntType))


def decode_body(struct: type, raw: bytes) -> Any:
    """JSON → `struct`. Exact field names first; only if unknown keys are present, fold keys
    case-insensitively onto the declared names (Go's decoder did) and drop the rest."""
    _info(struct)
    if b"\\u0000" in raw:  # rare: one scan of the body, the exact search only then
        _refuse_nul(raw)
    decoder = _decoders[struct]
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as e:
        if raw.strip() == b"null":  # looked for only once refused: off the usual path
            return struct()  # Go decodes null into the zero value: field checks then apply
        if "unknown field" not in str(e):
            raise _invalid_body(e) from None
    except (msgspec.DecodeError, RecursionError):  # RecursionError: absurdly deep nesting
        raise ApiError(400, INVALID_BODY, "invalid_request") from None
    # The values stay raw JSON and are decoded by the same typed decoder once the keys are
    # folded: whatever it refuses (NaN, 1e400, truncation, depth) is refused here too.
    try:
        fields = _decode_fields(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        raise ApiError(400, INVALID_BODY, "invalid_request") from None
    names = _field_names[struct]
    folded = {names[k.lower()]: v for k, v in fields.items() if k.lower() in names}
    rebuilt = b"{" + b",".join(_encode(k) + b":" + v for k, v in folded.items()) + b"}"
    try:
        return decoder.decode(rebuilt)
    except msgspec.ValidationError as e:
        raise _invalid_body(e) from None
    except (msgspec.DecodeError, RecursionError):
        raise ApiError(400, INVALID_BODY, "invalid_request") from None


_decode_fields = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode


def _invalid_body(error: msgspec.ValidationError) -> ApiError:
    """A size limit is named with its field (`notes: at most 1000 characters`); any other
    malformed body keeps the reference's message."""
    limit = limit_exceeded(error)
    if limit is None:
        return ApiError(400, INVALID_BODY, "invalid_request")
    message, param = limit
    return ApiError(400, message, "invalid_request", param)


NUL_REFUSED = "must not contain NUL characters (\\u0000)"


def _refuse_nul(raw: bytes) -> None:
    """400 naming the first field holding a NUL: PostgreSQL text cannot store one. (The
    bytes `\\u0000` may also be an escaped backslash followed by `u0000`: not a NUL.)"""
    try:
        path = _nul_path(msgspec.json.decode(raw), "")
    except (msgspec.DecodeError, RecursionError):
        return  # malformed or absurdly nested: the struct decoder refuses it
    if path is not None:
        raise ApiError(400, f"{path or 'body'}: {NUL_REFUSED}", "invalid_request",
                       path or None)


def _nul_path(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if "\x00" in key:
                return where.replace("\x00", "\\u0000")
            found = _nul_path(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _nul_path(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def path_params(match_info: Any) -> dict[str, str]:
    """The path's ids (`{id}`), held to the rules of the params they fill: they bypass the
    struct's decoding."""
    for name, value in match_info.items():
        if "\x00" in value:
            raise ApiError(400, f"{name}: {NUL_REFUSED}", "invalid_request", name)
        if len(value) > ID_CHARS:
            raise ApiError(400, f"{name}: at most {ID_CHARS} characters", "invalid_request",
                           name)
    return match_info


def decode_query(struct: type, query: Any) -> Any:
    """Query string → `struct`. Integers are parsed leniently, as the reference did: an
    unparsable value falls back to the default."""
    _info(struct)
    ints = _int_fields[struct]
    values: dict[str, Any] = {}
    for name in _field_names[struct].values():
        raw = query.get(name)
        if raw is None:
            continue
        if "\x00" in raw:
            raise ApiError(400, f"{name}: {NUL_REFUSED}", "invalid_request", name)
        if name in ints:
            try:
                number = int(raw)
            except ValueError:
                continue
            if INT64_MIN <= number <= INT64_MAX:  # out of range: unparsable, as in Go
                values[name] = number
        else:
            values[name] = raw
    try:
        return msgspec.convert(values, struct)
    except msgspec.ValidationError as e:
        limit = limit_exceeded(e)
        if limit is None:
            raise ApiError(400, "invalid query parameters", "invalid_request") from None
        raise ApiError(400, limit[0], "invalid_request", limit[1]) from None

