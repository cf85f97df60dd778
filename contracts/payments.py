"""Payments messages: payment methods, payment intents, setup intents and refunds
(payments.md §2.1–§2.4, §3, §4.1–§4.2, §4.4), the payment-method lookup the ledger asks for,
top-ups (§4.3), an organization's provider settings (§1.3) and card tokenization (§4.9).

Field names are the reference's JSON names. Response fields the reference emits only when
non-empty are `UNSET` until set (msgspec leaves them out)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from contracts.common import IdParams, Int64, Params
from contracts.endpoint import Endpoint
from contracts.limits import Code, Id, Metadata, Name, Notes, UserId, require_small_json

# ---- shared shapes ---------------------------------------------------------------------


class Card(msgspec.Struct, omit_defaults=False):
    """What we keep of a card: never its number or security code."""

    brand: Code = ""
    last4: Code = ""
    expMonth: int = 0
    expYear: int = 0
    funding: Code | UnsetType = UNSET
    country: Code | UnsetType = UNSET


class BankAccount(msgspec.Struct, omit_defaults=True):
    last4: Code = ""
    bankName: Name = ""
    routingNumber: Code = ""
    accountType: Code = ""


class BillingAddress(msgspec.Struct, omit_defaults=True):
    name: Name = ""
    line1: Name = ""
    line2: Name = ""
    city: Name = ""
    state: Name = ""
    postalCode: Code = ""
    country: Code = ""


# ---- payment methods -------------------------------------------------------------------


class PaymentMethodQuery(Params):
    customerId: UserId = ""
    verifiedOnly: bool = False


class PaymentMethodExists(msgspec.Struct):
    exists: bool


class PaymentMethodCreateParams(Params):
    customerId: UserId = ""
    type: Code = ""
    card: Card | None = None
    bankAccount: BankAccount | None = None
    billingAddress: BillingAddress | None = None
    providerRef: Id = ""  # a provider token: the provider vaults it, we keep its reference
    providerType: Code = ""
    metadata: Metadata | None = None

    def __post_init__(self) -> None:
        require_small_json("metadata", self.metadata)


class PaymentMethodListParams(Params):
    customerId: UserId = ""
    user: UserId = ""  # alias of customerId
    type: Code = ""
    limit: int = 0  # ≤ 0: 100; at most 1000
    startingAfter: Id = ""



class PaymentMethodUpdateParams(Params):
    id: Id = ""  # from the path
    billingAddress: BillingAddress | None = None  # replaces the whole address
    metadata: Metadata | None = None  # merged; a key set to null is removed

    def __post_init__(self) -> None:
        require_small_json("metadata", self.metadata)


class DefaultPaymentMethodParams(Params):
    id: UserId = ""  # the customer, from the path
    paymentMethodId: Id = ""


class PaymentMethod(msgspec.Struct, omit_defaults=True):
    id: str
    customerId: str
    type: str
    isDefault: bool
    created: str
    livemode: bool
    metadata: dict[str, Any]
    name: str | UnsetType = UNSET
    card: Card | UnsetType = UNSET
    bankAccount: BankAccount | UnsetType = UNSET
    billingAddress: BillingAddress | UnsetType = UNSET
    providerRef: str | UnsetType = UNSET


# The billing events announcing a payment method's changes (`billing.events.<type>`); each
# event's `data` is the PaymentMethod after the change (`metadata.verified` once a provider
# accepted it). The ledger's status check keeps itself current from them.
PAYMENT_METHOD_ATTACHED = "payment_method.attached"
PAYMENT_METHOD_UPDATED = "payment_method.updated"  # its metadata, address, or verification
PAYMENT_METHOD_DETACHED = "payment_method.detached"  # final: a detached method never returns


class Deleted(msgspec.Struct):
    deleted: bool
    id: str


# ---- payment intents -------------------------------------------------------------------


class PaymentIntentCreateParams(Params):
    customerId: UserId = ""
    amount: Int64 = 0
    currency: Code = ""
    paymentMethodId: Id = ""
    captureMethod: Code = ""
    confirmationMethod: Code = ""
    setupFutureUsage: Code = ""
    description: Notes = ""
    receiptEmail: Name = ""
    invoiceId: Id = ""
    metadata: Metadata | None = None

    def __post_init__(self) -> None:
        require_small_json("metadata", self.metadata)


class PaymentIntentListParams(Params):
    customerId: UserId = ""
    limit: int = 0
    startingAfter: Id = ""



class PaymentIntentConfirmParams(Params):
    id: Id = ""
    paymentMethodId: Id = ""  # replaces the stored one when given


class PaymentIntentCaptureParams(Params):
    id: Id = ""
    amountToCapture: Int64 = 0  # ≤ 0: everything capturable


class PaymentIntentCancelParams(Params):
    id: Id = ""
    cancellationReason: Notes = ""


class PaymentIntent(msgspec.Struct, omit_defaults=True):
    id: str
    customerId: str
    amount: int
    currency: str
    status: str
    captureMethod: str
    confirmationMethod: str
    amountCapturable: int
    amountReceived: int
    amountRefunded: int  # what succeeded refunds gave back (additive, §4.4 DO)
    created: str
    livemode: bool
    paymentMethodId: str | UnsetType = UNSET
    invoiceId: str | UnsetType = UNSET
    description: str | UnsetType = UNSET
    providerRef: str | UnsetType = UNSET
    lastError: str | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET
    canceledAt: str | UnsetType = UNSET
    cancellationReason: str | UnsetType = UNSET
    clientSecret: str | UnsetType = UNSET


# ---- refunds ---------------------------------------------------------------------------


class RefundCreateParams(Params):
    paymentIntentId: Id = ""  # takes precedence over invoiceId
    invoiceId: Id = ""
    amount: Int64 = 0  # ≤ 0: what is left to refund
    reason: Code = ""  # duplicate | fraudulent | requested_by_customer


class RefundListParams(Params):
    paymentIntentId: Id = ""
    invoiceId: Id = ""
    limit: int = 0
    startingAfter: Id = ""



class Refund(msgspec.Struct, omit_defaults=True):
    id: str
    amount: int
    currency: str
    status: str  # pending | succeeded | failed
    created: str
    livemode: bool
    paymentIntentId: str | UnsetType = UNSET
    invoiceId: str | UnsetType = UNSET
    reason: str | UnsetType = UNSET
    providerRef: str | UnsetType = UNSET
    failureReason: str | UnsetType = UNSET


# ---- setup intents ---------------------------------------------------------------------


class SetupIntentCreateParams(Params):
    customerId: UserId = ""
    paymentMethodId: Id = ""
    usage: Code = ""  # on_session | off_session (default)



class SetupIntentConfirmParams(Params):
    id: Id = ""
    paymentMethodId: Id = ""  # replaces the stored one when given


class SetupIntentCancelParams(Params):
    id: Id = ""
    cancellationReason: Notes = ""


class SetupIntent(msgspec.Struct, omit_defaults=True):
    id: str
    customerId: str
    status: str
    usage: str
    created: str
    livemode: bool
    paymentMethodId: str | UnsetType = UNSET
    providerRef: str | UnsetType = UNSET
    lastError: str | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET
    canceledAt: str | UnsetType = UNSET
    cancellationReason: str | UnsetType = UNSET


# ---- provider settings (per organization and mode) --------------------------------------
# Secrets are write-only: a read says whether each is set, and a secret's last 4 characters.
# A setting left out of an update keeps its stored value.


class StripeSettingsParams(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    secretKey: Id | UnsetType = UNSET  # sk_test_… / sk_live_… (or rk_…), as the mode
    publishableKey: Id | UnsetType = UNSET  # pk_test_… / pk_live_…
    webhookSecret: Id | UnsetType = UNSET  # whsec_…
    # Not secret: the account (acct_…) whose events reach the URL without an organization
    # (payments.md §5.5), accepted once the secret key proves it acts for it; "" removes it.
    accountId: Id | UnsetType = UNSET

    def __repr__(self) -> str:  # never a secret in a log line or a traceback
        return "StripeSettingsParams(…)"


class SquareSettingsParams(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    accessToken: Id | UnsetType = UNSET
    locationId: Id | UnsetType = UNSET
    environment: Code | UnsetType = UNSET  # sandbox (test mode) | production (live mode)
    webhookSignatureKey: Id | UnsetType = UNSET
    merchantId: Id | UnsetType = UNSET  # as Stripe's accountId: proven by the access token

    def __repr__(self) -> str:
        return "SquareSettingsParams(…)"


class ProviderSettingsParams(Params):
    stripe: StripeSettingsParams | None = None
    square: SquareSettingsParams | None = None
    preferredProcessor: Code | UnsetType = UNSET  # square | stripe | "" (none)


class ProviderSettingsQuery(Params):
    pass


class ProviderSettingsDeleteParams(Params):
    provider: Code = ""  # from the path: stripe | square


class StripeSettings(msgspec.Struct):
    secretKeySet: bool
    secretKeyLast4: str
    publishableKey: str  # public by design (it is embedded in browsers)
    webhookSecretSet: bool
    accountId: str = ""


class SquareSettings(msgspec.Struct):
    accessTokenSet: bool
    accessTokenLast4: str
    locationId: str
    environment: str
    webhookSignatureKeySet: bool
    merchantId: str = ""


class ProviderSettings(msgspec.Struct):
    """An organization's provider settings in one mode (null: none stored)."""

    livemode: bool
    preferredProcessor: str
    stripe: StripeSettings | None = None
    square: SquareSettings | None = None
    updated: str | None = None


