"""A reader of the events stream gets the events its subjects name, and only those — also
from a durable consumer an earlier version created with a wider filter (changed in place,
resumed where it stopped)."""

from __future__ import annotations

import asyncio
import secrets

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts import events
from services.runtime.outbox import ensure_stream
from services.runtime.streams import EventReader


async def test_a_reader_of_some_subjects_gets_only_those_from_a_wider_consumer(nats_url, js):
    prefix = f"test_{secrets.token_hex(4)}"
    durable = f"{prefix}-reader"
    await ensure_stream(js)
    await js.add_consumer(events.STREAM, ConsumerConfig(  # as an earlier version made it
        durable_name=durable, name=durable, filter_subject=events.subject(f"{prefix}.>"),
        deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT))
    for kind in ("created", "paid", "finalized", "voided"):
        await js.publish(events.subject(f"{prefix}.{kind}"), b"{}")
    read: list[str] = []

    class Settling(EventReader):
        subjects = (events.subject(f"{prefix}.paid"), events.subject(f"{prefix}.voided"))
        what = "test events"

        async def write(self, msgs):
            read.extend(m.subject for m in msgs)

    Settling.durable = durable
    reader = Settling([nats_url])
    await reader.start()
    try:
        for _ in range(100):
            if len(read) >= 2 and reader.current:
                break
            await asyncio.sleep(0.05)
    finally:
        await reader.stop()
        await js.delete_consumer(events.STREAM, durable)
    assert read == [events.subject(f"{prefix}.paid"), events.subject(f"{prefix}.voided")]
