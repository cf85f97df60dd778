"""The metering service: meters, meter events, usage summaries, DNS usage and its daily limits.

Meter events come in two ways and meet in one store (`store.write_events` / `write_accepted`):

- synchronously: the gateway asks `billing.metering.events.record`; concurrent batches are
  written by one statement (`recorder.py`) and the answer, after the commit, says per event
  `created` or `duplicate`;
- asynchronously (`Prefer: respond-async`): the gateway validates the batch with the same
  rules (`contracts.meter_events.accept_batch`), publishes it to JetStream
  `billing.meter_events.<org>` and
  answers 202 after the ack; workers share one durable pull consumer (`consumer.py`) and
  acknowledge after the commit.

An event is stored once per (organization, mode, idempotency key) for at least 35 days, and
once per event id (asynchronous event ids derive from their batch, whose id is claimed with
its events). Events live in a table partitioned by month of event time; `handlers.upkeep`
creates the months ahead, prunes the dedup keys and, when `METERING_RETENTION_MONTHS` is set,
drops old months. `METERING_ACK_WAIT` (seconds, default 30) is how long a batch fetched by a
worker that died waits before another worker gets it.

Usage over a period (summaries, and the per-meter usage invoicing prices) is answered from
hourly rollups kept by the statement that stores the events (migration 003,
`store._ROLLUP`): the period's whole UTC hours from them, the partial hours at its edges
from the events (`domain.window_parts`) — exact for every aggregation, late events and
duplicates included, and as fast for a month of a million events as for a few.

Files (services/README.md): `handlers.py` handlers and upkeep, `domain.py` rules (no
I/O), `store.py` SQL, `bootstrap.py` the state handlers share, `recorder.py` the
synchronous writer, `intake.py` keyed asynchronous batches, `consumer.py` the JetStream
worker, `dead_letters.py` batches that could not be stored. The stream's definition is
shared with its publishers: `services/runtime/meter_stream.py`.
"""

from pathlib import Path

from services.metering import handlers
from services.metering.bootstrap import bootstrap
from services.runtime.service import Job, ServiceSpec

SPEC = ServiceSpec(
    name="metering",
    handlers=handlers.router,
    migrations=Path(__file__).parent / "migrations",
    bootstrap=bootstrap,
    jobs=(Job(handlers.UPKEEP_INTERVAL_S, handlers.run_upkeep),),
)
