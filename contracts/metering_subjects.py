"""Metering subjects (metering-invoicing.md §10), and the JetStream names of the
asynchronous meter-event path."""

# request/reply, queue group `metering`
METERING_METER_CREATE = "billing.metering.meter.create"
METERING_METER_LIST = "billing.metering.meter.list"
METERING_METER_GET = "billing.metering.meter.get"
METERING_EVENTS_RECORD = "billing.metering.events.record"
METERING_EVENTS_SUMMARY = "billing.metering.events.summary"
METERING_DNS_USAGE_RECORD = "billing.metering.dns_usage.record"
METERING_DNS_USAGE_SUMMARY = "billing.metering.dns_usage.summary"
METERING_DNS_PLAN_LIST = "billing.metering.dns_plan.list"
# Bus only (no HTTP route): the gateway's meter-id cache for the asynchronous path, and the
# per-meter usage of a customer that invoicing prices.
METERING_METER_IDS = "billing.metering.meter.ids"
METERING_METER_FIND = "billing.metering.meter.find"  # by event name (the ledger's back-fill)
METERING_USAGE_AGGREGATE = "billing.metering.usage.aggregate"

# JetStream: meter-event batches accepted by the gateway (`Prefer: respond-async`), stored by
# metering workers sharing one durable pull consumer. Message id (`Nats-Msg-Id`) = batch id.
METER_EVENTS_STREAM = "BILLING_METER_EVENTS"
METER_EVENTS_PREFIX = "billing.meter_events."
METER_EVENTS_CONSUMER = "metering"


def meter_events_subject(org_id: str) -> str:
    return METER_EVENTS_PREFIX + org_id


# Meter-event batches that could not be stored (issue 8, items 6–7): kept here with their
# error until an operator replays or discards them (`billing metering dead-letters`).
METER_EVENTS_DEAD_STREAM = "BILLING_METER_EVENTS_DEAD"
METER_EVENTS_DEAD_PREFIX = "billing.meter_events_dead."
# Bus only: an asynchronous batch with an `Idempotency-Key`, accepted by metering so the key
# is claimed where the synchronous path claims it (one rule for both ways in).
METERING_EVENTS_ACCEPT = "billing.metering.events.accept"
