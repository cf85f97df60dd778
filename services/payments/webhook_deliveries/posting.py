"""The sender's HTTP client: one POST at a time per connection, over HTTP/1.1 connections
kept alive per host (a run sends an endpoint's queue one delivery after another, so it
mostly reuses the connection its previous POST left).

Why not aiohttp's client session: a webhook POST needs a sliver of it (no redirects, no
cookies, no proxies, no compression, 256 characters of the answer), and its layers cost
about three times this client's CPU per POST — the largest part of a delivery's cost.

HTTP/1.1 itself (the request's framing, reading answers: 1xx, Content-Length, chunked
with trailers, close-delimited, keep-alive rules, malformed answers) is h11's state
machine, one per connection; this module keeps the connections. The answer is read whole
(up to `DRAIN_MAX` bytes; beyond, the connection is closed rather than kept), its first
`keep` bytes returned; an answer whose connection will be closed anyway is read only that
far. A kept connection the receiver closed meanwhile (its idle timeout) is noticed before
reuse, or by its first read coming back empty, and the POST is made once more on a new
one.

`resolve(host, port)`, when given, chooses the addresses a connection may reach (live
endpoints: public ones only); its OSError is the POST's."""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h11
from yarl import URL

IDLE_S = 15.0  # a connection idle longer is not reused (receivers close theirs about then)
DRAIN_MAX = 1 << 20  # an answer longer than this closes its connection instead
HEADERS_MAX = 1 << 16
READ_SIZE = 1 << 16

Resolve = Callable[[str, int], Awaitable[list[str]]]


class ProtocolError(ValueError):
    """The receiver's answer is not HTTP/1.x."""


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    http: h11.Connection = field(default_factory=lambda: h11.Connection(
        h11.CLIENT, max_incomplete_event_size=HEADERS_MAX))
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
                return await self._exchange(key, conn, request, body, keep)
            except _ClosedBeforeAnswer:
                pass  # closed by the receiver while idle: once more on a new connection
        try:
            return await self._exchange(key, await self._connect(url), request, body, keep)
        except _ClosedBeforeAnswer as closed:
            raise ConnectionResetError("the receiver closed the connection without an"
                                       " answer") from closed

    async def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    # ---- one exchange -----------------------------------------------------------------

    def _request(self, url: URL, body: bytes, headers: dict[str, str]) -> h11.Request:
        fields = [("Host", url.host_port_subcomponent), ("Content-Length", str(len(body))),
                  ("User-Agent", self._user_agent), *headers.items()]
        if url.user is not None:  # credentials in the URL, as a browser (or aiohttp) sends them
            basic = f"{url.user}:{url.password or ''}".encode("latin-1")
            fields.append(("Authorization", "Basic " + base64.b64encode(basic).decode()))
        # Refused before any connection, as a ValueError the attempt records (h11's own
        # check would raise its LocalProtocolError, and only once connected).
        if any("\r" in name or "\n" in name or "\r" in value or "\n" in value
               for name, value in fields):
            raise ValueError("a header holds a line break")
        try:
            return h11.Request(method="POST", target=url.raw_path_qs or "/", headers=fields)
        except h11.LocalProtocolError as e:
            raise ValueError(f"not a valid request: {e}") from None

    async def _exchange(self, key: tuple[str, str, int], conn: _Connection,
                        request: h11.Request, body: bytes, keep: int) -> tuple[int, bytes]:
        http = conn.http
        try:
            conn.writer.write(http.send(request) + http.send(h11.Data(data=body))
                              + http.send(h11.EndOfMessage()))
            status, excerpt = await _answer(conn, keep)
        except h11.RemoteProtocolError as e:
            conn.close()
            raise ProtocolError(f"not an HTTP/1.x answer: {e}") from None
        except BaseException:
            conn.close()
            raise
        if http.our_state is h11.DONE and http.their_state is h11.DONE \
                and not conn.reader.at_eof():
            http.start_next_cycle()
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


async def _answer(conn: _Connection, keep: int) -> tuple[int, bytes]:
    """Read an answer (informational ones skipped): its status and the first `keep` bytes
    of its body; the rest is drained up to DRAIN_MAX (h11 then says whether the connection
    may carry another request), or not at all when the connection will be closed anyway."""
    http, reader = conn.http, conn.reader
    status, parts, size, received = 0, [], 0, False
    while True:
        event = http.next_event()
        kind = type(event)
        if event is h11.NEED_DATA:
            try:
                data = await reader.read(READ_SIZE)
            except (ConnectionResetError, BrokenPipeError) as e:
                if received:
                    raise
                raise _ClosedBeforeAnswer() from e
            if not data and not received:
                raise _ClosedBeforeAnswer()
            received = True
            http.receive_data(data)
        elif kind is h11.Data:
            if size < keep:
                parts.append(event.data[:keep - size])
            size += len(event.data)
            if size > DRAIN_MAX or (size >= keep and http.our_state is h11.MUST_CLOSE):
                break  # not worth reading on: the connection is closed
        elif kind is h11.Response:
            status = event.status_code
        elif kind is h11.EndOfMessage:
            break
        elif kind is not h11.InformationalResponse:  # ConnectionClosed, PAUSED
            raise h11.RemoteProtocolError(f"unexpected {kind.__name__}")
    return status, b"".join(parts)
