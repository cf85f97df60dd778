-- Usage rollups: what the events of one meter and user in one UTC hour add up to, kept by
-- the statement that stores the events (`store._STORE`), so that a usage answer over a
-- period reads its whole hours here and only the partial hours at its edges from the events.
-- Exact for every aggregation: count, sum (numeric: int64 values may add up past int64),
-- min, max, and last (the latest event time, the latest ingested among equal times).
--
-- Concurrent writers add to the same hour of a busy customer: each adds to its own row of
-- the hour (`shard`, from its connection), so they do not queue on one row lock; a read
-- adds up the shards, and upkeep folds them into shard 0 once the hour is past. Updates
-- leave the indexed columns alone and find room in the page (fillfactor): heap-only
-- updates, no index writes after an hour's first event.
-- A meter's hours for all its customers together are kept too, as user '' (a customer's id
-- is never empty). Keyed by the meter, whose id is unique across organizations and modes.
create table {schema}.usage_hours (
    meter_id    text        not null,
    user_id     text        not null,
    hour        timestamptz not null,
    shard       smallint    not null,
    org_id      text        not null,
    livemode    boolean     not null,
    events      bigint      not null,
    total       numeric     not null,
    min_value   bigint      not null,
    max_value   bigint      not null,
    last_ts     timestamptz not null,
    last_seq    bigint      not null,
    last_value  bigint      not null,
    primary key (meter_id, user_id, hour, shard)
) with (fillfactor = 70);
-- The rows upkeep folds into shard 0 once their hour is past (`store.fold_shards`).
create index usage_hours_shards on {schema}.usage_hours (hour) where shard <> 0;
-- The customers with events in given hours of a meter (a period's edges, every customer).
create index usage_hours_by_meter on {schema}.usage_hours (meter_id, hour);

-- `unique_count` cannot add hours up: the distinct values of each meter, user and hour are
-- kept instead (for unique_count meters only), and a period counts the distinct values of
-- its whole hours here with those of its edges' events.
create table {schema}.usage_hour_values (
    meter_id    text        not null,
    user_id     text        not null,
    hour        timestamptz not null,
    value       bigint      not null,
    primary key (meter_id, user_id, hour, value)
);

-- The events stored before this migration.
insert into {schema}.usage_hours (meter_id, user_id, hour, shard, org_id, livemode, events,
                                  total, min_value, max_value, last_ts, last_seq, last_value)
select meter_id, coalesce(user_id, ''), hour, 0, org_id, livemode, count(*),
       sum(value), min(value), max(value),
       (array_agg(ts order by ts desc, ingest_seq desc))[1],
       (array_agg(ingest_seq order by ts desc, ingest_seq desc))[1],
       (array_agg(value order by ts desc, ingest_seq desc))[1]
from (select *, date_trunc('hour', ts, 'UTC') as hour from {schema}.events) e
group by grouping sets ((meter_id, user_id, hour, org_id, livemode),
                        (meter_id, hour, org_id, livemode));

insert into {schema}.usage_hour_values (meter_id, user_id, hour, value)
select meter_id, coalesce(user_id, ''), hour, value
from (select e.meter_id, e.user_id, date_trunc('hour', e.ts, 'UTC') as hour, e.value
      from {schema}.events e
      join {schema}.meters m
        on m.org_id = e.org_id and m.livemode = e.livemode and m.id = e.meter_id
      where m.aggregation_type = 'unique_count') e
group by grouping sets ((meter_id, user_id, hour, value), (meter_id, hour, value));
