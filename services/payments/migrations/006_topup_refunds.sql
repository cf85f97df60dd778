-- A refund of a top-up's payment takes the top-up's credit back from the balance before the
-- provider refunds it (never what was already spent), and gives it back if the provider
-- refuses: the refund remembers which top-up it is for.
alter table payments.refunds add column topup_id text not null default '';
