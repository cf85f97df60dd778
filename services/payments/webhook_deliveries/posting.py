"""The sender's HTTP client: one POST at a time per connection, over HTTP/1.1 connections
kept alive per host (a run sends an endpoint's queue one delivery after another, so it
mostly reuses the connection its previous POST left).

Why not aiohttp's client session: a webhook POST needs a sliver of it (no redirects, no
cookies, no proxies, no compression, 256 characters of the answer), and its layers cost
about three times this client's CPU per POST — the largest part of a delivery's cost.

The answer is read whole (up to `DRAIN_MAX` bytes; beyond, or without a length, the
connection is closed rather than kept), its first `keep` bytes returned. A kept
connection the receiver closed meanwhile (its idle timeout) is noticed before reuse, or
by its first read coming back empty, and the POST is made once more on a new one.

`resolve(host, port)`, when given, chooses the addresses a connection may reach (live
endpoints: public ones only); its OSError is the POST's."""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from yarl import URL

IDLE_S = 15.0  # a connection idle longer is not reused (receivers close theirs about then)
DRAIN_MAX = 1 << 20  # an answer longer than this closes its connection instead
HEADERS_MAX = 1 << 16

Resolve = Callable[[str, int], Awaitable[list[str]]]


class ProtocolError(ValueError):
    """The receiver's answer is not HTTP/1.x."""


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = field(default_factory=time.monotonic)

    def usable(self) -> bool:
        return (not self.writer.is_closing() and not self.reader.at_eof()
                and time.monotonic() - self.idle_since < IDLE_S)

    def close(self) -> None:
        self.writer.close()


class Poster:
    def __init__(self, *, resolve: Resolve | None = None, idle_max: int = 64,
                 user_agent: str = "") -> None:
        self._resolve = resolve
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._idle_max = idle_max
        self._user_agent = user_agent
        self._ssl: ssl.SSLContext | None = None

    async def post(self, url: URL, body: bytes, headers: dict[str, str], keep: int,
                   ) -> tuple[int, bytes]:
        """POST `body` to `url`; the answer's status and its first `keep` bytes. Raises
        OSError, ProtocolError, or TimeoutError as the caller's `asyncio.timeout` says."""
        if url.scheme not in ("http", "https") or not url.raw_host:
            raise ValueError(f"not an http(s) URL: {url}")
        key = (url.scheme, url.raw_host, url.port or 0)
        request = self._request(url, body, headers)
        conn = self._reused(key)
        if conn is not None:
            try:
                return await self._exchange(key, conn, request, keep)
            except _ClosedBeforeAnswer:
                pass  # closed by the receiver while idle: once more on a new connection
        try:
            return await self._exchange(key, await self._connect(url), request, keep)
        except _ClosedBeforeAnswer as closed:
            raise ConnectionResetError("the receiver closed the connection without an"
                                       " answer") from closed

    async def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    # ---- one exchange -----------------------------------------------------------------

    def _request(self, url: URL, body: bytes, headers: dict[str, str]) -> bytes:
        lines = [f"POST {url.raw_path_qs or '/'} HTTP/1.1",
                 f"Host: {url.host_port_subcomponent}", f"Content-Length: {len(body)}",
                 f"User-Agent: {self._user_agent}",
                 *(f"{name}: {value}" for name, value in headers.items())]
        if url.user is not None:  # credentials in the URL, as a browser (or aiohttp) sends them
            basic = f"{url.user}:{url.password or ''}".encode("latin-1")
            lines.append("Authorization: Basic " + base64.b64encode(basic).decode())
        if any("\r" in line or "\n" in line for line in lines):
            raise ValueError("a header holds a line break")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def _exchange(self, key: tuple[str, str, int], conn: _Connection, request: bytes,
                        keep: int) -> tuple[int, bytes]:
        try:
            conn.writer.write(request)
            status, excerpt, reusable = await _answer(conn.reader, keep)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            conn.close()
            raise ProtocolError("the answer ended early or a line of it is too long") from None
        except BaseException:
            conn.close()
            raise
        if reusable:
            self._release(key, conn)
        else:
            conn.close()
        return status, excerpt

    # ---- connections ------------------------------------------------------------------

    def _reused(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not idle:
                del self._idle[key]
            if conn.usable():
                return conn
            conn.close()
        return None

    def _release(self, key: tuple[str, str, int], conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self._idle.setdefault(key, []).append(conn)
        if sum(map(len, self._idle.values())) > self._idle_max:
            self._sweep()

    def _sweep(self) -> None:
        """Close what cannot be reused, then the oldest idle connections over the cap."""
        conns = sorted(((c.idle_since, k, c) for k, idle in self._idle.items()
                        for c in idle), key=lambda t: t[0])
        keep = {id(c) for _, _, c in conns[-self._idle_max:] if c.usable()}
        for _, key, conn in conns:
            if id(conn) not in keep:
                self._idle[key].remove(conn)
                conn.close()
        self._idle = {k: v for k, v in self._idle.items() if v}

    async def _connect(self, url: URL) -> _Connection:
        host, port = url.raw_host, url.port
        tls = None
        if url.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        addresses = [host] if self._resolve is None else await self._resolve(host, port)
        error: OSError | None = None
        for address in addresses:
            try:
                reader, writer = await asyncio.open_connection(
                    address, port, ssl=tls, server_hostname=host if tls else None,
                    limit=HEADERS_MAX)
                return _Connection(reader, writer)
            except OSError as e:
                error = e
        raise error or OSError(f"{host} has no address")


class _ClosedBeforeAnswer(Exception):
    pass


async def _answer(reader: asyncio.StreamReader, keep: int) -> tuple[int, bytes, bool]:
    """Read an answer: its status, the first `keep` bytes of its body, and whether its
    connection may carry another request. Informational (1xx) answers are skipped."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                raise _ClosedBeforeAnswer() from None
            raise ProtocolError("the answer ended within its headers") from None
        except (ConnectionResetError, BrokenPipeError) as e:
            raise _ClosedBeforeAnswer() from e
        except asyncio.LimitOverrunError:
            raise ProtocolError("the answer's headers are too long") from None
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise ProtocolError(f"not an HTTP/1.x answer: {status_line[:60]!r}")
        status = int(rest[:3])
        if status >= 200 or status == 101:
            break
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    reusable = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if status in (101, 204, 304):
        return status, b"", reusable and status != 101
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body, complete = await _chunked(reader)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise ProtocolError("the answer's Content-Length is not a number") from None
        if length > DRAIN_MAX:
            return status, await reader.read(keep), False
        body, complete = await reader.readexactly(length), True
    else:  # the body runs until the receiver closes the connection
        body, complete = await reader.read(keep), False
    return status, body[:keep], reusable and complete


async def _chunked(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """A chunked body, whole; or its start and False when it is longer than DRAIN_MAX."""
    parts, size = [], 0
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            n = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError("a malformed chunk size") from None
        if n == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return b"".join(parts), True
        size += n
        if size > DRAIN_MAX:
            return b"".join(parts), False
        parts.append(await reader.readexactly(n))
        await reader.readexactly(2)