# ---- card tokenization -----------------------------------------------------------------

CARD_BODY_BYTES = 4096  # §4.9 DO: a larger body is refused before it is decoded
CardText = Annotated[str, msgspec.Meta(max_length=CARD_BODY_BYTES)]


class CardTokenizeParams(Params):
    """A raw card (§4.9): checked, then refused; never stored, forwarded or logged."""

    number: CardText = ""
    expiry_month: CardText = ""
    expiry_year: CardText = ""
    cvc: CardText = ""
    name: CardText = ""
    zip: CardText = ""

    def __repr__(self) -> str:  # never a card in a log line or a traceback
        return "CardTokenizeParams(…)"


# ---- endpoints -------------------------------------------------------------------------

PAYMENT_METHOD_EXISTS = Endpoint("billing.payments.payment_method.exists", PaymentMethodQuery,
                                 PaymentMethodExists)
PAYMENT_METHOD_CREATE = Endpoint("billing.payments.payment_method.create",
                                 PaymentMethodCreateParams, PaymentMethod)
PAYMENT_METHOD_LIST = Endpoint("billing.payments.payment_method.list",
                               PaymentMethodListParams, list[PaymentMethod])
PAYMENT_METHOD_GET = Endpoint("billing.payments.payment_method.get", IdParams,
                              PaymentMethod)
