-- Relays are nudged by the process that adds events, and poll for the rest
-- (services/runtime/outbox.py): no NOTIFY, which took a global lock at every commit.
drop trigger if exists outbox_notify on {schema}.outbox;
drop function if exists {schema}.outbox_notify();
