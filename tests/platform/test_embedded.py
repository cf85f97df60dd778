"""Embedded dev servers: real nats-server / PostgreSQL processes on free 127.0.0.1 ports."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import pytest

from services.runtime.embedded import EmbeddedNats, EmbeddedPostgres, port_is_open


@pytest.fixture
def world_readable_tmp() -> Iterator[Path]:
    # As root, PostgreSQL runs as the `pgserver` user, which must be able to traverse
    # the path to its data directory; a fresh 0755 dir directly under /tmp guarantees that.
    path = Path(tempfile.mkdtemp(prefix="test-embedded-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
async def test_embedded_nats_jetstream(world_readable_tmp: Path) -> None:
    server = EmbeddedNats(world_readable_tmp / "nats")
    with server:
        assert server.url.startswith("nats://127.0.0.1:")
        assert server.port not in (4222,)
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            await js.add_stream(name="T", subjects=["t.>"])
            ack = await js.publish("t.a", b"x")
            assert ack.stream == "T"
            assert ack.seq == 1
        finally:
            await nc.close()
        port = server.port
    assert not port_is_open(port)
    assert (world_readable_tmp / "nats" / "nats-server.log").exists()
    assert (world_readable_tmp / "nats" / "jetstream").is_dir()

    # A port that is already taken fails fast with a clear message.
    with EmbeddedNats(world_readable_tmp / "nats2") as first:
        clash = EmbeddedNats(world_readable_tmp / "nats3", port=first.port)
        with pytest.raises(RuntimeError, match="already in use"):
            clash.start()


@pytest.mark.slow
async def test_embedded_postgres(world_readable_tmp: Path) -> None:
    data_dir = world_readable_tmp / "pg"
    server = EmbeddedPostgres(data_dir)
    with server:
        port = server.port
        assert port != 5432
        assert server.url() == f"postgresql://postgres@127.0.0.1:{port}/postgres"

        conn = await asyncpg.connect(server.url())
        try:
            assert await conn.fetchval("select 1") == 1
        finally:
            await conn.close()

        server.create_database("billing_test")
        server.create_database("billing_test")  # idempotent
        conn = await asyncpg.connect(server.url("billing_test"))
        try:
            assert await conn.fetchval("select current_database()") == "billing_test"
        finally:
            await conn.close()

        # A second handle on the same data dir reuses the live postmaster.
        again = EmbeddedPostgres(data_dir)
        again.start()
        assert again.port == port

    assert not port_is_open(port)
    assert not (data_dir / "postmaster.pid").exists()
