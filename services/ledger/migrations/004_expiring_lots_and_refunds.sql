-- Expiring money. Every deposit with an expiry is a lot; debits consume open lots
-- soonest-expiring first, and at expiry only a lot's unconsumed remainder lapses, as an
-- explicit `expiry` withdrawal (money already spent is never taken back).
create table ledger.lots (
    org_id      text        not null,
    livemode    boolean     not null,
    id          text        not null,  -- the deposit transaction
    user_id     text        not null,
    currency    text        not null,
    amount      bigint      not null check (amount > 0),
    remaining   bigint      not null check (remaining >= 0 and remaining <= amount),
    expires_at  timestamptz not null,
    lapsed_at   timestamptz,
    primary key (org_id, livemode, id)
);
create index lots_open on ledger.lots (org_id, livemode, user_id, currency, expires_at, id)
    where remaining > 0;
create index lots_due on ledger.lots (expires_at) where remaining > 0;

-- Σ remaining of the user's open lots, kept beside the balance so that debits of users
-- without expiring money pay nothing for the feature.
alter table ledger.balances add column expiring bigint not null default 0 check (expiring >= 0);

-- One starter credit per organization, mode and user.
create unique index transactions_one_starter_credit on ledger.transactions (org_id, livemode, user_id)
    where tags = 'starter-credit';

-- Corrections (refunds, lapses) point at the transaction they correct.
create index transactions_reverses on ledger.transactions (org_id, livemode, reverses)
    where reverses is not null;
