"""Size limits of request fields and list pages, declared once for the gateway and every bus
caller (both decode params with these types, so both get the same 400).

Every bus message is capped by the NATS server (`max_payload`, 1 MB by default): a stored
value must be small enough that a whole page of the list showing it still fits in one reply.
Strings are bounded in characters (msgspec checks `max_length` in C while decoding;
`bench/money.py` and `bench/ingest.py` showed no regression with the limits in place); free-form objects by key count while
decoding and by their size as stored JSON afterwards (`require_small_json`).

A character costs at most 6 bytes in a reply (a control character is written `\\u0001`).
The page sizes below are chosen so that a page of rows with every field at its limit, at
that worst case, stays well under 1 MB (tests/gateway/test_integrity_limits.py checks each
list).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, NamedTuple

import msgspec

ID_CHARS = 255  # ids, references, user ids, idempotency keys
NAME_CHARS = 255  # names, titles, event names, models, zones
CODE_CHARS = 64  # currencies, enumerations, timestamps, periods, durations
TAGS_CHARS = 100
NOTES_CHARS = 1000  # notes, descriptions
METADATA_KEYS = 50
METADATA_KEY_CHARS = 40
METADATA_BYTES = 2048  # as stored JSON
DIMENSIONS = 20  # a meter's dimension names
DIMENSION_CHARS = 40
METER_IDS = 100  # a credit grant's eligible meters
TIERS = 25  # a pricing rule's tiers
MAX_DEPTH = 32  # nesting of free-form values (metadata, dimensions): deeper is refused
OFFSET_MAX = 2**63 - 1  # a list's offset travels to PostgreSQL as a bigint

Id = Annotated[str, msgspec.Meta(max_length=ID_CHARS)]
UserId = Id
Name = Annotated[str, msgspec.Meta(max_length=NAME_CHARS)]
Code = Annotated[str, msgspec.Meta(max_length=CODE_CHARS)]
Tags = Annotated[str, msgspec.Meta(max_length=TAGS_CHARS)]
Notes = Annotated[str, msgspec.Meta(max_length=NOTES_CHARS)]
MeterIds = Annotated[list[Id], msgspec.Meta(max_length=METER_IDS)]
DimensionNames = Annotated[list[Annotated[str, msgspec.Meta(max_length=DIMENSION_CHARS)]],
                           msgspec.Meta(max_length=DIMENSIONS)]
# Free-form: checked again as a whole by `require_small_json` in the params' __post_init__.
Metadata = Annotated[dict[Annotated[str, msgspec.Meta(max_length=METADATA_KEY_CHARS)], Any],
                     msgspec.Meta(max_length=METADATA_KEYS)]


class Page(NamedTuple):
    """A list's `limit`: the default when none (or ≤ 0) is asked, and the most one page
    holds (a larger limit is capped, as lenient as the reference's parsing)."""

    default: int
    maximum: int

    def apply(self, limit: int, offset: int) -> tuple[int, int]:
        return ((self.default if limit <= 0 else min(limit, self.maximum)),
                min(max(offset, 0), OFFSET_MAX))


TRANSACTIONS_PAGE = Page(100, 100)  # notes, tags and metadata: up to ~9 KB a row
USAGE_PAGE = Page(100, 100)  # the same rows
CREDIT_GRANTS_PAGE = Page(200, 200)  # ~4 KB a row
SPEND_ALERTS_PAGE = Page(200, 200)  # ~3 KB a row
METERS_PAGE = Page(100, 100)  # ~8 KB a row (names and dimensions)
PRICING_RULES_PAGE = Page(100, 100)  # ~7 KB a row (ids, TIERS tiers)
JOURNAL_ENTRIES_PAGE = Page(100, 100)  # bus only, trusted callers; an entry may hold up to
# 1000 postings, so a page of large entries can still be refused with `reply_too_large`.


# ---- free-form objects -------------------------------------------------------------------

_encode = msgspec.json.Encoder().encode


def require_small_json(field: str, value: Any, limit: int = METADATA_BYTES) -> None:
    """Refuses (ValueError, which msgspec reports as a validation error) a free-form object
    larger than `limit` bytes as stored: jsonb writes numbers out in full, so `1e300` is
    counted as the 301 digits it comes back as."""
    if value is None:
        return
    encoded = _encode(value)
    require_shallow(field, value, encoded)
    size = len(encoded)
    if size <= limit:
        size += _jsonb_growth(value)
    if size > limit:
        raise ValueError(f"{field}: at most {limit} bytes as JSON")


def require_shallow(field: str, value: Any, encoded: bytes) -> None:
    """Refuses (ValueError) a free-form value nested deeper than MAX_DEPTH: deep nesting
    exhausts recursion wherever it is walked. `encoded` is the value as JSON: the nesting is
    walked only when it holds that many brackets (never, for the usual flat objects)."""
    if (encoded.count(b"{") + encoded.count(b"[") > MAX_DEPTH
            and _depth(value, MAX_DEPTH + 1) > MAX_DEPTH):
        raise ValueError(f"{field}: at most {MAX_DEPTH} levels of nesting")


def _depth(value: Any, stop: int) -> int:
    """Nesting depth of `value` (a scalar is 0), counted no further than `stop`."""
    if stop <= 0 or not isinstance(value, (dict, list)):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(v, stop - 1) for v in items), default=0)


def _jsonb_growth(value: Any) -> int:
    if isinstance(value, float):  # msgspec rejects NaN and infinities while decoding
        return max(len(format(Decimal(repr(value)), "f")) - len(repr(value)), 0)
    if isinstance(value, dict):
        return sum(_jsonb_growth(v) for v in value.values())
    if isinstance(value, list):
        return sum(_jsonb_growth(v) for v in value)
    return 0


def in_range(value: datetime) -> bool:
    """Whether an instant with an offset is one in UTC too: `0001-01-01T00:00:00+23:59` is
    not (it lies before year 1), and no arithmetic or storage can take it."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        return False
    return True


def require_instant(field: str, value: datetime | None) -> None:
    if value is not None and not in_range(value):
        raise ValueError(f"{field}: out of range")


# ---- reporting a limit -------------------------------------------------------------------

_UNITS = {"str": "characters", "array": "items", "object": "keys"}
_LENGTH = re.compile(
    r"^Expected `(str|array|object)` of length <= (\d+) - at (`key` in )?`\$\.?(.*)`$")
_OURS = re.compile(
    r"^([A-Za-z][\w.\[\]]*): (at most .*?|out of range)(?: - at `\$[^`]*`)?$")


def limit_exceeded(error: msgspec.ValidationError, prefix: str = "") -> tuple[str, str] | None:
    """(message, param) when `error` is a size limit refused while decoding, e.g.
    ("notes: at most 1000 characters", "notes"); None for any other validation error.
    `prefix` is dropped from field paths (`params.` in a bus request)."""
    text = str(error)
    match = _LENGTH.match(text)
    if match:
        kind, limit, key, path = match.groups()
        path = path.removeprefix(prefix)
        unit = "characters per key" if key else _UNITS[kind]
        return f"{path}: at most {limit} {unit}", path
    match = _OURS.match(text)
    if match:
        return f"{match[1]}: {match[2]}", match[1]
    return None
