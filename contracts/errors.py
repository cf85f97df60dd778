"""Failures a service reports to its caller, as exceptions the runtime turns into `BusError`s."""

from __future__ import annotations

from typing import Any

from contracts import BusError, ErrorCode


class Failure(Exception):
    """Raise from domain or handler code; the runtime replies with `self.error`.

    `retryable`: the outcome depends on something that may change by itself (a dependency
    that did not answer), so it is never stored under an idempotency key."""

    def __init__(self, code: str, status: int, message: str, *, param: str | None = None,
                 details: dict[str, Any] | None = None, retryable: bool = False):
        super().__init__(message)
        self.error = BusError(code=code, status=status, message=message, param=param,
                              retryable=retryable, details=details)

    @classmethod
    def of(cls, error: BusError) -> Failure:
        """Another service's refusal, raised again by its caller."""
        return cls(error.code, error.status, error.message, param=error.param,
                   details=error.details, retryable=error.retryable)


def invalid(message: str, param: str | None = None) -> Failure:
    return Failure(ErrorCode.INVALID_REQUEST, 400, message, param=param)


def forbidden(message: str = "Token doesn't support this scope", *,
              retryable: bool = False) -> Failure:
    return Failure(ErrorCode.FORBIDDEN, 403, message, retryable=retryable)


def not_found(message: str) -> Failure:
    return Failure(ErrorCode.NOT_FOUND, 404, message)


def payment_required(message: str) -> Failure:
    return Failure(ErrorCode.PAYMENT_REQUIRED, 402, message)


def conflict(message: str) -> Failure:
    return Failure(ErrorCode.CONFLICT, 409, message)


def unavailable() -> Failure:
    return Failure(ErrorCode.UNAVAILABLE, 503, "service unavailable")


INTERNAL_MESSAGE = "Unable to process request. Please try again later."


def internal() -> BusError:
    return BusError(code=ErrorCode.INTERNAL, status=500, message=INTERNAL_MESSAGE)
