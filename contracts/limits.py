"""Size limits of request fields and list pages, declared once for the gateway and every bus
caller (both decode params with these types, so both get the same 400).

Every bus message is capped by the NATS server (`max_payload`, 1 MB by default): a stored
value must be small enough that a whole page of the list showing it still fits in one reply.
Strings are bounded in characters (msgspec checks `max_length` while decoding, at no
measurable cost, so the hot paths keep their speed); free-form objects by key count while
decoding and by their size as stored JSON afterwards (`require_small_json`).

A character costs at most 6 bytes in a reply (a control character is written `\\u0001`).
The page sizes below are chosen so that a page of rows with every field at its limit, at
that worst case, stays well under 1 MB (tests/test_integrity_limits.py checks each list).
"""

from __future__ import annotations

import re
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
        return (self.default if limit <= 0 else min(limit, self.maximum)), max(offset, 0)


TRANSACTIONS_PAGE = Page(100, 100)  # notes, tags and metadata: up to ~9 KB a row
USAGE_PAGE = Page(100, 100)  # the same rows
CREDIT_GRANTS_PAGE = Page(200, 200)  # ~4 KB a row
SPEND_ALERTS_PAGE = Page(200, 200)  # ~3 KB a row
METERS_PAGE = Page(100, 100)  # ~8 KB a row (names and dimensions)
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
    size = len(_encode(value))
    if size <= limit:
        size += _jsonb_growth(value)
    if size > limit:
        raise ValueError(f"{field}: at most {limit} bytes as JSON")


def _jsonb_growth(value: Any) -> int:
    if isinstance(value, float):  # msgspec rejects NaN and infinities while decoding
        return max(len(format(Decimal(repr(value)), "f")) - len(repr(value)), 0)
    if isinstance(value, dict):
        return sum(_jsonb_growth(v) for v in value.values())
    if isinstance(value, list):
        return sum(_jsonb_growth(v) for v in value)
    return 0


# ---- reporting a limit -------------------------------------------------------------------

_UNITS = {"str": "characters", "array": "items", "object": "keys"}
_LENGTH = re.compile(
    r"^Expected `(str|array|object)` of length <= (\d+) - at (`key` in )?`\$\.?(.*)`$")
_OURS = re.compile(r"^([A-Za-z][\w.\[\]]*): (at most .*?)(?: - at `\$[^`]*`)?$")


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
