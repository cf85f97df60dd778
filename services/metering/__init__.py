"""The metering service: meters, meter events, usage summaries, DNS usage and its daily limits.

Meter events come in two ways and meet in one store (`store.write_events` / `write_accepted`):

- synchronously: the gateway asks `billing.metering.events.record`; concurrent batches are
  written by one statement (`recorder.py`) and the answer, after the commit, says per event
  `created` or `duplicate`;
- asynchronously (`Prefer: respond-async`): the gateway validates the batch with the same
  rules (`domain.accept_batch`), publishes it to JetStream `billing.meter_events.<org>` and
  answers 202 after the ack; workers share one durable pull consumer (`consumer.py`) and
  acknowledge after the commit.

An event is stored once per (organization, mode, idempotency key) for at least 35 days, and
once per event id (asynchronous event ids derive from their batch, whose id is claimed with
its events). Events live in a table partitioned by month of event time; `service.upkeep`
creates the months ahead, prunes the dedup keys and, when `METERING_RETENTION_MONTHS` is set,
drops old months. `METERING_ACK_WAIT` (seconds, default 30) is how long a batch fetched by a
worker that died waits before another worker gets it.

Files: `service.py` handlers and upkeep, `domain.py` rules (no I/O), `store.py` SQL,
`recorder.py` the synchronous writer, `consumer.py` the JetStream worker, `stream.py` the
stream and consumer definitions shared with the gateway.
"""
