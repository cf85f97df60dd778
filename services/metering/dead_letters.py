"""Meter-event batches that could not be stored, kept in their own JetStream stream with
the error, for operators: a batch accepted with 202 is never dropped silently.

A worker moves a batch here when its write fails for a reason that can never succeed (the
data), or keeps failing for another reason past a generous number of deliveries
(`consumer.py`). `billing metering dead-letters` lists them, replays them to the work
stream (once whatever caused the failure is fixed) or discards them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from nats.js.errors import NotFoundError

from contracts.metering import (
    METER_EVENTS_DEAD_PREFIX,
    METER_EVENTS_DEAD_STREAM,
    METER_EVENTS_PREFIX,
)

ERROR = "Billing-Error"  # why the batch could not be stored
SUBJECT = "Billing-Subject"  # where it came from (and goes back to on replay)
BATCH = "Billing-Batch-Id"
DELIVERIES = "Billing-Deliveries"
MAX_ERROR_CHARS = 1000


class DeadLetter(msgspec.Struct):
    seq: int  # in the dead-letter stream
    subject: str
    batch_id: str
    deliveries: int
    error: str
    data: bytes

    @property
    def events(self) -> int | None:
        try:
            return len(msgspec.json.decode(self.data)["e"])
        except (msgspec.DecodeError, KeyError, TypeError):
            return None


async def bury(js: Any, msg: Any, error: BaseException, deliveries: int) -> None:
    """Keep a batch the workers give up on, with its error. Published under the work
    stream's sequence, so a worker that dies before acking and buries it again adds no
    second copy."""
    headers = {
        "Nats-Msg-Id": f"dead:{msg.metadata.sequence.stream}",
        ERROR: _one_line(f"{type(error).__name__}: {error}"),
        SUBJECT: msg.subject,
        BATCH: (msg.headers or {}).get("Nats-Msg-Id", ""),
        DELIVERIES: str(deliveries),
    }
    await js.publish(_dead_subject(msg.subject), msg.data, headers=headers)


async def listing(js: Any) -> list[DeadLetter]:
    """Every dead letter, oldest first."""
    letters = []
    seq = 1
    while True:
        try:
            raw = await js.get_msg(METER_EVENTS_DEAD_STREAM, seq=seq, subject=">", next=True)
        except NotFoundError:
            return letters
        headers = raw.headers or {}
        letters.append(DeadLetter(
            raw.seq, headers.get(SUBJECT, ""), headers.get(BATCH, ""),
            int(headers.get(DELIVERIES, "0")), headers.get(ERROR, ""), raw.data or b""))
        seq = raw.seq + 1


async def replay(js: Any, letters: Iterable[DeadLetter]) -> int:
    """Send batches back to the work stream, then forget them here. A batch stored before
    (or replayed twice) is still stored once: the workers dedup by batch id."""
    count = 0
    for letter in letters:
        # A new message id: the work stream may still remember the batch's own.
        await js.publish(letter.subject, letter.data,
                         headers={"Nats-Msg-Id": f"replay:{letter.seq}:{letter.batch_id}"})
        await js.delete_msg(METER_EVENTS_DEAD_STREAM, letter.seq)
        count += 1
    return count


async def discard(js: Any, letters: Iterable[DeadLetter]) -> int:
    count = 0
    for letter in letters:
        await js.delete_msg(METER_EVENTS_DEAD_STREAM, letter.seq)
        count += 1
    return count


def _dead_subject(subject: str) -> str:
    org = subject[len(METER_EVENTS_PREFIX):] if subject.startswith(METER_EVENTS_PREFIX) else ""
    return METER_EVENTS_DEAD_PREFIX + (org or "unknown")


def _one_line(text: str) -> str:
    # A header value is one line of bounded length.
    return " ".join(text.split())[:MAX_ERROR_CHARS]
