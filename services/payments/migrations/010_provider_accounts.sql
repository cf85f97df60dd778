-- Which organization a provider account belongs to, in each mode (payments.md §5.5 (2)): a
-- provider webhook that reaches the URL without an organization is verified with the
-- secrets of the organization whose settings name the event's account (Stripe's Connect
-- `account`, Square's `merchant_id`). Kept with the settings it copies: written, replaced
-- and removed in the transaction that changes them. Not secret: an account id is in every
-- event the provider sends.
create table payments.provider_accounts (
    provider    text        not null,  -- stripe | square
    account_id  text        not null,  -- acct_… | the Square merchant id
    livemode    boolean     not null,
    org_id      text        not null,
    created_at  timestamptz not null default now(),
    primary key (provider, account_id, livemode),  -- one organization per account and mode
    unique (org_id, livemode, provider)
);
