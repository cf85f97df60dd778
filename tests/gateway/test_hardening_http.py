"""What aiohttp's HTTP parser refuses is answered with the error envelope and never echoes
the request (a `?key=` in it is a credential). Raw sockets: no client would send these."""

from __future__ import annotations

import asyncio
import json

import pytest

SECRET = "sk_test_LEAKME0000000000000000000000"


async def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)  # the connection is closed after
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip()
               for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


LONG = "a" * 9000
GET = f"GET /api/v1/billing/balance?key={SECRET}&user=a"


@pytest.mark.parametrize("name,request_bytes", [
    ("long request line", f"{GET}&pad={LONG} HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("long header", f"{GET} HTTP/1.1\r\nHost: x\r\nX-Pad: {LONG}\r\n\r\n"),
    ("too many headers", f"{GET} HTTP/1.1\r\nHost: x\r\n"
                         + "".join(f"X-H{i}: v\r\n" for i in range(300)) + "\r\n"),
    ("bad content-length", f"POST /api/v1/billing/deposit?key={SECRET} HTTP/1.1\r\n"
                           "Host: x\r\nContent-Length: abc\r\n\r\n{}"),
    ("two content-lengths", f"POST /api/v1/billing/deposit?key={SECRET} HTTP/1.1\r\n"
                            "Host: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"),
    ("bad request line", f"GET /api/v1/billing/balance?key={SECRET} HTTP/1.1 extra\r\n\r\n"),
    ("bad method", f"G\x01T /?key={SECRET} HTTP/1.1\r\nHost: x\r\n\r\n"),
])
async def test_parser_errors_answer_the_envelope(platform, name, request_bytes):
    status, headers, body = await _raw(platform.gateway.port, request_bytes.encode("latin-1"))
    assert 400 <= status < 500, (name, status, body[:300])
    assert headers["content-type"].startswith("application/json"), (name, headers)
    assert SECRET.encode() not in body, name
    error = json.loads(body)["error"]
    assert error["type"] == "api-error" and error["code"] == "invalid_request", error
    assert error["requestId"] == headers["x-request-id"]
    long = name in ("long request line", "long header")
    assert error["message"] == ("request line or header too long" if long
                                else "malformed HTTP request")
    assert headers["cache-control"] == "private, no-store"


async def test_a_good_request_on_the_same_port_still_works(platform):
    status, headers, body = await _raw(
        platform.gateway.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200 and json.loads(body)["status"] == "ok"
