"""The sender's HTTP client against receivers that answer in every way HTTP/1.x allows:
what a delivery's attempt records (status, the answer's start) and that connections are
kept, or not, as the answer says."""

from __future__ import annotations

import asyncio
import errno

import pytest
from yarl import URL

from services.payments.webhook_deliveries import posting
from services.payments.webhook_deliveries.posting import Poster, ProtocolError

BODY = b'{"id":"evt_1","type":"invoice.paid"}'


class Receiver:
    """A raw HTTP receiver: each request (head, body) is kept, and answered with the next
    of `answers` (bytes; None: close the connection without an answer)."""

    def __init__(self, *answers: bytes | None, close_after_each: bool = False) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, bytes]] = []
        self.connections = 0
        self.close_after_each = close_after_each

    async def __aenter__(self) -> URL:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return URL(f"http://127.0.0.1:{port}/hook?x=1")

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.connections += 1
        try:
            while self.answers:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                length = int(head.lower().split("content-length: ")[1].split("\r\n")[0])
                self.requests.append((head, await reader.readexactly(length)))
                answer = self.answers.pop(0)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after_each:
                    break
        except asyncio.IncompleteReadError:
            pass
        writer.close()


async def post(poster: Poster, url: URL) -> tuple[int, bytes]:
    async with asyncio.timeout(5):
        return await poster.post(url, BODY, {"Commerce-Event-Type": "invoice.paid"}, 256)


async def answered(receiver: Receiver, posts: int) -> list[tuple[int, bytes]]:
    """What `posts` POSTs, one after another through one client, get from `receiver`."""
    poster = Poster()
    async with receiver as url:
        answers = [await post(poster, url) for _ in range(posts)]
    await poster.close()
    return answers


async def test_a_kept_connection_carries_the_next_post():
    receiver = Receiver(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                        b"HTTP/1.1 503 Busy\r\nContent-Length: 7\r\n\r\nnot now")
    poster = Poster(user_agent="billing-webhooks/1")
    async with receiver as url:
        assert await post(poster, url) == (200, b"ok")
        assert await post(poster, url) == (503, b"not now")
    await poster.close()
    assert receiver.connections == 1
    head, body = receiver.requests[0]
    assert head.startswith("POST /hook?x=1 HTTP/1.1\r\n") and body == BODY
    assert f"Host: 127.0.0.1:{url.port}\r\n" in head
    assert "User-Agent: billing-webhooks/1\r\n" in head
    assert "Commerce-Event-Type: invoice.paid\r\n" in head


async def test_credentials_in_the_url_are_sent_as_basic_authorization():
    receiver = Receiver(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    poster = Poster()
    async with receiver as url:
        assert await post(poster, url.with_user("hooks").with_password("s3cret")) == (200, b"ok")
    await poster.close()
    assert "Authorization: Basic aG9va3M6czNjcmV0\r\n" in receiver.requests[0][0]


async def test_a_chunked_answer_is_read_whole_and_its_start_kept():
    chunks = b"".join(b"%x\r\n%s\r\n" % (100, b"x" * 100) for _ in range(5))
    receiver = Receiver(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
                        + b"0\r\nX-Trailer: 1\r\n\r\n",
                        b"HTTP/1.1 204 No Content\r\n\r\n")
    assert await answered(receiver, 2) == [(200, b"x" * 256), (204, b"")]
    assert receiver.connections == 1


async def test_an_answer_without_a_length_runs_to_the_close_and_is_not_kept():
    receiver = Receiver(b"HTTP/1.0 200 OK\r\n\r\nthanks", b"HTTP/1.0 200 OK\r\n\r\nagain",
                        close_after_each=True)
    assert await answered(receiver, 2) == [(200, b"thanks"), (200, b"again")]
    assert receiver.connections == 2


async def test_a_connection_the_receiver_closed_meanwhile_is_replaced():
    # The receiver closes after each answer without saying so (its idle timeout): the next
    # POST goes out again on a new connection, and is recorded once, as answered.
    receiver = Receiver(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                        None, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes")
    assert await answered(receiver, 2) == [(200, b"ok"), (200, b"yes")]
    assert receiver.connections == 2


async def test_informational_answers_are_skipped():
    receiver = Receiver(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                        b"HTTP/1.1 202 Accepted\r\nContent-Length: 4\r\n\r\nlater")
    assert await answered(receiver, 1) == [(202, b"late")]


async def test_a_100_continue_is_skipped_and_the_connection_kept():
    receiver = Receiver(b"HTTP/1.1 100 Continue\r\n\r\n"
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                        b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nyes")
    assert await answered(receiver, 2) == [(200, b"ok"), (201, b"yes")]
    assert receiver.connections == 1


async def test_an_upgrade_is_answered_101_and_its_connection_not_reused():
    receiver = Receiver(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\n\r\n\x81\x00",
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", close_after_each=True)
    assert await answered(receiver, 2) == [(101, b""), (200, b"ok")]
    assert receiver.connections == 2


async def test_an_answer_longer_than_the_drain_limit_closes_its_connection():
    size = posting.DRAIN_MAX + 1
    receiver = Receiver(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"y" * size,
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", close_after_each=True)
    assert await answered(receiver, 2) == [(200, b"y" * 256), (200, b"ok")]
    assert receiver.connections == 2


async def test_an_answer_arriving_in_pieces_is_read_whole():
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nthanks"[:-1]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for i in range(0, len(answer), 7):  # the head split mid-line, the body on its own
            writer.write(answer[i:i + 7])
            await writer.drain()
            await asyncio.sleep(0.001)
        await reader.read()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = URL(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook")
    poster = Poster()
    assert await post(poster, url) == (200, b"thank")
    await poster.close()
    server.close()


async def test_bytes_after_the_answer_leave_its_connection_unused():
    receiver = Receiver(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
                        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes", close_after_each=True)
    assert await answered(receiver, 2) == [(200, b"ok"), (200, b"yes")]
    assert receiver.connections == 2


async def test_what_is_not_http_is_an_error():
    poster = Poster()
    async with Receiver(b"SSH-2.0-OpenSSH_9.6\r\n\r\n") as url:
        with pytest.raises(ProtocolError, match="not an HTTP/1.x answer"):
            await post(poster, url)
    async with Receiver(None) as url:  # closed at once, on a new connection
        with pytest.raises(ConnectionResetError):
            await post(poster, url)
    with pytest.raises(ValueError, match="line break"):
        await poster.post(URL("http://127.0.0.1:1/"), BODY, {"X": "a\r\nInjected: 1"}, 256)
    await poster.close()


async def test_a_refused_address_is_never_connected_to():
    async def refuse(host: str, port: int) -> list[str]:
        raise OSError(errno.EACCES, f"{host} resolves to a private address")

    receiver = Receiver(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    poster = Poster(resolve=refuse)
    async with receiver as url:
        with pytest.raises(OSError, match="private address"):
            await post(poster, url)
    assert receiver.connections == 0


async def test_a_connection_the_answer_says_to_close_is_not_reused():
    receiver = Receiver(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
                        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes", close_after_each=True)
    assert await answered(receiver, 2) == [(200, b"ok"), (200, b"yes")]
    assert receiver.connections == 2


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok",  # then closed: the answer ended early
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nok",
])
async def test_a_malformed_answer_is_an_error_not_a_success(answer: bytes):
    poster = Poster()
    async with Receiver(answer, close_after_each=True) as url:
        with pytest.raises(ProtocolError):
            await post(poster, url)
    await poster.close()
