"""Base types every contracts module builds on: request params and int64 amounts."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from contracts.limits import Id

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # what Go and JavaScript clients can read
Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
Metadata = dict[str, Any]  # as replies carry it; requests take limits.Metadata (bounded)


class Params(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Base for request params. Unknown fields are refused here so the gateway can notice
    them and retry with case-folded keys (the reference's decoder matched keys
    case-insensitively); after folding, leftovers are dropped."""


class IdParams(Params):
    """An object named by its id (from the path)."""

    id: Id = ""
