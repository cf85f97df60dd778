-- unique_count over a long period: the distinct values of each meter, user (and user '',
-- every customer) and UTC day too, so that a period reads its whole days here (a month: 30
-- rows a value, not 720) and only the hours of its partial days from usage_hour_values.
-- Kept by the statement that stores the events (`store._ROLLUP`) from the hour values it
-- adds: a value new to its day is new to its hour, so every hour's value has its day's.
create table {schema}.usage_day_values (
    meter_id    text        not null,
    user_id     text        not null,
    day         timestamptz not null,
    value       bigint      not null,
    primary key (meter_id, user_id, day, value)
);

-- The hour values stored before this migration.
insert into {schema}.usage_day_values (meter_id, user_id, day, value)
select distinct meter_id, user_id, date_trunc('day', hour, 'UTC'), value
from {schema}.usage_hour_values;
