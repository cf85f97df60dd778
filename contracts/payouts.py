"""Payouts, bank-transfer instructions and the reconciliation of inbound transfers
(payments.md §2.6, §2.7, §4.6–§4.8).

Field names are the reference's JSON names. Response fields the reference emits only when
non-empty are `UNSET` until set (msgspec leaves them out)."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from contracts.common import IdParams, Int64, Params
from contracts.endpoint import Endpoint
from contracts.limits import Code, Id, Metadata, Name, Notes, UserId, require_small_json

# ---- payouts ---------------------------------------------------------------------------


class PayoutCreateParams(Params):
    amount: Int64 = 0
    currency: Code = ""
    destinationType: Code = ""  # bank_account | card
    destinationId: Id = ""  # a payment method of the organization
    description: Notes = ""
    metadata: Metadata | None = None

    def __post_init__(self) -> None:
        require_small_json("metadata", self.metadata)


class PayoutListParams(Params):
    status: Code = ""
    limit: int = 0  # ≤ 0: 100; at most 1000
    startingAfter: Id = ""



class PayoutSettleParams(Params):
    """What became of a payout at the bank (an operator, a back office, or a provider's
    webhook): `in_transit`, `paid` or `failed` (with the bank's code and message)."""

    id: Id = ""
    status: Code = ""
    providerRef: Id = ""
    failureCode: Code = ""
    failureMessage: Notes = ""


class Payout(msgspec.Struct, omit_defaults=True):
    id: str
    amount: int
    currency: str
    status: str  # pending | in_transit | paid | failed | canceled
    destinationType: str
    destinationId: str
    created: str
    livemode: bool
    description: str | UnsetType = UNSET
    arrivalDate: str | UnsetType = UNSET
    providerRef: str | UnsetType = UNSET
    failureCode: str | UnsetType = UNSET  # with failureMessage, both or neither
    failureMessage: str | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET


# ---- bank-transfer instructions ----------------------------------------------------------


class InstructionCreateParams(Params):
    customerId: UserId = ""
    currency: Code = ""
    type: Code = ""  # ach | wire | sepa
    bankName: Name = ""
    accountHolder: Name = ""
    accountNumber: Code = ""
    routingNumber: Code = ""
    iban: Code = ""
    bic: Code = ""
    metadata: Metadata | None = None

    def __post_init__(self) -> None:
        require_small_json("metadata", self.metadata)


class InstructionListParams(Params):
    customerId: UserId = ""
    status: Code = ""
    limit: int = 0
    startingAfter: Id = ""



class Instruction(msgspec.Struct, omit_defaults=True):
    id: str
    customerId: str
    currency: str
    type: str
    reference: str
    bankName: str
    accountNumber: str  # masked: "****" + its last 4 characters
    status: str  # active | expired
    createdAt: str
    updatedAt: str
    livemode: bool
    accountHolder: str | UnsetType = UNSET
    routingNumber: str | UnsetType = UNSET  # masked
    iban: str | UnsetType = UNSET  # masked
    bic: str | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET


class InstructionList(msgspec.Struct):
    instructions: list[Instruction]
    count: int


# ---- reconciliation ----------------------------------------------------------------------


class TransferMatchParams(Params):
    reference: Id = ""
    amount: Int64 = 0
    currency: Code = ""
    # The bank's id of the transfer: the same transfer matched again answers the first
    # match (`duplicate`) and credits nothing more.
    transferId: Id = ""


class MatchTransaction(msgspec.Struct):
    id: str  # the ledger's transaction that credited the customer
    amount: int
    endingBalance: int  # the customer's balance after the credit
    type: str  # bank_transfer
    created: str


class TransferMatch(msgspec.Struct, omit_defaults=True):
    matched: bool
    reference: str
    customerId: str
    amount: int
    currency: str
    transferType: str
    transaction: MatchTransaction
    transferId: str | UnsetType = UNSET
    duplicate: bool = False  # this transfer had been matched before: nothing was credited


# ---- endpoints -------------------------------------------------------------------------

PAYOUT_CREATE = Endpoint("billing.payments.payout.create", PayoutCreateParams, Payout)
PAYOUT_LIST = Endpoint("billing.payments.payout.list", PayoutListParams, list[Payout])
PAYOUT_GET = Endpoint("billing.payments.payout.get", IdParams, Payout)
PAYOUT_CANCEL = Endpoint("billing.payments.payout.cancel", IdParams, Payout)
# Bus only (operators, back office): no HTTP route.
PAYOUT_SETTLE = Endpoint("billing.payments.payout.settle", PayoutSettleParams, Payout)

INSTRUCTION_CREATE = Endpoint("billing.payments.bank_transfer_instruction.create",
                              InstructionCreateParams, Instruction)
INSTRUCTION_LIST = Endpoint("billing.payments.bank_transfer_instruction.list",
                            InstructionListParams, InstructionList)
INSTRUCTION_GET = Endpoint("billing.payments.bank_transfer_instruction.get",
                           IdParams, Instruction)
TRANSFER_MATCH = Endpoint("billing.payments.bank_transfer.match", TransferMatchParams,
                          TransferMatch)
