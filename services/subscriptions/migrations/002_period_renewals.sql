-- The billing cycle (metering-invoicing.md §8.3, §9.10; subscriptions.md §2.5–§2.6): one claim
-- per subscription period, so each period is invoiced once whoever renews it (cycle runners,
-- a manual renew, the scheduler) and a crashed run is resumed where it stopped.
--
-- state: renewing (a runner holds the lease and asks invoicing for the period invoice),
-- past_due (dunning: the invoice is retried at next_attempt_at), settled (paid, forgiven or
-- written off). A lease that has passed is a runner gone: the next run takes the claim again,
-- and asks invoicing again, which answers the invoice it made the first time.
create table subscriptions.period_renewals (
    org_id           text        not null,
    livemode         boolean     not null,
    subscription_id  text        not null,
    period_start     timestamptz not null,
    period_end       timestamptz not null,
    state            text        not null default 'renewing',
    lease_until      timestamptz,
    lease_token      text        not null default '',  -- the runner holding the lease
    invoice_id       text        not null default '',
    -- The pending proration items the period invoice carries, fixed when the period is
    -- claimed: a resumed claim sends the same ones, and the settle consumes exactly these.
    proration_ids    text[]      not null default '{}',
    attempts         integer     not null default 0,
    first_failed_at  timestamptz,
    next_attempt_at  timestamptz,
    outcome          text        not null default '',  -- paid | voided | uncollectible
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    primary key (org_id, livemode, subscription_id, period_start)
);
-- Dunning retries due: one index scan per run.
create index period_renewals_retries on subscriptions.period_renewals (next_attempt_at)
    where state = 'past_due';

-- Subscriptions due for the cycle, all organizations and modes at once: a trial that ends, an
-- active period that ends. Past-due ones are the retries' (above). The cycle's queries use the
-- same expression.
create index subscriptions_cycle_due on subscriptions.subscriptions
    ((case status when 'trialing' then trial_end when 'active' then period_end end))
    where provider_type = 'internal';
