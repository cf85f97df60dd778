"""Secrets at rest: AES-256-GCM under the platform's key (`BILLING_SECRETS_KEY`).

The key is 32 random bytes in base64 (standard or URL-safe: a Fernet key works too). Several
keys may be given, comma-separated, to rotate: the first seals, every one opens what it
sealed (a sealed value names its key by `key_id`). Each value is sealed for a `context` (its
owner, e.g. the organization and mode of a row): a ciphertext copied to another row does not
open there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
_NONCE_BYTES = 12


class SecretsError(Exception):
    """A sealed value that cannot be opened: no key with its id, or not sealed by it."""


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()


def _key(text: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.strip().replace("+", "-").replace("/", "_"))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ValueError(f"BILLING_SECRETS_KEY: each key must be {KEY_BYTES} bytes in base64")
    return raw


class SecretBox:
    def __init__(self, keys: list[bytes]):
        # The id is a digest of the key: it names the key without revealing it.
        self._keys = {hashlib.sha256(k).hexdigest()[:16]: AESGCM(k) for k in keys}
        self._sealing = next(iter(self._keys))

    @classmethod
    def from_setting(cls, value: str) -> SecretBox | None:
        """The box of `BILLING_SECRETS_KEY`; None when it is not set. A malformed key is a
        ValueError (the service does not start with it)."""
        keys = [_key(k) for k in value.split(",") if k.strip()]
        return cls(keys) if keys else None

    def seal(self, plaintext: bytes, context: str) -> tuple[str, bytes]:
        """(key id, nonce + ciphertext)."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[self._sealing].encrypt(nonce, plaintext, context.encode())
        return self._sealing, nonce + sealed

    def open(self, key_id: str, sealed: bytes, context: str) -> bytes:
        aead = self._keys.get(key_id)
        if aead is None:
            raise SecretsError("sealed with a key that is not configured")
        try:
            return aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], context.encode())
        except InvalidTag:
            raise SecretsError("not sealed for this context, or altered") from None
