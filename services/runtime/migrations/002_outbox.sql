-- Transactional outbox of one service (conventions §10.10, §10.11). A state change and the
-- event that announces it commit together; the relay publishes pending rows to JetStream and
-- marks them published only after the ack. `payload` is the encoded event, sent verbatim.
create table {schema}.outbox (
    seq           bigint      generated always as identity primary key,  -- publishing order
    id            text        not null unique,  -- event id, also the Nats-Msg-Id
    type          text        not null,         -- subject is billing.events.<type>
    org_id        text        not null,
    livemode      boolean     not null,
    payload       bytea       not null,
    created_at    timestamptz not null default now(),
    published_at  timestamptz
);
create index outbox_pending on {schema}.outbox (seq) where published_at is null;
create index outbox_published on {schema}.outbox (published_at) where published_at is not null;

-- Wake the relay when events commit (NOTIFY is delivered at commit, once per transaction).
create function {schema}.outbox_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('{schema}_outbox', '');
    return null;
end
$$;
create trigger outbox_notify after insert on {schema}.outbox
    for each statement execute function {schema}.outbox_notify();
