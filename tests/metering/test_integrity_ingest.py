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
import msgspec
import pytest

from contracts import meter_events
from contracts.errors import Failure
from contracts.metering import AcceptedBatch, AcceptedEvent, MeterEventInput
from services import cli
from services.gateway import store as gateway_store
from services.metering import consumer, dead_letters, domain, store
from services.metering import handlers as service
from services.runtime.meter_stream import ensure_dead_letter_stream, publish_batch
from tests.support import ASYNC, ev, eventually, make_meter, post


async def _post(http, org, body, headers=None, *, raw: bytes | None = None):
    return await post(http, "/meter-events", body, {**org.auth(), **(headers or {})}, raw=raw)


async def _stored(metering, meter_id) -> list[asyncpg.Record]:
    return await metering.pool.fetch(
        "select id, value from metering.events where meter_id = $1 order by ingest_seq",
        meter_id)


async def _eventually_stored(metering, meter_id, count, timeout=5.0) -> list[asyncpg.Record]:
    await eventually(lambda: _stored(metering, meter_id), lambda rows: len(rows) >= count,
                     timeout)
    await asyncio.sleep(0.3)  # and nothing more comes
    return await _stored(metering, meter_id)


# ---- item 6 (a), item 7: refused up front --------------------------------------------------

LONG = "x" * 256
NUL = "must not contain NUL characters (\\u0000)"
# NUL anywhere in a body is refused by the gateway's decoding, naming the field's path;
# lengths by the batch rules both ways in share.
FIELD_CASES = [
    ({"userId": "al\u0000ice"}, f"events[1].userId: {NUL}", "events[1].userId"),
    ({"idempotency": "k\u0000"}, f"events[1].idempotency: {NUL}", "events[1].idempotency"),
    ({"dimensions": {"model": {"deep": ["ok", "g\u0000pt"]}}},
     f"events[1].dimensions.model.deep[1]: {NUL}", "events[1].dimensions.model.deep[1]"),
    ({"dimensions": {"mo\u0000del": 1}}, f"events[1].dimensions.mo\\u0000del: {NUL}",
     "events[1].dimensions.mo\\u0000del"),
    ({"userId": secrets.token_urlsafe(2100)}, "userId of event 1 exceeds 255 characters",
     "userId"),
    ({"idempotency": LONG}, "idempotency of event 1 exceeds 255 characters", "idempotency"),
    ({"meterId": LONG}, "meterId of event 1 exceeds 255 characters", "meterId"),
    ({"dimensions": {"blob": "y" * 5000}}, "dimensions of event 1 exceed 4096 bytes as JSON",
     "dimensions"),
]


@pytest.mark.parametrize("bad, message, param", [
    ({"userId": "al\u0000ice"}, "userId of event 1 contains a NUL character", "userId"),
    ({"idempotency": "k\u0000"}, "idempotency of event 1 contains a NUL character",
     "idempotency"),
    ({"dimensions": {"model": {"deep": ["ok", "g\u0000pt"]}}},
     "dimensions of event 1 contain a NUL character", "dimensions"),
    ({"dimensions": {"mo\u0000del": 1}}, "dimensions of event 1 contain a NUL character",
     "dimensions"),
])
def test_batch_rules_refuse_nul_for_bus_callers(bad, message, param):
    """A service sending events over the bus never passes the gateway's NUL check."""
    events = [MeterEventInput(meterId="mtr_1", userId="alice", value=5),
              msgspec.convert({"meterId": "mtr_1", "userId": "alice", "value": 7, **bad},
                              MeterEventInput)]
    with pytest.raises(Failure) as refused:
        meter_events.accept_batch(events, datetime.now(UTC), meter_events.fresh_id_base())
    assert (refused.value.error.message, refused.value.error.param) == (message, param)


