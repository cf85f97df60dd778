"""Provider settings, pure: what an organization may store for a mode, how an update merges
into what is stored, how the credentials are sealed, and what a read shows (payments.md §1.3).
The provider accounts the settings name (Stripe's Connect account, Square's merchant) are
not secret: they say whose a provider webhook is when its URL names no organization (§5.5).
So a claim must be proven: the organization's own credentials of that provider and mode
must speak for the account (`claims_to_prove`, asked of the provider on save), else anyone
could claim another's account first and keep its owner out.

Credentials belong to the mode they are stored for: a test-mode caller stores Stripe test
keys and a Square sandbox, a live one live keys and Square production (§0.2 DO: one
authority for the charge and the ledger, so a sandbox charge never counts as live money)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import NamedTuple

import msgspec
from msgspec import UNSET, UnsetType

from contracts import ErrorCode
from contracts.errors import Failure, invalid, not_found
from contracts.ids import rfc3339
from contracts.payments import (
    ProviderSettings,
    ProviderSettingsParams,
    SquareSettings,
    SquareSettingsParams,
    StripeSettings,
    StripeSettingsParams,
)
from services.runtime.encryption import SecretBox, SecretsError

PROCESSORS = ("square", "stripe")
# Credentials travel in HTTP headers: printable ASCII, no spaces (no header injection).
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")
_STRIPE_ACCOUNT = re.compile(r"^acct_[A-Za-z0-9]+$")
_SQUARE_MERCHANT = re.compile(r"^[A-Za-z0-9]+$")

NO_KEY_TO_STORE = "provider credentials cannot be stored: BILLING_SECRETS_KEY is not set"
NO_KEY_TO_READ = "provider credentials cannot be read: BILLING_SECRETS_KEY is not set"
WRONG_KEY = "provider credentials cannot be read with the configured BILLING_SECRETS_KEY"


class _Secret(msgspec.Struct, frozen=True, omit_defaults=True):
    def __repr__(self) -> str:  # never a secret in a log line or a traceback
        return f"{type(self).__name__}(…)"


class StripeAccount(_Secret):
    secret_key: str
    publishable_key: str = ""
    webhook_secret: str = ""
    account_id: str = ""  # acct_…: its Connect events name it


class SquareAccount(_Secret):
    access_token: str
    location_id: str
    environment: str  # sandbox | production: the mode's
    webhook_signature_key: str = ""
    merchant_id: str = ""  # its events' `merchant_id`


class Credentials(_Secret):
    """The document sealed in a settings row."""

    stripe: StripeAccount | None = None
    square: SquareAccount | None = None


NONE = Credentials()


class Stored(NamedTuple):
    """An organization's settings in one mode, opened."""

    version: int  # -1: nothing stored
    preferred: str
    credentials: Credentials
    updated: datetime | None


NOTHING = Stored(-1, "", NONE, None)


# ---- an update ---------------------------------------------------------------------------


def require_change(p: ProviderSettingsParams) -> None:
    if p.stripe is None and p.square is None and p.preferredProcessor is UNSET:
        raise invalid("nothing to change: give stripe, square or preferredProcessor")


def preferred(given: str | UnsetType, current: str) -> str:
    if given is UNSET:
        return current
    name = given.strip().lower()
    if name and name not in PROCESSORS:
        raise invalid("preferredProcessor must be square or stripe", "preferredProcessor")
    return name


def merged(stored: Credentials, p: ProviderSettingsParams, livemode: bool) -> Credentials:
    """What is stored, with the given settings in place of their stored values."""
    mode = "live" if livemode else "test"
    return Credentials(
        stripe=stored.stripe if p.stripe is None else _stripe(stored.stripe, p.stripe, mode),
        square=stored.square if p.square is None else _square(stored.square, p.square, mode))


def accounts(credentials: Credentials) -> list[tuple[str, str]]:
    """(provider, account id) of each provider account the settings name."""
    stripe, square = credentials.stripe, credentials.square
    return [(provider, account) for provider, account in (
        ("stripe", stripe.account_id if stripe else ""),
        ("square", square.merchant_id if square else "")) if account]


def claims_to_prove(before: Credentials, after: Credentials) -> list[tuple[str, str]]:
    """(provider, account id) of each account the update claims anew, or claims with other
    credentials than the ones that proved it: the provider confirms these before the save."""
    claims = []
    for provider in PROCESSORS:
        claim = _claim(after, provider)
        if claim[0] and claim != _claim(before, provider):
            claims.append((provider, claim[0]))
    return claims


def _claim(credentials: Credentials, provider: str) -> tuple[str, str]:
    """(account id, the credential that proves it) of one provider's settings."""
    if provider == "stripe":
        stripe = credentials.stripe
        return (stripe.account_id, stripe.secret_key) if stripe else ("", "")
    square = credentials.square
    return (square.merchant_id, square.access_token) if square else ("", "")


def not_theirs(provider: str, account: str, livemode: bool) -> Failure:
    """The provider says the organization's credentials do not speak for the account."""
    what = "account" if provider == "stripe" else "merchant"
    field = "stripe.accountId" if provider == "stripe" else "square.merchantId"
    mode = "live" if livemode else "test"
    return invalid(f"the {provider} credentials of {mode} mode do not belong to {what} {account}",
                   field)


def without(stored: Credentials, provider: str) -> Credentials:
    if provider not in PROCESSORS:
        raise invalid("provider must be square or stripe", "provider")
    if getattr(stored, provider) is None:
        raise not_found(f"no {provider} settings")
    return msgspec.structs.replace(stored, **{provider: None})


