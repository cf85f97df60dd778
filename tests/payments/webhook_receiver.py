"""A local webhook receiver, as an organization runs one: it keeps what each of its paths
received (checking the `Commerce-Signature` with the secret it was given) and answers as
told — fail the next N deliveries, or be down until told otherwise."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from contracts.webhooks import SIGNATURE_HEADER, SignatureError, verify


@dataclass
class Path:
    secret: str = ""  # checked when set
    fail_next: int = 0  # this many deliveries answer `fail_status`
    down: bool = False  # every delivery answers `fail_status` until up again
    fail_status: int = 500
    received: list[dict[str, Any]] = field(default_factory=list)  # successful ones
    refused: int = 0  # deliveries answered with a failure

    @property
    def ids(self) -> list[str]:
        return [e["id"] for e in self.received]


class Receiver:
    def __init__(self) -> None:
        self.paths: dict[str, Path] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{name}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, name: str) -> str:
        self.paths.setdefault(name, Path())
        return f"http://127.0.0.1:{self.port}/{name}"

    async def _receive(self, request: web.Request) -> web.Response:
        path = self.paths.setdefault(request.match_info["name"], Path())
        body = await request.read()
        if path.down or path.fail_next > 0:
            path.fail_next = max(path.fail_next - 1, 0)
            path.refused += 1
            return web.Response(status=path.fail_status, text="not now")
        if path.secret:
            try:
                verify(request.headers.get(SIGNATURE_HEADER, ""), body, path.secret)
            except SignatureError as e:
                return web.Response(status=400, text=str(e))
        event = json.loads(body)
        path.received.append({**event, "headers": dict(request.headers)})
        return web.Response(text="ok")
