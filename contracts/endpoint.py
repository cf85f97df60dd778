"""An endpoint: one request/reply subject with its params and result types, declared once
next to its structs (`DEPOSIT = Endpoint("billing.ledger.deposit.create", DepositParams,
DepositResult)`). The service registers its handler on it, the gateway routes to it, and
callers ask it (`ctx.ask(DEPOSIT, scope, params) -> DepositResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec

P = TypeVar("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Endpoint(Generic[P, R]):
    subject: str  # billing.<service>.<resource>.<action>; queue group = service
    params: type[P]  # a contracts Params struct
    result: Any  # a msgspec Struct, list[Struct], or None (no body)
    # Built once per endpoint: how a caller decodes the reply's result.
    decode_result: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        decode = None if self.result is None else msgspec.json.Decoder(self.result).decode
        object.__setattr__(self, "decode_result", decode)
