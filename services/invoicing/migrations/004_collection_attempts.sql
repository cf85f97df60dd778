-- Collection attempts (metering-invoicing.md §5.5, §9.5): one row per attempt to pay an
-- invoice, holding what each source gave so far. An attempt `collecting` is the invoice's
-- in-progress marker: a second pay is refused while it runs, and resumed (same keys, so no
-- source gives twice) once its lease has passed (a collector that died). Finished attempts
-- are what a void gives back.

create table invoicing.collection_attempts (
    org_id          text        not null,
    livemode        boolean     not null,
    invoice_id      text        not null,
    attempt         integer     not null,
    state           text        not null default 'collecting',  -- collecting | succeeded | failed
    lease_until     timestamptz not null,
    due             bigint      not null,  -- what was left to collect when it started
    credit_used     bigint,  -- null: that source not asked yet
    credit_by_meter jsonb,  -- of credit_used, what each meter's usage lines took
    balance_used    bigint,  -- the customer balance
    wallet_planned  bigint,  -- what the wallet was asked for (a retry asks the same)
    wallet_used     bigint,
    card_used       bigint,
    card_ref        text        not null default '',
    payment_intent_id text      not null default '',
    error           text        not null default '',
    given_back      boolean     not null default false,  -- by a void
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    primary key (org_id, livemode, invoice_id, attempt)
);
create unique index collection_attempts_one_running
    on invoicing.collection_attempts (org_id, livemode, invoice_id) where state = 'collecting';
