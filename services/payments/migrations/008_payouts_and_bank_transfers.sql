-- Payouts (payments.md §2.6, §4.6): money the platform pays out of its cash to a
-- destination (a payment method of the organization). A payout is created `pending` only
-- within the cash the journal shows available, less the payouts still on their way to it;
-- it owes the journal its entry (`payout:<id>`) from the start, and a cancel or a failure
-- owes the reversal (`payout_reversal:<id>`), each posted once.
create table payments.payouts (
    org_id           text        not null,
    livemode         boolean     not null,
    id               text        not null,
    amount           bigint      not null check (amount > 0),
    currency         text        not null,
    status           text        not null,  -- pending | in_transit | paid | failed | canceled
    destination_type text        not null,  -- bank_account | card
    destination_id   text        not null,  -- a payment method of the organization
    merchant_id      text        not null,  -- the destination's customer: who is paid
    description      text        not null default '',
    metadata         jsonb,
    arrival_date     timestamptz,
    provider_ref     text        not null default '',
    failure_code     text        not null default '',
    failure_message  text        not null default '',
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    primary key (org_id, livemode, id)
);
create index payouts_by_created on payments.payouts (org_id, livemode, created_at desc, id desc);

-- Bank-transfer instructions (§2.7, §4.7): where a customer wires money, and the reference
-- that tells whose it is. Account numbers are kept masked only: nothing needs them whole.
create table payments.bank_transfer_instructions (
    org_id         text        not null,
    livemode       boolean     not null,
    id             text        not null,
    customer_id    text        not null,
    currency       text        not null,
    type           text        not null,  -- ach | wire | sepa
    reference      text        not null,  -- upper case; matched case-insensitively
    bank_name      text        not null,
    account_holder text        not null default '',
    account_number text        not null,  -- masked (§8.4)
    routing_number text        not null default '',  -- masked
    iban           text        not null default '',  -- masked
    bic            text        not null default '',
    status         text        not null default 'active',  -- active | expired
    metadata       jsonb,
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now(),
    primary key (org_id, livemode, id)
);
create unique index bank_transfer_instructions_by_reference
    on payments.bank_transfer_instructions (org_id, livemode, reference);
create index bank_transfer_instructions_by_created
    on payments.bank_transfer_instructions (org_id, livemode, created_at desc, id desc);

-- Inbound transfers matched to an instruction (§4.8, §8.5): one row per transfer, so a
-- transfer reconciles once however often (or concurrently) it is matched. `transfer_key`
-- is the bank's `transferId`, else the request's Idempotency-Key, else the match's own id
-- (a transfer nobody can name again); a key reused for another transfer finds its first
-- match (422). The customer's credit and the journal's payment are owed with the row
-- (ledger postings), so a crash after it is finished by the job.
create table payments.bank_transfer_matches (
    org_id          text        not null,
    livemode        boolean     not null,
    id              text        not null,
    instruction_id  text        not null,
    transfer_key    text        not null,
    transfer_id     text        not null default '',
    idempotency_key text,
    fingerprint     text        not null default '',  -- of the request, for a reused key
    customer_id     text        not null,
    amount          bigint      not null check (amount > 0),
    currency        text        not null,
    created_at      timestamptz not null default now(),
    primary key (org_id, livemode, id),
    unique (org_id, livemode, instruction_id, transfer_key)
);
create unique index bank_transfer_matches_by_key
    on payments.bank_transfer_matches (org_id, livemode, idempotency_key)
    where idempotency_key is not null;

-- What the ledger answered a posting (a credit's transaction and balance), kept with it: a
-- repeated match answers from it instead of asking the ledger again.
alter table payments.ledger_postings add column result bytea;

-- The payment janitor: intents left `processing` and refunds the provider answered
-- `pending` are asked again once they have waited the recovery window.
create index payment_intents_processing on payments.payment_intents (updated_at)
    where status = 'processing';
create index refunds_settling on payments.refunds (updated_at)
    where status = 'pending' and answered_at is not null;
