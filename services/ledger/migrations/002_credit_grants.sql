-- Credit grants (ledger.md §2.3): prioritised allocations of credit, separate from the
-- transaction balance, spent by invoicing through the burn operation. Partitioned by org and
-- mode like every tenant row: a test key's grants never pay a live invoice.
create table ledger.credit_grants (
    org_id          text        not null,
    livemode        boolean     not null,
    id              text        collate "C" not null,  -- byte order: the burn tie-break
    user_id         text        not null,
    name            text        not null default '',
    amount_cents    bigint      not null check (amount_cents > 0),
    -- Only burns change it, by a decrement under the row lock; it can never go negative nor
    -- grow past what was granted.
    remaining_cents bigint      not null check (remaining_cents between 0 and amount_cents),
    currency        text        not null,
    priority        bigint      not null default 0,
    eligibility     text[]      not null default '{}',  -- meter ids; empty = every meter
    tags            text        not null default '',
    effective_at    timestamptz not null,
    expires_at      timestamptz,
    voided          boolean     not null default false,
    metadata        jsonb,
    created_at      timestamptz not null,
    updated_at      timestamptz not null default now(),
    primary key (org_id, livemode, id)
);

-- Lists, newest first.
create index credit_grants_by_user on ledger.credit_grants
    (org_id, livemode, user_id, created_at desc, id desc);

-- Burns, balances and breakdowns read only grants that still hold credit; spent and voided
-- grants drop out of this index.
create index credit_grants_spendable on ledger.credit_grants
    (org_id, livemode, user_id, currency, priority, expires_at)
    where not voided and remaining_cents > 0;
