-- Setup intents (payments.md §2.2): saving a payment method for later payments.
create table payments.setup_intents (
    org_id              text        not null,
    livemode            boolean     not null,
    id                  text        not null,
    customer_id         text        not null,
    status              text        not null,
    usage               text        not null,
    payment_method_id   text        not null default '',
    provider_ref        text        not null default '',
    provider_type       text        not null default '',
    last_error          text        not null default '',
    cancellation_reason text        not null default '',
    canceled_at         timestamptz,
    metadata            jsonb,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    primary key (org_id, livemode, id)
);
