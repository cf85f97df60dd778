"""Payments messages other services need before the payments service is built out."""

from __future__ import annotations

import msgspec

from contracts.common import Params
from contracts.endpoint import Endpoint
from contracts.limits import UserId


class PaymentMethodQuery(Params):
    customerId: UserId = ""
    verifiedOnly: bool = False


class PaymentMethodExists(msgspec.Struct):
    exists: bool


# ---- endpoints -----------------------------------------------------
# Not built yet: callers treat "no responders" as "no payment method".

PAYMENT_METHOD_EXISTS = Endpoint("billing.payments.payment_method.exists", PaymentMethodQuery,
                                 PaymentMethodExists)
