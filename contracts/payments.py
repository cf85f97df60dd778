"""Payments messages other services need before the payments service is built out."""

from __future__ import annotations

import msgspec

from contracts.ledger import Params
from contracts.limits import UserId


class PaymentMethodQuery(Params):
    customerId: UserId = ""
    verifiedOnly: bool = False


class PaymentMethodExists(msgspec.Struct):
    exists: bool
