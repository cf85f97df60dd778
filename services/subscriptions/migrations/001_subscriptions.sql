-- Plans, subscriptions and the pending invoice items of plan changes (subscriptions.md §1.1,
-- §1.3, §2.3, §4).

-- Platform-wide (not per organization): the catalog, upserted at boot (§7 D5); a catalog
-- plan's id is its slug. `managed` rows are edited by an operator and the catalog leaves
-- them alone. A null price is "by contract" (sold by sales, never self-service).
create table subscriptions.plans (
    id                  text        primary key,
    slug                text        not null unique,
    name                text        not null,
    description         text        not null default '',
    category            text        not null default '',
    price               bigint,                 -- cents per interval (per seat if per_user)
    price_annual        bigint,                 -- cents per month when billed annually
    price_annual_total  bigint,                 -- cents per year when billed annually
    currency            text        not null default 'usd',
    interval            text        not null default 'monthly',
    interval_count      integer     not null default 1,
    trial_period_days   integer     not null default 0,
    per_user            boolean     not null default false,
    contact_sales       boolean     not null default false,
    managed             boolean     not null default false,
    metadata            jsonb,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now()
);

create table subscriptions.subscriptions (
    org_id              text        not null,
    livemode            boolean     not null,
    id                  text        not null,
    user_id             text        not null,
    plan_id             text        not null,
    plan_slug           text        not null,  -- the plan id: a catalog plan's id is its slug
    plan_category       text        not null default '',
    -- What the subscription bills from (grandfathering): id, name, price, currency,
    -- interval, intervalCount, category, perUser, trialPeriodDays.
    plan_snapshot       jsonb       not null,
    status              text        not null,
    quantity            integer     not null default 1 check (quantity > 0),
    period_start        timestamptz not null,
    period_end          timestamptz not null,
    -- The first period's start: period k ends k intervals after it, clamped to the month's
    -- last day (§2.1 OURS), so month ends never drift.
    billing_anchor      timestamptz not null,
    cancel_at_period_end boolean    not null default false,
    canceled            boolean     not null default false,
    canceled_at         timestamptz,
    ended_at            timestamptz,
    start_at            timestamptz not null,
    trial_start         timestamptz,
    trial_end           timestamptz,
    provider_type       text        not null default 'internal',
    provider_id         text,
    default_payment_method text     not null default '',
    current_invoice_id  text        not null default '',
    metadata            jsonb,
    version             bigint      not null default 1,
    created_at          timestamptz not null default clock_timestamp(),
    updated_at          timestamptz not null default now(),
    primary key (org_id, livemode, id)
);
create index subscriptions_by_user on subscriptions.subscriptions (org_id, livemode, user_id);
create index subscriptions_due on subscriptions.subscriptions (org_id, livemode, status, period_end);
create index subscriptions_newest on subscriptions.subscriptions
    (org_id, livemode, created_at desc, id desc);
create unique index subscriptions_by_provider on subscriptions.subscriptions
    (org_id, livemode, provider_type, provider_id) where provider_id is not null;
-- At most one paid, not-ended subscription per customer and plan category (README
-- decisions): a second one is refused with 409; change the existing one instead.
create unique index subscriptions_one_paid_per_category on subscriptions.subscriptions
    (org_id, livemode, user_id, plan_category)
    where ended_at is null and (plan_snapshot->>'price')::bigint > 0;

-- Proration items of plan and quantity changes (§2.3 OURS), added to the subscription's next
-- renewal invoice: `pending` until that invoice takes them (`invoiced`, with its id).
create table subscriptions.pending_invoice_items (
    org_id              text        not null,
    livemode            boolean     not null,
    id                  text        not null,
    subscription_id     text        not null,
    user_id             text        not null,
    type                text        not null default 'proration',
    description         text        not null,
    plan_id             text        not null,
    plan_name           text        not null,
    amount              bigint      not null,
    currency            text        not null,
    period_start        timestamptz not null,
    period_end          timestamptz not null,
    status              text        not null default 'pending',  -- pending | invoiced
    invoice_id          text        not null default '',
    created_at          timestamptz not null default clock_timestamp(),
    primary key (org_id, livemode, id)
);
create index pending_invoice_items_of on subscriptions.pending_invoice_items
    (org_id, livemode, subscription_id) where status = 'pending';
