"""Baselines for the benchmarks: the machine's floor for an HTTP → NATS → reply hop.

    baseline.py responder NATS_URL         a trivial NATS responder (raw nats-py)
    baseline.py server NATS_URL PORT       a bare aiohttp handler doing one request/reply
"""

from __future__ import annotations

import asyncio
import sys

import nats
import uvloop
from aiohttp import web

BALANCE = b'{"user":"bench/alice","currency":"usd","balance":0,"holds":0,"available":0}'


async def responder(url: str) -> None:
    nc = await nats.connect(url)

    async def echo(msg) -> None:
        await msg.respond(b'{"result":' + BALANCE + b"}")

    await nc.subscribe("bench.echo", queue="bench", cb=echo)
    await asyncio.Event().wait()


async def server(url: str, port: int) -> None:
    nc = await nats.connect(url)

    async def echo(request: web.Request) -> web.Response:
        msg = await nc.request("bench.echo", b"{}", timeout=10)
        return web.Response(body=msg.data, content_type="application/json")

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/echo", echo)
    app.router.add_get("/ready", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    if sys.argv[1] == "responder":
        uvloop.run(responder(sys.argv[2]))
    else:
        uvloop.run(server(sys.argv[2], int(sys.argv[3])))
