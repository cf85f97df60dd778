"""Secrets at rest (services/runtime/encryption.py): sealed for a context, opened only with
the key that sealed them and for the same context; keys rotate."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.fernet import Fernet

from services.runtime.encryption import SecretBox, SecretsError, new_key


def test_sealed_values_open_for_their_context_only():
    box = SecretBox.from_setting(new_key())
    key_id, sealed = box.seal(b"sk_test_secret", "org_1|0")
    assert b"sk_test_secret" not in sealed
    assert box.open(key_id, sealed, "org_1|0") == b"sk_test_secret"
    assert box.seal(b"sk_test_secret", "org_1|0")[1] != sealed  # a fresh nonce each time
    for context in ("org_2|0", "org_1|1"):
        with pytest.raises(SecretsError):
            box.open(key_id, sealed, context)
    with pytest.raises(SecretsError):
        box.open(key_id, sealed[:-1] + bytes([sealed[-1] ^ 1]), "org_1|0")  # altered


def test_keys_rotate_and_a_missing_key_is_named():
    old, new = new_key(), new_key()
    key_id, sealed = SecretBox.from_setting(old).seal(b"whsec_1", "c")
    rotated = SecretBox.from_setting(f"{new}, {old}")
    assert rotated.open(key_id, sealed, "c") == b"whsec_1"
    assert rotated.seal(b"x", "c")[0] != key_id  # the first key seals
    with pytest.raises(SecretsError, match="not configured"):
        SecretBox.from_setting(new).open(key_id, sealed, "c")


def test_key_formats():
    assert SecretBox.from_setting("") is None and SecretBox.from_setting(" , ") is None
    raw = os.urandom(32)
    for text in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(),
                 Fernet.generate_key().decode()):
        assert SecretBox.from_setting(text) is not None
        box = SecretBox.from_setting(text)
        assert box.open(*box.seal(b"sk", "c"), "c") == b"sk"
    # Standard and URL-safe base64 of one key are the same key.
    key_id, sealed = SecretBox.from_setting(base64.b64encode(raw).decode()).seal(b"sk", "c")
    assert SecretBox.from_setting(base64.urlsafe_b64encode(raw).decode()).open(
        key_id, sealed, "c") == b"sk"
    for bad in ("short", base64.b64encode(os.urandom(16)).decode(), "not base64 at all!"):
        with pytest.raises(ValueError, match="32 bytes"):
            SecretBox.from_setting(bad)
