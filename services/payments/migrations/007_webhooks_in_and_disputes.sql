-- Inbound provider webhooks (payments.md §5) and disputes (§2.5, §4.5).

-- Every delivery that passed its signature, as received (the raw body, byte for byte), with
-- what became of it. One row per provider event and organization and mode: a redelivery finds
-- it and changes nothing (§5.5). `status`: received (its effect is still to apply: the
-- request that stored it applies it, else the re-drive job) | processed | ignored (nothing
-- of ours to change; `reason` says why) | failed (the effect raised; retried by the job).
create table payments.webhook_events_in (
    org_id        text        not null,
    livemode      boolean     not null,
    provider      text        not null,  -- stripe | square
    event_id      text        not null,  -- the provider's event id
    type          text        not null,  -- normalized (§1.7.3, §1.8.3)
    provider_type text        not null,  -- as the provider wrote it
    body          bytea       not null,
    status        text        not null,
    reason        text        not null default '',
    attempts      integer     not null default 0,
    received_at   timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    primary key (org_id, livemode, provider, event_id)
);
create index webhook_events_in_unfinished on payments.webhook_events_in (updated_at)
    where status in ('received', 'failed');

-- Disputes, created and updated from provider webhooks only. `ledger` says where the
-- disputed amount stands in the ledger's journal: '' (never taken: an inquiry), held (taken
-- from the customer when the dispute opened), returned (won), kept (lost); each move is
-- posted once (`dispute:<id>`, `dispute-won:<id>`, `dispute-lost:<id>`).
create table payments.disputes (
    org_id            text        not null,
    livemode          boolean     not null,
    id                text        not null,
    provider          text        not null,
    provider_ref      text        not null,  -- the provider's dispute id
    payment_intent_id text        not null,
    customer_id       text        not null,  -- the intent's: whose balance holds the amount
    amount            bigint      not null check (amount > 0),
    currency          text        not null,
    status            text        not null,
    reason            text        not null default '',
    evidence_due_by   timestamptz,
    evidence          jsonb,
    metadata          jsonb,
    ledger            text        not null default '',
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    primary key (org_id, livemode, id)
);
create unique index disputes_by_provider_ref
    on payments.disputes (org_id, livemode, provider, provider_ref);
create index disputes_by_created on payments.disputes (org_id, livemode, created_at desc, id desc);
create index disputes_by_intent
    on payments.disputes (org_id, livemode, payment_intent_id, created_at desc, id desc);

-- Webhooks find our objects by the provider's id of them.
create index payment_intents_by_provider_ref
    on payments.payment_intents (org_id, livemode, provider_type, provider_ref)
    where provider_ref <> '';
create index refunds_by_provider_ref
    on payments.refunds (org_id, livemode, provider, provider_ref) where provider_ref <> '';
create index payment_methods_by_provider_ref
    on payments.payment_methods (org_id, livemode, provider_type, provider_ref)
    where provider_ref <> '' and not deleted;