@pytest.mark.parametrize("way", ["sync", "async"])
@pytest.mark.parametrize("bad, message, param", FIELD_CASES)
async def test_what_postgres_would_refuse_is_a_400_both_ways_in(http, org, metering, way,
                                                                bad, message, param):
    meter_id = await make_meter(http, org, "calls")
    events = [ev(meter_id, 5), {**ev(meter_id, 7), **bad}]
    status, reply, _ = await _post(http, org, {"events": events},
                                   ASYNC if way == "async" else None)
    assert status == 400, reply
    assert (reply["error"]["message"], reply["error"]["param"]) == (message, param)
    await asyncio.sleep(0.2)
    assert await _stored(metering, meter_id) == []  # not even the valid event


async def test_a_backslash_before_u0000_is_not_a_nul(http, org, metering):
    meter_id = await make_meter(http, org, "calls")
    status, _, _ = await _post(http, org, {"events": [
        ev(meter_id, dimensions={"path": "C:\\u0000\\x"})]}, ASYNC)
    assert status == 202
    assert len(await _eventually_stored(metering, meter_id, 1)) == 1


# ---- item 6 (b): partitions for the whole window, whatever the retention ------------------


def test_retention_never_reaches_into_the_accepted_window():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for hours in range(0, 366 * 24, 7):
        at = start + timedelta(hours=hours)
        for months in (1, 2, 3):
            cutoff = domain.retention_cutoff(at, months)
            assert cutoff <= domain.start_of_month(at - meter_events.BACKDATE), (at, months)
            assert cutoff >= domain.start_of_month(at - timedelta(days=31 * months + 41))


async def test_upkeep_with_one_month_retention_keeps_the_window(metering, monkeypatch):
    # On the 3rd of a month the window reaches back into the month before last, which a
    # retention of one month would drop. Upkeep runs then, hourly.
    real = datetime.now(UTC)
    third = real.replace(day=3, hour=10, minute=0, second=0, microsecond=0)
    oldest_accepted = domain.start_of_month(third - meter_events.BACKDATE)
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


# ---- item 6 (c): nothing accepted is dropped; the dead letters ---------------------------


@pytest.fixture
async def js(js):
    """The shared JetStream fixture, with the dead-letter stream made."""
    await ensure_dead_letter_stream(js)
    return js


async def _dead_letter(js, event_id: str, timeout=5.0) -> dead_letters.DeadLetter:
    """The dead letter of the batch holding this event, once there."""
    deadline = time.monotonic() + timeout
    while True:
        found = [d for d in await dead_letters.listing(js) if f'"{event_id}"'.encode() in d.data]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"event {event_id} not in the dead letters"
        await asyncio.sleep(0.1)


async def _dead_letters_cli(monkeypatch, nats_url, database_url, *argv: str):
    monkeypatch.setenv("NATS_URL", nats_url)
    monkeypatch.setenv("DATABASE_URL", database_url)
    await asyncio.to_thread(cli.main, ["metering", "dead-letters", *argv])


async def test_a_batch_for_a_month_without_partition_goes_to_the_dead_letters(
        http, org, metering, js, nats_url, database_url, monkeypatch, capsys):
    meter_id = await make_meter(http, org, "calls")
    when = datetime.now(UTC) - timedelta(days=34)  # inside the window, never this month
    month = domain.start_of_month(when)
    partition = f"events_{month:%Y_%m}"
    await metering.pool.execute(f"drop table metering.{partition}")
    try:
        status, body, _ = await _post(http, org, {"events": [
            ev(meter_id, 4, timestamp=when.isoformat()), ev(meter_id, 6)]}, ASYNC)
        assert status == 202
        letter = await _dead_letter(js, body["events"][0]["id"])
        assert "CheckViolationError" in letter.error and "partition" in letter.error
        assert letter.deliveries == 1 and letter.events == 2
        assert await _stored(metering, meter_id) == []
    finally:
        await store.ensure_partitions(metering.pool, month, 1)

    # Operators see it ...
    await _dead_letters_cli(monkeypatch, nats_url, database_url, "list")
    listed = capsys.readouterr().out
    line = next(x for x in listed.splitlines() if x.startswith(f"seq={letter.seq} "))
    assert f"batch={letter.batch_id} " in line and "events=2" in line and "partition" in line
    # ... and, the partition back, replay it: stored once, even when replayed again.
    await _dead_letters_cli(monkeypatch, nats_url, database_url, "replay", "--seq",
                            str(letter.seq))
    assert "1 batch(es) replayed" in capsys.readouterr().out
    rows = await _eventually_stored(metering, meter_id, 2)
    assert sorted(r["value"] for r in rows) == [4, 6]
    assert all(d.seq != letter.seq for d in await dead_letters.listing(js))
    with pytest.raises(SystemExit):  # gone from the dead letters
        await _dead_letters_cli(monkeypatch, nats_url, database_url, "replay", "--seq",
                                str(letter.seq))