def _stripe(old: StripeAccount | None, p: StripeSettingsParams, mode: str) -> StripeAccount:
    old = old or StripeAccount("")
    account = StripeAccount(
        secret_key=_setting(p.secretKey, old.secret_key, "stripe.secretKey",
                            (f"sk_{mode}_", f"rk_{mode}_")),
        publishable_key=_setting(p.publishableKey, old.publishable_key,
                                 "stripe.publishableKey", (f"pk_{mode}_",)),
        webhook_secret=_setting(p.webhookSecret, old.webhook_secret, "stripe.webhookSecret",
                                ("whsec_",)),
        account_id=_account(p.accountId, old.account_id, "stripe.accountId",
                            _STRIPE_ACCOUNT, "acct_ followed by letters and digits"))
    if not account.secret_key:
        if account.account_id:
            raise invalid("stripe.accountId needs stripe.secretKey: the organization's own"
                          f" key of {mode} mode proves the account is its", "stripe.secretKey")
        raise invalid("stripe.secretKey is required", "stripe.secretKey")
    return account


def _square(old: SquareAccount | None, p: SquareSettingsParams, mode: str) -> SquareAccount:
    environment = "sandbox" if mode == "test" else "production"
    if p.environment is not UNSET:
        given = p.environment.strip().lower()
        if given not in ("sandbox", "production"):
            raise invalid("square.environment must be sandbox or production",
                          "square.environment")
        if given != environment:
            raise invalid(f"square.environment must be {environment} in {mode} mode",
                          "square.environment")
    old = old or SquareAccount("", "", environment)
    account = SquareAccount(
        access_token=_setting(p.accessToken, old.access_token, "square.accessToken"),
        location_id=_setting(p.locationId, old.location_id, "square.locationId"),
        environment=environment,
        webhook_signature_key=_setting(p.webhookSignatureKey, old.webhook_signature_key,
                                       "square.webhookSignatureKey"),
        merchant_id=_account(p.merchantId, old.merchant_id, "square.merchantId",
                             _SQUARE_MERCHANT, "letters and digits"))
    if not account.access_token and account.merchant_id:
        raise invalid("square.merchantId needs square.accessToken: the organization's own"
                      f" token of {mode} mode proves the merchant is its", "square.accessToken")
    for value, field in ((account.access_token, "square.accessToken"),
                         (account.location_id, "square.locationId")):
        if not value:
            raise invalid(f"{field} is required", field)
    return account


def _setting(given: str | UnsetType, stored: str, field: str,
             prefixes: tuple[str, ...] = ()) -> str:
    """The given value, checked; the stored one when none is given."""
    if given is UNSET:
        return stored
    if not given:
        raise invalid(f"{field} must not be empty", field)
    if not _PRINTABLE.match(given):
        raise invalid(f"{field} must be printable ASCII without spaces", field)
    if prefixes and not given.startswith(prefixes):
        raise invalid(f"{field} must start with {' or '.join(prefixes)}", field)
    return given


def _account(given: str | UnsetType, stored: str, field: str, shape: re.Pattern,
             described: str) -> str:
    """A provider account id, checked; "" removes the stored one."""
    if given is UNSET:
        return stored
    if given and not shape.match(given):
        raise invalid(f"{field} must be {described}", field)
    return given


# ---- at rest -----------------------------------------------------------------------------


def _context(org_id: str, livemode: bool) -> str:
    """What a sealed document is bound to: its row's organization and mode."""
    return f"payments.provider_settings|{org_id}|{int(livemode)}"


def seal(box: SecretBox | None, org_id: str, livemode: bool,
         credentials: Credentials) -> tuple[str, bytes | None]:
    """(key id, sealed document); ("", None) when there is nothing to keep."""
    if credentials == NONE:
        return "", None
    if box is None:
        raise Failure(ErrorCode.UNAVAILABLE, 503, NO_KEY_TO_STORE)
    return box.seal(msgspec.json.encode(credentials), _context(org_id, livemode))


def unseal(box: SecretBox | None, org_id: str, livemode: bool, key_id: str,
           sealed: bytes | None) -> Credentials:
    if sealed is None:
        return NONE
    if box is None:
        raise Failure(ErrorCode.UNAVAILABLE, 503, NO_KEY_TO_READ)
    try:
        return msgspec.json.decode(box.open(key_id, sealed, _context(org_id, livemode)),
                                   type=Credentials)
    except SecretsError:
        raise Failure(ErrorCode.UNAVAILABLE, 503, WRONG_KEY) from None


# ---- a read ------------------------------------------------------------------------------


def view(livemode: bool, stored: Stored) -> ProviderSettings:
    """What an administrator sees: which secrets are set and their last 4 characters."""
    stripe, square = stored.credentials.stripe, stored.credentials.square
    return ProviderSettings(
        livemode=livemode, preferredProcessor=stored.preferred,
        stripe=None if stripe is None else StripeSettings(
            secretKeySet=True, secretKeyLast4=stripe.secret_key[-4:],
            publishableKey=stripe.publishable_key,
            webhookSecretSet=bool(stripe.webhook_secret), accountId=stripe.account_id),
        square=None if square is None else SquareSettings(
            accessTokenSet=True, accessTokenLast4=square.access_token[-4:],
            locationId=square.location_id, environment=square.environment,
            webhookSignatureKeySet=bool(square.webhook_signature_key),
            merchantId=square.merchant_id),
        updated=rfc3339(stored.updated) if stored.updated else None)
