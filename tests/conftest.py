"""Shared fixtures: a real NATS server (JetStream, temp dir, free port), a real PostgreSQL
database made fresh for the run, and the whole platform (services + gateway) running in the
test process, reached over HTTP."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import jwt
import nats
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.gateway import store
from services.platform import Platform
from services.runtime import db
from services.runtime.config import Settings
from services.runtime.embedded import EmbeddedNats, EmbeddedPostgres
from services.runtime.encryption import new_key
from services.runtime.outbox import OutboxRelay
from tests import support

SERVICE_TOKENS = ("svc-token-one", "svc-token-two")
IAM_ISSUER = "https://iam.billing.test"
IAM_CLIENT_ID = "billing-tests"
IAM_KID = "test-rsa"
IAM_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEPPER = "test-pepper"
SECRETS_KEY = new_key()  # provider credentials at rest

# One tracer provider for the whole run, recording in memory, so tests can follow a trace
# from the gateway into a service.
SPANS = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(SPANS))
trace.set_tracer_provider(_provider)


def _tempdir(prefix: str) -> Path:
    # Under /tmp and world-traversable: the embedded PostgreSQL runs as another user.
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    directory = _tempdir("billing-nats-")
    server = EmbeddedNats(directory)
    server.start()
    yield server.url
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The configured server (DATABASE_URL), else an embedded one for this run."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    directory = _tempdir("billing-pg-")
    server = EmbeddedPostgres(directory / "data")
    server.start()
    yield server.url("postgres")
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A fresh database for this run, dropped afterwards."""
    name = f"billing_test_{secrets.token_hex(4)}"
    url = db.with_database(postgres_url, name)
    await db.ensure_database(url)
    yield url
    conn = await asyncpg.connect(db.with_database(postgres_url, "postgres"))
    try:
        await conn.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await conn.close()


@pytest.fixture
async def schema(database_url: str) -> AsyncIterator[str]:
    """A schema of its own with the runtime's tables (idempotency keys, outbox)."""
    name = f"runtime_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(database_url)
    try:
        await db.migrate(conn, name, None)
        yield name
        await conn.execute(f"drop schema {name} cascade")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def jwks_file() -> Iterator[Path]:
    directory = _tempdir("billing-jwks-")
    jwk = RSAAlgorithm.to_jwk(IAM_KEY.public_key(), as_dict=True)
    jwk.update(kid=IAM_KID, alg="RS256", use="sig")
    path = directory / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    yield path
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(nats_url: str, database_url: str, jwks_file: Path) -> Settings:
    return Settings.from_env({
        "NATS_URL": nats_url,
        "DATABASE_URL": database_url,
        "BILLING_PORT": "0",
        "BILLING_SERVICE_TOKENS": ",".join(SERVICE_TOKENS),
        "BILLING_KEY_PEPPER": PEPPER,
        "IAM_JWKS_FILE": str(jwks_file),
        "IAM_ISSUER": IAM_ISSUER,
        "IAM_CLIENT_ID": IAM_CLIENT_ID,
        "PLATFORM_ADMIN_ORGS": "platform-admins",
        "BILLING_SECRETS_KEY": SECRETS_KEY,
        # The cycle's scheduler runs at start, then tests run it when they mean to.
        "BILLING_CYCLE_INTERVAL": "3600",
        # The suite's platform, a `billing dev` some tests start and the tests' own pool
        # share one server (100 connections in CI).
        "BILLING_DB_POOL_SIZE": "10",
    })


@pytest.fixture(scope="session")
async def platform(settings: Settings) -> AsyncIterator[Platform]:
    running = Platform(settings)
    await running.start()
    yield running
    await running.stop()


@pytest.fixture(scope="session")
async def http(platform: Platform) -> AsyncIterator[aiohttp.ClientSession]:
    base = f"http://127.0.0.1:{platform.gateway.port}"
    async with aiohttp.ClientSession(base_url=base) as session:
        yield session


class Org:
    """An organization with one key of each kind, made directly in the gateway's tables."""

    def __init__(self, name: str, keys: dict[str, str]):
        self.name = name
        self.keys = keys

    def auth(self, which: str = "sk_test") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[which]}"}


@pytest.fixture(scope="session")
async def make_org(platform: Platform):
    pool = platform.gateway.pool

    async def make(name: str | None = None) -> Org:
        org = await store.provision_org(pool, name or f"org-{secrets.token_hex(4)}")
        keys = {}
        for kind, prefix in (("secret", "sk"), ("publishable", "pk")):
            for livemode in (False, True):
                _, key = await store.create_key(pool, PEPPER, org, livemode=livemode,
                                                kind=kind)
                keys[f"{prefix}_{'live' if livemode else 'test'}"] = key
        return Org(org.name, keys)

    return make


@pytest.fixture
async def org(make_org) -> Org:
    return await make_org()


def iam_token(claims: dict[str, Any] | None = None, *, key: Any = IAM_KEY,
              kid: str = IAM_KID, alg: str = "RS256", **overrides: Any) -> str:
    """A signed IAM token with sensible defaults; `overrides` replace or drop (None) claims."""
    now = int(time.time())
    body = {"iss": IAM_ISSUER, "aud": IAM_CLIENT_ID, "sub": "sub-1", "owner": "acme",
            "name": "alice", "iat": now, "exp": now + 600}
    body.update(claims or {})
    for name, value in overrides.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
async def nc(nats_url: str, platform: Platform) -> AsyncIterator[nats.NATS]:
    """A bus connection of the tests' own, with the platform's services listening."""
    conn = await nats.connect(nats_url)
    yield conn
    await conn.drain()


@pytest.fixture(scope="session")
def ledger(platform: Platform):
    """The running ledger service, even after a test replaced it (its pool, its context)."""
    return support.Running(platform, "ledger")


@pytest.fixture(scope="session")
def payments_service(platform: Platform):
    """The running payments service, even after a test replaced it (its pool, its context)."""
    return support.Running(platform, "payments")


@pytest.fixture(scope="session")
def metering(platform: Platform):
    """The running metering service, even after a test replaced it (its pool, its context)."""
    return support.Running(platform, "metering")


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool of the test's own on the run's database."""
    pool = await db.create_pool(database_url)
    yield pool
    await pool.close()


@pytest.fixture
async def js(nats_url: str):
    """JetStream on a connection of the test's own."""
    conn = await nats.connect(nats_url)
    yield conn.jetstream()
    await conn.close()


@pytest.fixture
async def make_relay(schema: str, pool: asyncpg.Pool, nats_url: str):
    """Outbox relays for the test's schema, all stopped at the end."""
    relays: list[OutboxRelay] = []

    async def make(**options) -> OutboxRelay:
        relay = OutboxRelay(schema, pool, [nats_url], **options)
        await relay.start()
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        await relay.stop()


@pytest.fixture
def event_type() -> str:
    """An event type of the test's own, so its subject carries nothing from other tests."""
    return f"test_{secrets.token_hex(4)}.happened"
