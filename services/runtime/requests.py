"""Bus requests, multiplexed over one reply subscription (the gateway's calls, a service's
`ask`).

nats-py's `request` makes a NUID plus random token per call and a `wait_for` per call; at
thousands of requests per second that is a visible share of the gateway's CPU. Here a
request's reply subject is the connection's inbox prefix plus a counter, one wildcard
subscription delivers every reply, and timeouts are plain `call_later` handles.
"""

from __future__ import annotations

import asyncio
import itertools

import nats
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

_STATUS = "Status"
_NO_RESPONDERS = "503"


class Requester:
    def __init__(self, nc: nats.NATS):
        self._nc = nc
        self._prefix = nc.new_inbox() + "."
        self._pending: dict[str, asyncio.Future[Msg]] = {}
        self._ids = itertools.count()

    async def start(self) -> None:
        await self._nc.subscribe(self._prefix + "*", cb=self._on_reply)

    async def request(self, subject: str, payload: bytes, *, timeout: float,
                      headers: dict[str, str] | None = None) -> Msg:
        """The reply; NoRespondersError when nobody listens, TimeoutError after `timeout`."""
        token = str(next(self._ids))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._pending[token] = future
        expiry = loop.call_later(timeout, _expire, future)
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token,
                                   headers=headers)
            msg = await future
        finally:
            expiry.cancel()
            self._pending.pop(token, None)
        if msg.headers and msg.headers.get(_STATUS) == _NO_RESPONDERS and not msg.data:
            raise NoRespondersError
        return msg

    async def _on_reply(self, msg: Msg) -> None:
        future = self._pending.get(msg.subject[len(self._prefix):])
        if future is not None and not future.done():
            future.set_result(msg)


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(NatsTimeout())
