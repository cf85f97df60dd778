-- Subscription items (subscriptions.md §1.4): the seats and meters a subscription bills.
-- Deleting is soft (REF): a deleted item is gone from every read and from billing.
create table subscriptions.subscription_items (
    org_id          text        not null,
    livemode        boolean     not null,
    id              text        not null,
    subscription_id text        not null,
    price_id        text        not null default '',
    plan_id         text        not null default '',
    meter_id        text        not null default '',
    quantity        bigint      not null check (quantity >= 0),
    billing_mode    text        not null check (billing_mode in ('licensed', 'metered')),
    -- A licensed item priced by a catalog plan: that plan's price per unit, read from the
    -- plans table when the item was created or changed (0 otherwise).
    unit_amount     bigint      not null default 0,
    metadata        jsonb,
    deleted_at      timestamptz,
    created_at      timestamptz not null default clock_timestamp(),
    updated_at      timestamptz not null default now(),
    primary key (org_id, livemode, id)
);
create index subscription_items_newest
    on subscriptions.subscription_items (org_id, livemode, created_at desc, id desc)
    where deleted_at is null;
create index subscription_items_by_subscription
    on subscriptions.subscription_items (org_id, livemode, subscription_id)
    where deleted_at is null;

-- Subscription schedules (§1.5) and where each stands in its phases: `current_phase` is
-- -1 before the start, then the index of the phase in effect, then the number of phases
-- once the last has ended; a runner moves it under the row lock, with what the boundary did.
-- `next_run_at`: when the next boundary falls (null: none left, or the schedule stopped).
create table subscriptions.subscription_schedules (
    org_id          text        not null,
    livemode        boolean     not null,
    id              text        not null,
    customer_id     text        not null,
    subscription_id text        not null default '',
    status          text        not null default 'not_started'
        check (status in ('not_started', 'active', 'completed', 'released', 'canceled')),
    start_date      timestamptz,
    end_behavior    text        not null check (end_behavior in ('release', 'cancel')),
    phases          jsonb       not null default '[]',  -- [Phase] as answered
    metadata        jsonb,
    current_phase   integer     not null default -1,
    next_run_at     timestamptz,
    -- Refusals of the next boundary so far: each new attempt asks with a new key, since a
    -- refused request changed nothing (an unanswered one is asked again with the same).
    refusals        integer     not null default 0,
    created_at      timestamptz not null default clock_timestamp(),
    updated_at      timestamptz not null default now(),
    primary key (org_id, livemode, id)
);
create index subscription_schedules_newest
    on subscriptions.subscription_schedules (org_id, livemode, created_at desc, id desc);
-- What the runner looks for, across organizations.
create index subscription_schedules_due
    on subscriptions.subscription_schedules (next_run_at)
    where next_run_at is not null;
