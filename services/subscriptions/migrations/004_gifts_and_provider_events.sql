-- Gift subscriptions and provider events (helper LINKS; ledger.md §2.10, subscriptions.md §2.7).

-- One gift per customer and plan until it ends: a second grant extends it (the grant is an
-- upsert on this index, so two grants at once still make one gift).
create unique index subscriptions_one_gift_per_plan on subscriptions.subscriptions
    (org_id, livemode, user_id, plan_id)
    where provider_type = 'manual_gift' and ended_at is null;
-- Gifts reaching their end, for the job that ends them (across organizations).
create index subscriptions_gifts_ending on subscriptions.subscriptions (period_end)
    where provider_type = 'manual_gift' and ended_at is null;

-- Provider events applied, once per (processor, event id) in an organization and mode: a
-- redelivery (payments publishing again, a JetStream redelivery, the bus endpoint called
-- again) finds its row and changes nothing.
create table subscriptions.provider_events (
    org_id              text        not null,
    livemode            boolean     not null,
    processor           text        not null,   -- stripe | square
    event_id            text        not null,   -- the provider's
    type                text        not null,   -- normalized: subscription.updated, ...
    subscription_id     text,                   -- the subscription it changed; null: none
    applied_at          timestamptz not null default now(),
    primary key (org_id, livemode, processor, event_id)
);
