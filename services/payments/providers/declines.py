"""What a customer is told when a card is declined (payments.md §1.10), for every provider.

Each provider maps its own codes (Stripe's `decline_code`/`code`, Square's `errors[].code`)
to these messages; a code its table does not know falls back to §1.10's substring rules.
The texts are the spec's, exactly (the dash is U+2014).
"""

from __future__ import annotations

from collections.abc import Mapping

INSUFFICIENT = "Card declined — insufficient funds."
LIMIT = "Card declined — transaction limit reached. Please try a different card."
ADDRESS = ("Card declined — billing address does not match. "
           "Please check your address and try again.")
CVC = "Card declined — incorrect security code (CVV)."
EXPIRED = "Card declined — card is expired."
INVALID_NUMBER = "Card declined — invalid card number."
CONTACT_BANK = "Card declined — please contact your bank."
BANK = "Card declined by your bank. Please try a different card or contact your bank."
DECLINED = "Card declined. Please try a different card."
UNVERIFIED = "Unable to verify card. Please try again or use a different card."

# §1.10's rules, first match wins, on the lower-cased code.
_RULES = (
    (("insufficient_funds",), INSUFFICIENT),
    (("transaction_limit",), LIMIT),
    (("address_verification_failure", "avs_rejected"), ADDRESS),
    (("cvv", "cvc"), CVC),
    (("expired",), EXPIRED),
    (("invalid_card", "invalid_account"), INVALID_NUMBER),
    (("stolen", "lost"), CONTACT_BANK),
    (("do_not_honor", "generic_decline"), BANK),
)


def decline_message(codes: tuple[str | None, ...], known: Mapping[str, str]) -> str:
    """The message for a decline reported with `codes` (most specific first): a code of the
    provider's table `known` (lower-case keys), else §1.10's rules on the first code."""
    for code in codes:
        if code and code.lower() in known:
            return known[code.lower()]
    first = next((code.lower() for code in codes if code), "")
    for needles, message in _RULES:
        if any(n in first for n in needles):
            return message
    return DECLINED if first else UNVERIFIED