PAYMENT_METHOD_UPDATE = Endpoint("billing.payments.payment_method.update",
                                 PaymentMethodUpdateParams, PaymentMethod)
PAYMENT_METHOD_DETACH = Endpoint("billing.payments.payment_method.detach",
                                 IdParams, Deleted)
PAYMENT_METHOD_SET_DEFAULT = Endpoint("billing.payments.payment_method.set_default",
                                      DefaultPaymentMethodParams, PaymentMethod)

PAYMENT_INTENT_CREATE = Endpoint("billing.payments.payment_intent.create",
                                 PaymentIntentCreateParams, PaymentIntent)
PAYMENT_INTENT_LIST = Endpoint("billing.payments.payment_intent.list",
                               PaymentIntentListParams, list[PaymentIntent])
PAYMENT_INTENT_GET = Endpoint("billing.payments.payment_intent.get", IdParams,
                              PaymentIntent)
PAYMENT_INTENT_CONFIRM = Endpoint("billing.payments.payment_intent.confirm",
                                  PaymentIntentConfirmParams, PaymentIntent)
PAYMENT_INTENT_CAPTURE = Endpoint("billing.payments.payment_intent.capture",
                                  PaymentIntentCaptureParams, PaymentIntent)
PAYMENT_INTENT_CANCEL = Endpoint("billing.payments.payment_intent.cancel",
                                 PaymentIntentCancelParams, PaymentIntent)

