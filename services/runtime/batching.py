"""Micro-batching: many concurrent requests, one database round trip.

Calls made during the same event-loop turn are collected and answered by one call of
`run(keys)`. At low load a batch holds one call and nothing waits; under load a single
query serves dozens of requests, so the database, not per-request overhead, sets the pace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class MicroBatcher(Generic[K, V]):
    def __init__(self, run: Callable[[list[K]], Awaitable[Sequence[V]]], *,
                 max_batch: int = 500):
        self._run = run
        self._max_batch = max_batch
        self._pending: list[tuple[K, asyncio.Future[V]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task] = set()

    async def __call__(self, key: K) -> V:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V] = loop.create_future()
        self._pending.append((key, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)  # after every call already queued for this turn
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self._max_batch):
            task = asyncio.create_task(self._answer(pending[start:start + self._max_batch]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, batch: list[tuple[K, asyncio.Future[V]]]) -> None:
        try:
            results = await self._run([key for key, _ in batch])
        except Exception as error:  # every caller of the batch sees the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
