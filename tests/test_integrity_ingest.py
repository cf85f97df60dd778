"""Issue 8, items 6–8: the asynchronous meter-event path (`Prefer: respond-async`).

6. What PostgreSQL would refuse is refused up front (400, both ways in); event partitions
   cover the whole accepted window whatever the retention; a batch that cannot be stored
   goes to the dead letters with its error, and `billing metering dead-letters` lists,
   replays and discards them.
7. A poison batch is given up after bounded attempts (at once when the data is at fault)
   and does not hold up the others.
8. One rule for `Idempotency-Key` whichever way a request comes in; keyless requests are
   never merged by body.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import asyncpg
import pytest

from services.metering import domain, service

API = "/api/v1/billing"
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture
def metering(platform):
    return next(s for s in platform.services if s.name == "metering")


async def _post(http, org, body, headers=None, *, raw: bytes | None = None):
    kwargs = {"data": raw} if raw is not None else {"json": body}
    async with http.post(API + "/meter-events", headers={**org.auth(), **(headers or {})},
                         **kwargs) as r:
        return r.status, await r.json(), r.headers


async def _meter(http, org, event_name="calls"):
    async with http.post(API + "/meters", json={"name": event_name, "eventName": event_name},
                         headers=org.auth()) as r:
        assert r.status == 201, await r.text()
        return (await r.json())["id"]


async def _stored(metering, meter_id) -> list[asyncpg.Record]:
    return await metering.pool.fetch(
        "select id, value from metering.events where meter_id = $1 order by ingest_seq",
        meter_id)


async def _eventually_stored(metering, meter_id, count, timeout=5.0) -> list[asyncpg.Record]:
    deadline = time.monotonic() + timeout
    while True:
        rows = await _stored(metering, meter_id)
        if len(rows) >= count or time.monotonic() > deadline:
            await asyncio.sleep(0.3)  # and nothing more comes
            return await _stored(metering, meter_id)
        await asyncio.sleep(0.05)


def _ev(meter_id, value=1, user="alice", **extra):
    return {"meterId": meter_id, "userId": user, "value": value, **extra}


# ---- item 6 (a), item 7: refused up front --------------------------------------------------

LONG = "x" * 256
FIELD_CASES = [
    ({"userId": "al\u0000ice"}, "userId of event 1 contains a NUL character", "userId"),
    ({"idempotency": "k\u0000"}, "idempotency of event 1 contains a NUL character",
     "idempotency"),
    ({"dimensions": {"model": {"deep": ["ok", "g\u0000pt"]}}},
     "dimensions of event 1 contain a NUL character", "dimensions"),
    ({"dimensions": {"mo\u0000del": 1}}, "dimensions of event 1 contain a NUL character",
     "dimensions"),
    ({"userId": secrets.token_urlsafe(2100)}, "userId of event 1 exceeds 255 characters",
     "userId"),
    ({"idempotency": LONG}, "idempotency of event 1 exceeds 255 characters", "idempotency"),
    ({"meterId": LONG}, "meterId of event 1 exceeds 255 characters", "meterId"),
    ({"dimensions": {"blob": "y" * 5000}}, "dimensions of event 1 exceed 4096 bytes as JSON",
     "dimensions"),
]


@pytest.mark.parametrize("way", ["sync", "async"])
@pytest.mark.parametrize("bad, message, param", FIELD_CASES)
async def test_what_postgres_would_refuse_is_a_400_both_ways_in(http, org, metering, way,
                                                                bad, message, param):
    meter_id = await _meter(http, org)
    events = [_ev(meter_id, 5), {**_ev(meter_id, 7), **bad}]
    status, reply, _ = await _post(http, org, {"events": events},
                                   ASYNC if way == "async" else None)
    assert status == 400, reply
    assert (reply["error"]["message"], reply["error"]["param"]) == (message, param)
    await asyncio.sleep(0.2)
    assert await _stored(metering, meter_id) == []  # not even the valid event


async def test_a_backslash_before_u0000_is_not_a_nul(http, org, metering):
    meter_id = await _meter(http, org)
    status, _, _ = await _post(http, org, {"events": [
        _ev(meter_id, dimensions={"path": "C:\\u0000\\x"})]}, ASYNC)
    assert status == 202
    assert len(await _eventually_stored(metering, meter_id, 1)) == 1


# ---- item 6 (b): partitions for the whole window, whatever the retention ------------------


def test_retention_never_reaches_into_the_accepted_window():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for hours in range(0, 366 * 24, 7):
        at = start + timedelta(hours=hours)
        for months in (1, 2, 3):
            cutoff = domain.retention_cutoff(at, months)
            assert cutoff <= domain.start_of_month(at - domain.BACKDATE), (at, months)
            assert cutoff >= domain.start_of_month(at - timedelta(days=31 * months + 41))


async def test_upkeep_with_one_month_retention_keeps_the_window(metering, monkeypatch):
    # On the 3rd of a month the window reaches back into the month before last, which a
    # retention of one month would drop. Upkeep runs then, hourly.
    real = datetime.now(UTC)
    third = real.replace(day=3, hour=10, minute=0, second=0, microsecond=0)
    oldest_accepted = domain.start_of_month(third - domain.BACKDATE)
    monkeypatch.setattr(service, "now", lambda: third)
    one_month = SimpleNamespace(pool=metering.pool,
                                settings=SimpleNamespace(env={"METERING_RETENTION_MONTHS": "1"}))
    try:
        await service.upkeep(one_month)
        names = {r["relname"] for r in await metering.pool.fetch(
            "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid"
            " where i.inhparent = 'metering.events'::regclass")}
        assert f"events_{oldest_accepted:%Y_%m}" in names
        # Older months do go.
        older = domain.start_of_month(oldest_accepted - timedelta(days=1))
        assert f"events_{older:%Y_%m}" not in names
    finally:
        monkeypatch.undo()
        await service.upkeep(metering)
