-- Refunds (payments.md §2.4, §4.4). A refund is written `pending` before the provider is
-- called: the row reserves its amount against the intent (the cap counts pending and
-- succeeded refunds), and a retry or the re-drive job finds it there. `answered_at` tells a
-- refund the provider has not answered yet (sent again) from one it answered `pending`
-- (settled later by the provider); `in_flight`, that someone is asking the provider now
-- (for at most PAYMENTS_RECOVERY_SECONDS: an older ask died with its process).
create table payments.refunds (
    org_id            text        not null,
    livemode          boolean     not null,
    id                text        not null,
    payment_intent_id text        not null,
    invoice_id        text        not null default '',
    customer_id       text        not null,  -- the intent's: whose journal account is debited
    amount            bigint      not null check (amount > 0),
    currency          text        not null,
    status            text        not null,  -- pending | succeeded | failed
    reason            text        not null default '',
    provider          text        not null,  -- the provider that took the payment
    payment_ref       text        not null,  -- its id of the payment refunded
    provider_ref      text        not null default '',  -- its id of the refund
    failure_reason    text        not null default '',
    idempotency_key   text,  -- the client's key: a retry finds this refund
    fingerprint       text        not null default '',
    answered_at       timestamptz,
    in_flight         boolean     not null default true,  -- its writer asks the provider next
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    primary key (org_id, livemode, id)
);
create unique index refunds_by_key on payments.refunds (org_id, livemode, idempotency_key)
    where idempotency_key is not null;
create index refunds_by_created on payments.refunds (org_id, livemode, created_at desc, id desc);
create index refunds_by_intent
    on payments.refunds (org_id, livemode, payment_intent_id, created_at desc, id desc);
create index refunds_unanswered on payments.refunds (updated_at)
    where status = 'pending' and answered_at is null;

-- What succeeded refunds gave back (§4.4 DO: `amountRefunded` on the intent).
alter table payments.payment_intents
    add column amount_refunded bigint not null default 0 check (amount_refunded >= 0);
