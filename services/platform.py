"""Starting the built services together (`billing dev`) or one alone (`billing serve`)."""

from __future__ import annotations

import asyncio
import signal

from services.runtime.bus import Service
from services.runtime.config import Settings
from services.specs import specs


class Platform:
    """Every built service plus the gateway, in one process (development and tests)."""

    def __init__(self, settings: Settings):
        from services.gateway.app import Gateway

        self.services = [Service(spec, settings) for spec in specs()]
        self.gateway = Gateway(settings)

    async def start(self) -> None:
        for service in self.services:
            await service.start()
        await self.gateway.start()

    async def stop(self) -> None:
        await self.gateway.stop()
        for service in reversed(self.services):
            await service.stop()


async def until_signalled() -> None:
    """Wait for Ctrl-C or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
