"""The meter-event batch rules on their own (`contracts.meter_events.accept_batch`): what the
gateway (asynchronous path) and metering (synchronous path) spend checking each 100-event
batch before it is stored, per batch and per event.

Baseline, in the same run: decoding the same batch from JSON with msgspec (the work every
request does anyway), so the ratio survives the machine's changes of speed.

    .venv/bin/python bench/accept_batch.py [--batches 5000] [--rounds 5]

No servers needed. The same script runs from a worktree of an older commit (where the rules
lived in `services.metering.domain`), for before/after figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec  # noqa: E402

from contracts.metering import MeterEventBatch  # noqa: E402

try:
    from contracts import meter_events
except ImportError:  # before b4da4ee's successors moved them: run from an old worktree too
    from services.metering import domain as meter_events


def body() -> bytes:
    """A batch shaped like `bench/ingest.py`'s: every event keyed, one dimension each."""
    return json.dumps({"events": [
        {"meterId": "mtr_bench", "userId": f"bench/u{i}", "value": 3,
         "idempotency": f"run-1-{i}", "dimensions": {"model": "m1"}}
        for i in range(meter_events.MAX_BATCH)]}).encode()


def per_batch_us(fn, batches: int) -> float:
    started = time.perf_counter()
    for _ in range(batches):
        fn()
    return (time.perf_counter() - started) / batches * 1e6


def main(batches: int, rounds: int) -> None:
    raw = body()
    decode = msgspec.json.Decoder(MeterEventBatch).decode
    events = decode(raw).events
    now = datetime.now(UTC)
    id_base = meter_events.fresh_id_base()

    def accept() -> None:
        meter_events.accept_batch(events, now, id_base)

    decoding, accepting = [], []
    for _ in range(rounds):  # alternating, so both see the same phases of the machine
        decoding.append(per_batch_us(lambda: decode(raw), batches))
        accepting.append(per_batch_us(accept, batches))
    d, a = statistics.median(decoding), statistics.median(accepting)
    n = meter_events.MAX_BATCH
    print(f"meter-event batch rules, {n}-event batches, median of {rounds} rounds of {batches}")
    print(f"baseline (msgspec decode of the batch)  {d:7.1f} µs per batch  {d / n:5.2f} µs/event")
    print(f"accept_batch                            {a:7.1f} µs per batch  {a / n:5.2f} µs/event")
    print(f"accept_batch: {a / d:.2f} × baseline")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    main(args.batches, args.rounds)