async def test_discarding_a_dead_letter(http, org, metering, js, platform, nats_url,
                                        database_url, monkeypatch, capsys):
    meter_id = await make_meter(http, org, "calls")
    letter = await _dead_letter(js, await _publish_poison(js, platform, org, meter_id))
    await _dead_letters_cli(monkeypatch, nats_url, database_url, "discard", "--seq",
                            str(letter.seq))
    assert "1 batch(es) discarded" in capsys.readouterr().out
    assert all(d.seq != letter.seq for d in await dead_letters.listing(js))
    with pytest.raises(SystemExit):  # replay and discard say which
        await _dead_letters_cli(monkeypatch, nats_url, database_url, "discard")


# ---- item 7: poison batches are given up, and hold nothing up ----------------------------


async def _publish_poison(js, platform, org, meter_id) -> str:
    """A batch the gateway would refuse (a userId too long for the index), published
    straight to the stream; returns its event's id."""
    org_id = (await gateway_store.provision_org(platform.gateway.pool, org.name)).id
    batch_id = meter_events.fresh_id_base()
    event = AcceptedEvent(batch_id + "00", meter_id, secrets.token_urlsafe(2100), 1,
                          meter_events.to_us(datetime.now(UTC)), "", None)
    await publish_batch(js, AcceptedBatch(batch_id, org_id, False, [event]))
    return event.id


async def test_a_poison_batch_is_given_up_at_once_and_holds_nothing_up(http, org, metering,
                                                                       js, platform):
    meter_id = await make_meter(http, org, "calls")
    started = time.monotonic()
    poison = await _publish_poison(js, platform, org, meter_id)
    status, _, _ = await _post(http, org, {"events": [ev(meter_id, 3)]}, ASYNC)
    assert status == 202
    letter = await _dead_letter(js, poison)
    assert letter.deliveries == 1  # the data is at fault: no retry can help
    assert "ProgramLimitExceededError" in letter.error
    assert [r["value"] for r in await _eventually_stored(metering, meter_id, 1)] == [3]
    assert time.monotonic() - started < 5


def test_transient_failures_are_retried_with_growing_delays_then_given_up():
    transient = [OSError("connection refused"), asyncpg.CannotConnectNowError("starting"),
                 asyncpg.DeadlockDetectedError("deadlock"), TimeoutError()]
    for error in transient:
        assert not consumer.gives_up(error, 1, consumer.MAX_DELIVERIES)
        assert not consumer.gives_up(error, consumer.MAX_DELIVERIES - 1,
                                     consumer.MAX_DELIVERIES)
        assert consumer.gives_up(error, consumer.MAX_DELIVERIES, consumer.MAX_DELIVERIES)
    never = [asyncpg.CheckViolationError("no partition"),
             asyncpg.ProgramLimitExceededError("index row size exceeds"),
             asyncpg.UntranslatableCharacterError("\\u0000"),
             asyncpg.NotNullViolationError("null org"), UnicodeDecodeError("utf-8", b"", 0, 1, "")]
    for error in never:
        assert consumer.gives_up(error, 1, consumer.MAX_DELIVERIES)
    delays = [consumer.retry_delay(n) for n in range(1, consumer.MAX_DELIVERIES)]
    assert delays[:3] == [1, 2, 4] and max(delays) == consumer.MAX_RETRY_DELAY_S
    assert sum(delays) > 45 * 60  # a database outage of most of an hour dead-letters nothing


