-- Invoices, their numbers and the tax rates organizations charge (metering-invoicing.md
-- §2.4, §2.8, §9.11, §10). Every row belongs to one organization and one mode; every lookup
-- names both.

create table invoicing.invoices (
    org_id           text        not null,
    livemode         boolean     not null,
    id               text        not null,
    user_id          text        not null,
    customer_email   text        not null default '',
    subscription_id  text        not null default '',
    origin           text        not null default 'manual',  -- manual | renewal
    period_start     timestamptz,
    period_end       timestamptz,
    status           text        not null default 'draft',
    currency         text        not null,
    subtotal         bigint      not null default 0,
    tax              bigint      not null default 0,
    tax_percent      numeric,
    -- The address tax was calculated for (§5.10): later draft edits calculate it again.
    tax_address      jsonb,
    tax_lines        jsonb,
    discount         bigint      not null default 0,
    discount_name    text        not null default '',
    credit_applied   bigint      not null default 0,
    amount_due       bigint      not null default 0,
    amount_paid      bigint      not null default 0,
    payment_method   text        not null default '',
    payment_ref      text        not null default '',
    payment_intent_id text       not null default '',  -- the intent that collected it, if any
    number           bigint      not null default 0,  -- 0 until finalized
    attempt_count    integer     not null default 0,
    last_attempt_at  timestamptz,
    next_attempt_at  timestamptz,
    due_date         timestamptz,
    paid_at          timestamptz,
    voided_at        timestamptz,
    line_items       jsonb       not null default '[]',
    -- Line ids are li_<invoice>_<n>; n only grows, so a removed line's id is never reused.
    line_counter     integer     not null default 0,
    metadata         jsonb,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    primary key (org_id, livemode, id)
);
create index invoices_listed on invoicing.invoices (org_id, livemode, created_at, id);
create index invoices_by_user on invoicing.invoices (org_id, livemode, user_id, created_at);
create unique index invoices_numbered on invoicing.invoices (org_id, livemode, number)
    where number > 0;
-- One invoice per subscription period (§10, M6); manual invoices naming a subscription never
-- collide with it.
create unique index invoices_one_per_period
    on invoicing.invoices (org_id, livemode, subscription_id, period_start, period_end)
    where origin = 'renewal';

-- The last number given, per organization, mode and kind (invoice, credit_note): taken in
-- the transaction that numbers, so a rollback gives it back and numbers have no gaps.
create table invoicing.numbers (
    org_id    text    not null,
    livemode  boolean not null,
    kind      text    not null,
    last      bigint  not null,
    primary key (org_id, livemode, kind)
);

-- §2.8: the rates of a country (state '') or of one of its states; codes upper-cased.
create table invoicing.tax_rates (
    org_id      text        not null,
    livemode    boolean     not null,
    id          text        not null,
    country     text        not null,
    state       text        not null default '',
    rate        numeric     not null check (rate >= 0 and rate <= 1),
    name        text        not null,
    code        text        not null default '',
    created_at  timestamptz not null default now(),
    primary key (org_id, livemode, id)
);
create index tax_rates_by_country on invoicing.tax_rates (org_id, livemode, country, created_at);
