-- Meters (metering-invoicing.md §2.1): per organization and mode; no update, no delete.
create table {schema}.meters (
    org_id            text        not null,
    livemode          boolean     not null,
    id                text        not null,
    name              text        not null,
    event_name        text        not null,
    aggregation_type  text        not null
        check (aggregation_type in ('sum', 'count', 'last', 'max', 'min', 'unique_count')),
    currency          text        not null,
    dimensions        jsonb,  -- informational list of names; null when not supplied
    metadata          jsonb,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    primary key (org_id, livemode, id),
    unique (org_id, livemode, event_name)
);
create index meters_in_creation_order on {schema}.meters (org_id, livemode, created_at, id);

-- Meter events (§2.2), immutable, partitioned by month of the event's time so old months
-- are dropped whole and each month's index stays small. No unique index here: PostgreSQL
-- cannot enforce one across partitions without the partition key, so the dedup keys live in
-- `event_keys` and `ingested_batches`, claimed in the same transaction as the insert.
create sequence {schema}.event_ingest_seq;
create table {schema}.events (
    org_id       text        not null,
    livemode     boolean     not null,
    id           text        not null,
    meter_id     text        not null,
    user_id      text        not null,
    value        bigint      not null,
    ts           timestamptz not null,
    idempotency  text        not null default '',
    dimensions   json,  -- stored as sent (cheaper to write than jsonb; read rarely)
    -- ingestion order: breaks ties between equal timestamps for `last`
    ingest_seq   bigint      not null default nextval('{schema}.event_ingest_seq'),
    created_at   timestamptz not null default now()
) partition by range (ts);
-- Meter ids are unique across organizations and modes (and an event's meter is always one
-- of its organization's), so the meter leads the index: narrower, and cheaper to maintain.
create index events_by_meter_user_time on {schema}.events (meter_id, user_id, ts);

-- An event is stored once per (organization, mode, idempotency key) while its key is kept
-- (at least 35 days, pruned by the service). Keyed by a 128-bit hash of the three: a
-- fixed-size key keeps the unique index small and quick to insert into.
create function {schema}.event_key_hash(org_id text, livemode boolean, key text)
returns uuid language sql immutable parallel safe
as $$ select md5(org_id || '|' || livemode::text || '|' || key)::uuid $$;

create table {schema}.event_keys (
    key_hash    uuid        primary key,
    org_id      text        not null,
    livemode    boolean     not null,
    key         text        not null,
    event_id    text        not null,
    created_at  timestamptz not null default now()
);
create index event_keys_by_age on {schema}.event_keys (created_at);

-- Batches accepted asynchronously (JetStream) are stored once: a redelivered batch finds its
-- id here. Their event ids derive from the batch id, so this is also the per-event-id dedup.
create table {schema}.ingested_batches (
    org_id      text        not null,
    livemode    boolean     not null,
    batch_id    text        not null,
    created_at  timestamptz not null default now(),
    primary key (org_id, livemode, batch_id)
);
create index ingested_batches_by_age on {schema}.ingested_batches (created_at);

-- Monthly partitions `events_YYYY_MM` (UTC months) from `first_month` for `months` months.
-- Replicas run this together: the lock makes one create and the others find the tables.
create function {schema}.ensure_event_partitions(first_month date, months int)
returns void language plpgsql as $$
declare
    month_start date;
    name text;
begin
    perform pg_advisory_xact_lock(hashtextextended('{schema}.event_partitions', 0));
    for i in 0 .. months - 1 loop
        month_start := (date_trunc('month', first_month) + make_interval(months => i))::date;
        name := format('events_%s', to_char(month_start, 'YYYY_MM'));
        if to_regclass(format('{schema}.%I', name)) is null then
            execute format(
                'create table {schema}.%I partition of {schema}.events for values from (%L) to (%L)',
                name, month_start::timestamp at time zone 'UTC',
                (month_start + interval '1 month')::timestamp at time zone 'UTC');
        end if;
    end loop;
end
$$;

-- Two months back (the accepted window reaches 35 days back) to three months ahead; the
-- service's periodic job keeps extending it.
select {schema}.ensure_event_partitions(((now() at time zone 'UTC') - interval '2 months')::date, 6);
