"""Micro-batching: many concurrent requests, one database round trip.

Calls made during the same event-loop turn are collected and answered by one call of
`run(keys)`. At low load a batch holds one call and nothing waits; under load a single
query serves dozens of requests, so the database, not per-request overhead, sets the pace.
`SharedLoads` is the same idea for a cache's misses: one load per key at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import msgspec

from contracts import Reply
from contracts.errors import Failure, internal

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode

K = TypeVar("K")
V = TypeVar("V")


class MicroBatcher(Generic[K, V]):
    """`run(keys)` answers a batch, a result per key in order; a result that is an exception
    is raised to its caller alone (`each_alone_on_failure`).

    `serial`: one batch at a time, the calls made meanwhile forming the next. For writes
    that queue on one hot row whatever the batching (a journal account every payment
    posts to): fewer, larger transactions instead of many small ones waiting on its lock."""

    def __init__(self, run: Callable[[list[K]], Awaitable[Sequence[V | BaseException]]], *,
                 max_batch: int = 500, serial: bool = False):
        self._run = run
        self._max_batch = max_batch
        self._serial = serial
        self._pending: list[tuple[K, asyncio.Future[V]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task] = set()

    async def __call__(self, key: K) -> V:
        return await self.submit([key])[0]

    def submit(self, keys: list[K]) -> list[asyncio.Future[V]]:
        """The futures of the keys' results, for a caller with many keys to await together
        (no task each)."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[V]] = [loop.create_future() for _ in keys]
        self._pending.extend(zip(keys, futures, strict=True))
        if not self._scheduled and keys:
            self._scheduled = True
            loop.call_soon(self._flush)  # after every call already queued for this turn
        return futures

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending and not (self._serial and self._tasks):
            batch = self._pending[:self._max_batch]
            del self._pending[:self._max_batch]
            task = asyncio.create_task(self._answer(batch))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if self._serial:
            self._flush()  # what queued meanwhile

    async def _answer(self, batch: list[tuple[K, asyncio.Future[V]]]) -> None:
        try:
            results = await self._run([key for key, _ in batch])
        except Exception as error:  # every caller of the batch sees the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


def each_alone_on_failure(write: Callable[[list[K]], Awaitable[Sequence[V]]],
                          ) -> Callable[[list[K]], Awaitable[list[V | BaseException]]]:
    """A writer of many items at once that, when the shared write fails, writes each item on
    its own: one bad item cannot fail the others; it gets its own exception.

    The shared write may have failed after its COMMIT (a connection lost while the commit
    is acknowledged): writing an item again must find what that commit did (conditional
    updates, inserts that skip what exists) rather than do it twice."""

    async def write_each_alone_on_failure(items: list[K]) -> list[V | BaseException]:
        try:
            return list(await write(items))
        except Exception:
            if len(items) == 1:
                raise
        results: list[V | BaseException] = []
        for item in items:
            try:
                results.extend(await write([item]))
            except Exception as error:
                results.append(error)
        return results

    return write_each_alone_on_failure


def isolating_failures(write: Callable[[list[K]], Awaitable[list[bytes]]], *, what: str,
                       request_id: Callable[[K], str],
                       committed: Callable[[list[K]], Awaitable[list[bytes | None]]],
                       ) -> Callable[[list[K]], Awaitable[list[bytes]]]:
    """A writer of many requests at once (each answered by an encoded bus reply) that, when
    the shared write fails, writes each request on its own: one bad request (say, a balance
    out of range) cannot take the others down; it gets its own refusal, or a 500.

    The shared write may have failed after its COMMIT (a connection lost while the commit
    is acknowledged), so every item carries an identity chosen before the first attempt
    (transaction or event ids), and `committed(items)` first answers, by that identity, the
    items already stored (their success reply) or None: those are never written again. It
    runs only on this fallback path; a failure of it fails the whole batch (nothing is
    written twice)."""

    async def write_each_alone_on_failure(items: list[K]) -> list[bytes]:
        try:
            return await write(items)
        except Exception as error:
            shared_error = error
        stored = await committed(items)
        if len(items) == 1:
            if stored[0] is not None:
                return [stored[0]]
            raise shared_error
        replies = []
        for item, reply in zip(items, stored, strict=True):
            if reply is not None:
                replies.append(reply)
                continue
            try:
                replies.extend(await write([item]))
            except Failure as failure:
                replies.append(_encode(Reply(error=failure.error)))
            except Exception:
                log.exception("%s failed (request %s)", what, request_id(item))
                replies.append(_encode(Reply(error=internal())))
        return replies

    return write_each_alone_on_failure


class SharedLoads(Generic[K, V]):
    """Loads of which one runs per key at a time: whoever asks for a key while it is being
    loaded (a cache's concurrent misses) shares that load's result, or its error."""

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Future[V]] = {}

    def start(self, key: K, load: Callable[[], Awaitable[V]]) -> asyncio.Future[V]:
        """The key's load under way, started with `load()` when there is none."""
        running = self._running.get(key)
        if running is None:
            running = self._running[key] = asyncio.ensure_future(load())
            running.add_done_callback(lambda done: self._ended(key, done))
        return running

    async def __call__(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The key's value. Shielded: a caller that goes away does not cancel the load
        for the others."""
        return await asyncio.shield(self.start(key, load))

    def _ended(self, key: K, done: asyncio.Future[V]) -> None:
        del self._running[key]
        if not done.cancelled():
            done.exception()  # seen, even when every caller went away meanwhile
