"""Identifiers and timestamps as they appear on the wire."""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime

# Every id on the wire is base62 in this alphabet (ids, event ids, API keys).
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


# Ids must be unique, not secret: a generator seeded once from the OS is enough, and it is
# several times cheaper than a system call per id (ids are made on every request).
_random = random.Random(os.urandom(16))


def uuid7_int() -> int:
    """A UUIDv7 as an integer: 48-bit millisecond timestamp, then random bits."""
    ms = time.time_ns() // 1_000_000
    rand = _random.getrandbits(80)
    value = (ms << 80) | rand
    # version 7 and RFC 4122 variant bits
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return value


def new_id(prefix: str = "") -> str:
    """Base62 of a UUIDv7: 22 characters, time-ordered, opaque to clients."""
    return prefix + base62(uuid7_int(), 22)


_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]  # two digits per division: half as many


def base62(n: int, width: int) -> str:
    """The `width` lowest base62 digits of `n`, most significant first."""
    out = []
    if width & 1:
        n, r = divmod(n, 62)
        out.append(ALPHABET[r])
    for _ in range(width >> 1):
        n, r = divmod(n, 62 * 62)
        out.append(_PAIRS[r])
    return "".join(reversed(out))


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(ts: datetime | None) -> str:
    """Go's rendering: UTC with `Z`, fractional seconds trimmed of trailing zeros."""
    if ts is None:
        return "0001-01-01T00:00:00Z"
    if ts.tzinfo is None or ts.utcoffset():  # naive: local time, as astimezone takes it
        ts = ts.astimezone(UTC)
    if ts.year < 1000:  # strftime's year is not zero-padded: kept as it was
        base = ts.strftime("%Y-%m-%dT%H:%M:%S")
        return (base + ("." + f"{ts.microsecond:06d}").rstrip("0")
                if ts.microsecond else base) + "Z"
    # isoformat takes half the time strftime does (an invoice renders a dozen of these), and
    # cutting its "+00:00" off less than a copy of the instant without its zone
    text = ts.isoformat()[:-6]  # YYYY-MM-DDTHH:MM:SS[.ffffff]
    return (text.rstrip("0") if ts.microsecond else text) + "Z"


def rfc3339_seconds(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
