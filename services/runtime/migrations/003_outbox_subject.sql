-- An outbox row may name its own subject (a message for another service's stream, e.g. the
-- ledger's copies of usage debits into metering's `billing.meter_events.<org>`); null: the
-- event subject `billing.events.<type>`.
alter table {schema}.outbox add column subject text;
