-- The journal (ledger.md §2.9): a general double-entry ledger beside the customer ledger of
-- migration 001. Entries have any number of postings (signed amounts, debit positive) that
-- sum to zero in each currency; stored balances per account and currency change in the
-- transaction that writes the postings; holds reserve part of a balance. Every row carries
-- the organization and the mode, and every key and reference includes both.

create table ledger.journal_accounts (
    org_id          text        not null,
    livemode        boolean     not null,
    id              text        not null,
    name            text        not null check (name <> ''),
    type            text        not null check (type in ('asset', 'liability', 'equity', 'revenue', 'expense')),
    currency        text        not null,
    normal_balance  text        not null check (normal_balance in ('debit', 'credit')),
    metadata        jsonb,
    created_at      timestamptz not null,
    primary key (org_id, livemode, id),
    unique (org_id, livemode, name)
);

create table ledger.journal_entries (
    org_id             text        not null,
    livemode           boolean     not null,
    id                 text        not null,
    idempotency_key    text,  -- null: no deduplication
    payload_hash       text        not null,  -- SHA-256 of the entry: a reused key must match it
    description        text        not null default '',
    payment_intent_id  text,
    refund_id          text,
    payout_id          text,
    transfer_id        text,
    dispute_id         text,
    metadata           jsonb,
    created_at         timestamptz not null,
    primary key (org_id, livemode, id),
    unique (org_id, livemode, idempotency_key)
);
create index journal_entries_by_time on ledger.journal_entries (org_id, livemode, created_at, id);
create index journal_entries_payment_intent on ledger.journal_entries (org_id, livemode, payment_intent_id)
    where payment_intent_id is not null;
create index journal_entries_refund on ledger.journal_entries (org_id, livemode, refund_id)
    where refund_id is not null;
create index journal_entries_payout on ledger.journal_entries (org_id, livemode, payout_id)
    where payout_id is not null;
create index journal_entries_transfer on ledger.journal_entries (org_id, livemode, transfer_id)
    where transfer_id is not null;
create index journal_entries_dispute on ledger.journal_entries (org_id, livemode, dispute_id)
    where dispute_id is not null;

create table ledger.journal_postings (
    org_id      text        not null,
    livemode    boolean     not null,
    id          text        not null,
    entry_id    text        not null,
    line        smallint    not null,  -- the posting's place in its entry
    account_id  text        not null,
    amount      bigint      not null check (amount <> 0),  -- positive debit, negative credit
    currency    text        not null,
    created_at  timestamptz not null,
    primary key (org_id, livemode, id),
    unique (org_id, livemode, entry_id, line),
    foreign key (org_id, livemode, entry_id) references ledger.journal_entries (org_id, livemode, id),
    foreign key (org_id, livemode, account_id) references ledger.journal_accounts (org_id, livemode, id)
);
create index journal_postings_by_account on ledger.journal_postings (org_id, livemode, account_id, created_at);

-- The last fence: at commit, every entry that received postings must sum to zero in each
-- currency. Deferred, so the postings of one entry can be inserted in any order.
create function ledger.journal_entry_balanced() returns trigger language plpgsql as $$
declare
    unbalanced record;
begin
    select currency, sum(amount) as total into unbalanced
    from ledger.journal_postings
    where org_id = new.org_id and livemode = new.livemode and entry_id = new.entry_id
    group by currency
    having sum(amount) <> 0
    order by currency
    limit 1;
    if found then
        raise exception 'ledger entry % postings sum to % in % (must be 0)',
            new.entry_id, unbalanced.total, unbalanced.currency
            using errcode = 'check_violation';
    end if;
    return null;
end
$$;
create constraint trigger journal_postings_balanced
    after insert on ledger.journal_postings
    deferrable initially deferred
    for each row execute function ledger.journal_entry_balanced();

-- Entries and postings are facts: corrections are new entries, never edits.
create function ledger.journal_append_only() returns trigger language plpgsql as $$
begin
    raise exception '% is append-only', tg_table_name using errcode = 'restrict_violation';
end
$$;
create trigger journal_entries_append_only before update or delete on ledger.journal_entries
    for each statement execute function ledger.journal_append_only();
create trigger journal_postings_append_only before update or delete on ledger.journal_postings
    for each statement execute function ledger.journal_append_only();

-- Stored balances per account and currency, changed only by atomic increments in the
-- transaction that writes the postings or moves a hold. `available` is always recomputed:
-- posted with the holds taken off in the account's normal direction.
create table ledger.journal_balances (
    org_id         text        not null,
    livemode       boolean     not null,
    account_id     text        not null,
    currency       text        not null,
    credit_normal  boolean     not null,  -- the account's normal balance, for `available`
    posted         bigint      not null default 0,
    pending        bigint      not null default 0,  -- always 0, as in the reference
    held           bigint      not null default 0,  -- never negative: trigger below
    available      bigint      generated always as
                       (case when credit_normal then posted + held else posted - held end) stored,
    updated_at     timestamptz not null default now(),
    primary key (org_id, livemode, account_id, currency),
    foreign key (org_id, livemode, account_id) references ledger.journal_accounts (org_id, livemode, id)
);

-- Held money is never negative. Not a CHECK: an upsert's candidate row carries the change
-- (a release is negative) and CHECKs run on it before the conflict turns it into an update;
-- an AFTER trigger sees only the rows really written.
create function ledger.journal_held_negative() returns trigger language plpgsql as $$
begin
    raise exception 'journal balance of % in % would hold % (must be >= 0)',
        new.account_id, new.currency, new.held using errcode = 'check_violation';
end
$$;
create trigger journal_balances_held_not_negative
    after insert or update on ledger.journal_balances
    for each row when (new.held < 0) execute function ledger.journal_held_negative();

create table ledger.journal_holds (
    org_id             text        not null,
    livemode           boolean     not null,
    id                 text        not null,
    account_id         text        not null,
    amount             bigint      not null check (amount > 0),
    currency           text        not null,
    status             text        not null default 'pending'
                           check (status in ('pending', 'captured', 'voided', 'expired')),
    payment_intent_id  text,
    captured_entry_id  text,
    captured_amount    bigint      check (captured_amount > 0 and captured_amount <= amount),
    expires_at         timestamptz not null,
    created_at         timestamptz not null,
    updated_at         timestamptz not null,
    primary key (org_id, livemode, id),
    foreign key (org_id, livemode, account_id) references ledger.journal_accounts (org_id, livemode, id),
    foreign key (org_id, livemode, captured_entry_id) references ledger.journal_entries (org_id, livemode, id),
    -- a captured hold always names its entry and amount; no other hold does
    check ((status = 'captured') = (captured_entry_id is not null and captured_amount is not null))
);
-- The sweeper's work list: pending holds by expiry.
create index journal_holds_pending_expiry on ledger.journal_holds (expires_at) where status = 'pending';