REFUND_CREATE = Endpoint("billing.payments.refund.create", RefundCreateParams, Refund)
REFUND_LIST = Endpoint("billing.payments.refund.list", RefundListParams, list[Refund])
REFUND_GET = Endpoint("billing.payments.refund.get", IdParams, Refund)

SETUP_INTENT_CREATE = Endpoint("billing.payments.setup_intent.create", SetupIntentCreateParams,
                               SetupIntent)
SETUP_INTENT_GET = Endpoint("billing.payments.setup_intent.get", IdParams,
                            SetupIntent)
SETUP_INTENT_CONFIRM = Endpoint("billing.payments.setup_intent.confirm",
                                SetupIntentConfirmParams, SetupIntent)
SETUP_INTENT_CANCEL = Endpoint("billing.payments.setup_intent.cancel", SetupIntentCancelParams,
                               SetupIntent)

PROVIDER_SETTINGS_GET = Endpoint("billing.payments.provider_settings.get",
                                 ProviderSettingsQuery, ProviderSettings)
PROVIDER_SETTINGS_UPDATE = Endpoint("billing.payments.provider_settings.update",
                                    ProviderSettingsParams, ProviderSettings)
PROVIDER_SETTINGS_DELETE = Endpoint("billing.payments.provider_settings.delete",
                                    ProviderSettingsDeleteParams, ProviderSettings)

# Always refused once the card passes the checks (§4.9): the result is never produced.
CARD_TOKENIZE = Endpoint("billing.payments.card.tokenize", CardTokenizeParams, None)


# ---- top-ups (§4.3) ------------------------------------------------------------------


class TopupParams(Params):
    """`POST /topup` (admin): charge a saved payment method, then credit the balance."""

    userId: UserId = ""
    paymentMethodId: Id = ""
    amountCents: Int64 = 0
    currency: Code = ""


class TopupTokenParams(Params):
    """`POST /topup/token` (user): charge a one-time token (a Web Payments nonce)."""

    sourceId: Id = ""
    amountCents: Int64 = 0
    userId: UserId = ""  # ignored for end users: they credit themselves
    currency: Code = ""


class TopupResult(msgspec.Struct):
    transactionId: str  # the ledger's transaction
    balanceCents: int  # the balance after the credit
    status: str = "ok"


TOPUP_SAVED_METHOD = Endpoint("billing.payments.topup.saved_method", TopupParams, TopupResult)
TOPUP_TOKEN = Endpoint("billing.payments.topup.token", TopupTokenParams, TopupResult)


# ---- capabilities (subscriptions.md §3.7) --------------------------------------------------


class CapabilitiesQuery(Params):
    pass


class Capabilities(msgspec.Struct):
    """What the platform advertises, verbatim as the reference does (more than it serves:
    clients depend on the payload, not on its truth)."""

    paymentMethods: list[str]
    currencies: list[str]
    features: list[str]
    billingModels: list[str]
    taxCalculation: bool
    bankTransferReconciliation: bool


CAPABILITIES_GET = Endpoint("billing.payments.capabilities.get", CapabilitiesQuery,
                            Capabilities)
