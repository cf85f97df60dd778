-- Payment methods and payment intents (payments.md §2.1, §2.3). Every row belongs to one
-- organization and one mode; every lookup names both.

-- The provider's customer for each of our customers (§1.4.1 DO: never send our user id as
-- a provider customer id).
create table payments.provider_customers (
    org_id        text        not null,
    livemode      boolean     not null,
    customer_id   text        not null,
    provider      text        not null,
    provider_ref  text        not null,
    created_at    timestamptz not null default now(),
    primary key (org_id, livemode, customer_id, provider)
);

create table payments.payment_methods (
    org_id          text        not null,
    livemode        boolean     not null,
    id              text        not null,
    customer_id     text        not null,
    type            text        not null,
    name            text        not null default '',
    card            jsonb,      -- brand, last4, expiry: never a number or security code
    bank_account    jsonb,
    billing_address jsonb,
    provider_ref    text        not null default '',  -- the provider's id of the saved method
    provider_type   text        not null default '',  -- the provider that issued it
    verified        boolean     not null default false,  -- a provider accepted it
    is_default      boolean     not null default false,
    metadata        jsonb       not null default '{}',
    deleted         boolean     not null default false,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    primary key (org_id, livemode, id)
);
create index payment_methods_by_customer
    on payments.payment_methods (org_id, livemode, customer_id, created_at desc, id desc)
    where not deleted;
-- At most one default per customer (§2.3 invariant).
create unique index payment_methods_one_default
    on payments.payment_methods (org_id, livemode, customer_id)
    where is_default and not deleted;

create table payments.payment_intents (
    org_id              text        not null,
    livemode            boolean     not null,
    id                  text        not null,
    customer_id         text        not null,
    amount              bigint      not null check (amount > 0),
    currency            text        not null,
    status              text        not null,
    payment_method_id   text        not null default '',
    capture_method      text        not null,
    confirmation_method text        not null,
    amount_capturable   bigint      not null default 0 check (amount_capturable >= 0),
    amount_received     bigint      not null default 0 check (amount_received >= 0),
    description         text        not null default '',
    receipt_email       text        not null default '',
    provider_ref        text        not null default '',
    provider_type       text        not null default '',
    last_error          text        not null default '',
    client_secret       text        not null default '',
    invoice_id          text        not null default '',
    setup_future_usage  text        not null default '',
    cancellation_reason text        not null default '',
    canceled_at         timestamptz,
    metadata            jsonb,
    attempts            integer     not null default 0,  -- declined confirms so far
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    primary key (org_id, livemode, id)
);
create index payment_intents_by_created
    on payments.payment_intents (org_id, livemode, created_at desc, id desc);
create index payment_intents_by_customer
    on payments.payment_intents (org_id, livemode, customer_id, created_at desc, id desc);
