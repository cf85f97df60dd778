"""The sender's HTTP client: one POST at a time per connection, over HTTP/1.1 connections
kept alive per host (a run sends an endpoint's queue one delivery after another, so it
mostly reuses the connection its previous POST left).

Why not aiohttp's client session: a webhook POST needs a sliver of it (no redirects, no
cookies, no proxies, no compression, 256 characters of the answer), and its layers cost
about three times this client's CPU per POST — the largest part of a delivery's cost.

The answer is framed by httptools (llhttp, the parser uvicorn uses) and read whole (up to
`DRAIN_MAX` bytes; beyond, or without a length, the connection is closed rather than
kept), its first `keep` bytes returned. A kept
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

import httptools
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
    answer: _Answer = field(default_factory=lambda: _Answer())  # one parser per connection

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
            status, excerpt, reusable = await _answer(conn.reader, conn.answer, keep)
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


class _Answer:
    """What httptools reports of the answer being read on a connection: informational
    (1xx) answers are skipped, the final one's first `keep` bytes kept. Its parser carries
    on to the next answer of a kept connection (making one costs as much as parsing)."""

    __slots__ = ("parser", "keep", "parts", "kept", "size", "framed", "headed", "complete",
                 "reusable")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)

    def expect(self, keep: int) -> None:
        self.keep = keep
        self._start()
        self.complete = self.reusable = False

    def _start(self) -> None:
        self.parts: list[bytes] = []
        self.kept = self.size = 0
        self.framed = self.headed = False  # a Content-Length or chunked; the head read

    def on_message_begin(self) -> None:
        if self.complete:  # bytes after the answer, unasked: the connection is not trusted
            self.reusable = False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length" or name == b"transfer-encoding":
            self.framed = True

    def on_headers_complete(self) -> None:
        self.headed = True

    def on_body(self, data: bytes) -> None:
        self.size += len(data)
        if self.kept < self.keep:
            part = data[:self.keep - self.kept]
            self.parts.append(part)
            self.kept += len(part)

    def on_message_complete(self) -> None:
        if self.complete:
            return
        status = self.parser.get_status_code()
        if status < 200 and status != 101:
            self._start()  # the final answer follows on the same connection
            return
        self.complete = True
        # read here: llhttp forgets the answer's Connection once it is complete
        self.reusable = self.parser.should_keep_alive()

    def excerpt(self) -> bytes:
        return b"".join(self.parts)


async def _answer(reader: asyncio.StreamReader, answer: _Answer, keep: int,
                  ) -> tuple[int, bytes, bool]:
    """Read an answer: its status, the first `keep` bytes of its body, and whether its
    connection may carry another request."""
    answer.expect(keep)
    parser = answer.parser
    received = 0
    while not answer.complete:
        try:
            data = await reader.read(65536)
        except (ConnectionResetError, BrokenPipeError) as e:
            if not received:
                raise _ClosedBeforeAnswer() from e
            raise
        if not data:
            if not received:
                raise _ClosedBeforeAnswer()
            if answer.headed and not answer.framed:  # the body runs until the close
                return parser.get_status_code(), answer.excerpt(), False
            raise ProtocolError("the answer ended early")
        received += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            return parser.get_status_code(), b"", False
        except httptools.HttpParserError as e:
            if not answer.complete:
                raise ProtocolError(f"not an HTTP/1.x answer: {e}") from None
            answer.reusable = False  # bytes after the answer that are not one
        if not answer.headed and received > HEADERS_MAX:
            raise ProtocolError("the answer's headers are too long")
        if answer.size > DRAIN_MAX:
            return parser.get_status_code(), answer.excerpt(), False
    return parser.get_status_code(), answer.excerpt(), answer.reusable