# ---- item 8: one rule for Idempotency-Key, both ways in ----------------------------------


async def test_one_key_sync_then_async_is_one_request(http, org, metering):
    meter_id = await make_meter(http, org, "calls")
    events = {"events": [ev(meter_id, 5)]}
    key = {"Idempotency-Key": "sync-first"}
    status, first, _ = await _post(http, org, events, key)
    assert status == 201
    status, again, headers = await _post(http, org, events, {**key, **ASYNC})
    assert (status, again, headers["Idempotent-Replayed"]) == (201, first, "true")
    assert "Preference-Applied" not in headers
    assert len(await _eventually_stored(metering, meter_id, 2, timeout=0.5)) == 1


async def test_one_key_async_then_sync_is_one_request(http, org, metering):
    meter_id = await make_meter(http, org, "calls")
    events = {"events": [ev(meter_id, 5), ev(meter_id, 6)]}
    key = {"Idempotency-Key": "async-first"}
    status, first, headers = await _post(http, org, events, {**key, **ASYNC})
    assert (status, headers["Preference-Applied"]) == (202, "respond-async")
    assert {e["status"] for e in first["events"]} == {"accepted"}
    assert len(await _eventually_stored(metering, meter_id, 2)) == 2
    status, again, headers = await _post(http, org, events, key)
    assert (status, again, headers["Idempotent-Replayed"]) == (202, first, "true")
    status, again, _ = await _post(http, org, events, {**key, **ASYNC})
    assert (status, again) == (202, first)
    rows = await _eventually_stored(metering, meter_id, 3, timeout=0.5)
    assert [r["id"] for r in rows] == [e["id"] for e in first["events"]]


async def test_async_same_key_other_body_is_refused(http, org, metering):
    meter_id = await make_meter(http, org, "calls")
    key = {"Idempotency-Key": "changed", **ASYNC}
    status, _, _ = await _post(http, org, {"events": [ev(meter_id, 5)]}, key)
    assert status == 202
    status, reply, _ = await _post(http, org, {"events": [ev(meter_id, 50)]}, key)
    assert (status, reply["error"]["message"]) == (
        422, "idempotency key reused with different parameters")
    rows = await _eventually_stored(metering, meter_id, 2, timeout=1.0)
    assert [r["value"] for r in rows] == [5]


async def test_async_retry_serialised_differently_is_the_same_request(http, org, metering):
    meter_id = await make_meter(http, org, "calls")
    key = {"Idempotency-Key": "reserialised", **ASYNC, "Content-Type": "application/json"}
    first_body = msgspec.json.encode({"events": [
        {"meterId": meter_id, "userId": "alice", "value": 5,
         "dimensions": {"model": "m1", "region": "eu"}}]})
    second_body = (b'{ "events" : [ { "value" : 5 , "dimensions" : {"region": "eu", '
                   b'"model": "m1"}, "userId" : "alice", "meterId" : "'
                   + meter_id.encode() + b'" } ] }\n')
    status, first, _ = await _post(http, org, None, key, raw=first_body)
    assert status == 202
    status, again, headers = await _post(http, org, None, key, raw=second_body)
    assert (status, again, headers["Idempotent-Replayed"]) == (202, first, "true")
    assert len(await _eventually_stored(metering, meter_id, 2, timeout=1.0)) == 1


async def test_identical_keyless_async_requests_are_distinct_events(http, org, metering):
    meter_id = await make_meter(http, org, "calls")
    body = {"events": [ev(meter_id, 2)]}
    ids = set()
    for _ in range(3):
        status, reply, headers = await _post(http, org, body, ASYNC)
        assert (status, headers["Preference-Applied"]) == (202, "respond-async")
        ids.add(reply["events"][0]["id"])
    assert len(ids) == 3
    rows = await _eventually_stored(metering, meter_id, 3)
    assert {r["id"] for r in rows} == ids  # as on the synchronous path
