"""A local server speaking Square's v2 wire format, for the Square adapter's tests.

It checks what Square checks (Bearer token, `Square-Version`, JSON bodies, idempotency keys
of at most 45 characters, our location) and keeps Square's idempotency: the same key with the
same body answers the recorded response again, with another body `IDEMPOTENCY_KEY_REUSED`.
Responses are built from `fixtures/square/*.json`, trimmed copies of the examples in Square's
published OpenAPI document (square/connect-api-specification, api.json), with the ids,
statuses and amounts of the simulated objects written in.

Declines come from Square's sandbox test nonces (`cnon:card-nonce-declined`, …) or from a
queued fault; faults also give 5xx answers and responses slower than the client's timeout.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from aiohttp import web

FIXTURES = Path(__file__).parent / "fixtures" / "square"
CATEGORIES: dict[str, str] = json.loads((FIXTURES / "error_categories.json").read_text())

# Square's sandbox test nonces and the error each one produces.
NONCE_ERRORS = {
    "cnon:card-nonce-declined": "CARD_DECLINED",
    "cnon:card-nonce-rejected-cvv": "CVV_FAILURE",
    "cnon:card-nonce-rejected-postalcode": "ADDRESS_VERIFICATION_FAILURE",
    "cnon:card-nonce-rejected-expiration": "INVALID_EXPIRATION",
}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def error_body(code: str, detail: str = "", field: str = "") -> dict:
    err = {"code": code, "detail": detail or f"Authorization error: '{code}'",
           "category": CATEGORIES[code]}
    if field:
        err["field"] = field
    return {"errors": [err]}


def _id(prefix: str, key: str) -> str:
    return prefix + hashlib.sha256(key.encode()).hexdigest()[:24]


class FakeSquare:
    def __init__(self, token: str = "EAAAl-test-token", location_id: str = "L88917AVBK2S5",
                 merchant_id: str = "MLQ4D9AZGT7XS"):
        self.token = token
        self.location_id = location_id
        self.merchant_id = merchant_id  # the merchant the token belongs to
        self.requests: list[dict[str, Any]] = []  # every request as received
        self.problems: list[str] = []  # wire-format violations (a test fails on any)
        self.payments: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self.cards: dict[str, dict] = {}
        self.faults: list[tuple[str, str, Any]] = []  # (method, path regex, fault), once each
        self._replies: dict[tuple[str, str], tuple[Any, int, dict]] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- the test's controls ---------------------------------------------------------------

    def fail(self, method: str, path: str, fault: Any) -> None:
        """The next matching request gets `fault`: an HTTP status (5xx: Square's API_ERROR
        body), an error code (4xx as Square answers it), or `"timeout"` (no answer in time)."""
        self.faults.append((method, path, fault))

    def calls(self, method: str, path: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and re.fullmatch(path, r["path"])]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- transport -------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                self.problems.append(f"{request.method} {request.path}: body is not JSON")
                return web.json_response(error_body("BAD_REQUEST", "not JSON"), status=400)
        self.requests.append({"method": request.method, "path": request.path,
                              "headers": dict(request.headers), "body": body})
        problem = self._check_headers(request, body)
        if problem:
            self.problems.append(problem)
            return web.json_response(error_body("UNAUTHORIZED", problem), status=401)
        for i, (method, path, fault) in enumerate(self.faults):
            if method == request.method and re.fullmatch(path, request.path):
                del self.faults[i]
                if fault == "timeout":
                    await asyncio.sleep(3)
                    break  # answers after the client gave up (the work is still done)
                if isinstance(fault, int):
                    code = {503: "SERVICE_UNAVAILABLE", 429: "RATE_LIMITED"}.get(
                        fault, "INTERNAL_SERVER_ERROR")
                    return web.json_response(error_body(code, "fault"), status=fault,
                                             headers={"Retry-After": "1"})
                return web.json_response(error_body(fault), status=400)
        for method, pattern, handler in self._routes():
            m = re.fullmatch(pattern, request.path)
            if m and method == request.method:
                status, answer = handler(body or {}, *m.groups())
                return web.json_response(answer, status=status)
        return web.json_response(error_body("NOT_FOUND", "no such route"), status=404)

    def _check_headers(self, request: web.Request, body: Any) -> str:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return "missing or wrong Bearer token"
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", request.headers.get("Square-Version", "")):
            return "missing Square-Version"
        if body is not None and not request.headers.get("Content-Type", "").startswith(
                "application/json"):
            return "body without Content-Type application/json"
        if isinstance(body, dict) and "idempotency_key" in body:
            key = body["idempotency_key"]
            if not isinstance(key, str) or not 1 <= len(key) <= 45:
                return f"idempotency_key must be 1..45 characters: {key!r}"
        return ""

    def _idempotent(self, endpoint: str, body: dict, make) -> tuple[int, dict]:
        key = body.get("idempotency_key")
        if not key:
            return 400, error_body("MISSING_REQUIRED_PARAMETER", "idempotency_key",
                                   "idempotency_key")
        seen = self._replies.get((endpoint, key))
        if seen is not None:
            if seen[0] != body:
                return 400, error_body("IDEMPOTENCY_KEY_REUSED", "key reused with another body")
            return seen[1], copy.deepcopy(seen[2])
        status, answer = make()
        self._replies[(endpoint, key)] = (copy.deepcopy(body), status, copy.deepcopy(answer))
        return status, answer

    def _routes(self):
        return (
            ("POST", r"/v2/payments", self._create_payment),
            ("GET", r"/v2/payments/([^/]+)", self._get_payment),
            ("PUT", r"/v2/payments/([^/]+)", self._update_payment),
            ("POST", r"/v2/payments/([^/]+)/complete", self._complete_payment),
            ("POST", r"/v2/payments/([^/]+)/cancel", self._cancel_payment),
            ("POST", r"/v2/refunds", self._refund_payment),
            ("GET", r"/v2/refunds/([^/]+)", self._get_refund),
            ("POST", r"/v2/customers", self._create_customer),
            ("POST", r"/v2/cards", self._create_card),
            ("POST", r"/v2/cards/([^/]+)/disable", self._disable_card),
            ("GET", r"/v2/merchants/([^/]+)", self._get_merchant),
        )

    # -- Merchants API ---------------------------------------------------------------------

    def _get_merchant(self, body: dict, merchant_id: str) -> tuple[int, dict]:
        """`me` is the token's merchant; another merchant's id is not found to this token."""
        if merchant_id not in ("me", self.merchant_id):
            return 404, error_body("NOT_FOUND", "merchant not found")
        answer = fixture("retrieve_merchant")
        answer["merchant"].update(id=self.merchant_id, main_location_id=self.location_id)
        return 200, answer

    # -- Payments API ----------------------------------------------------------------------

    def _money_problem(self, money: Any) -> str:
        if not isinstance(money, dict) or not isinstance(money.get("amount"), int):
            return "amount_money.amount"
        if not re.fullmatch(r"[A-Z]{3}", str(money.get("currency", ""))):
            return "amount_money.currency"
        return ""

    def _create_payment(self, body: dict) -> tuple[int, dict]:
        def make() -> tuple[int, dict]:
            field = self._money_problem(body.get("amount_money"))
            if field or not body.get("source_id"):
                return 400, error_body("INVALID_VALUE", "bad request", field or "source_id")
            if body.get("location_id") != self.location_id:
                return 400, error_body("NOT_FOUND", "location", "location_id")
            code = NONCE_ERRORS.get(body["source_id"])
            if code:
                return 400, error_body(code)
            auto = body.get("autocomplete", True)
            payment = fixture("create_payment" if auto else "update_payment")["payment"]
            money = body["amount_money"]
            payment.update(id=_id("pay", body["idempotency_key"]),
                           status="COMPLETED" if auto else "APPROVED",
                           amount_money=dict(money), approved_money=dict(money),
                           total_money=dict(money), location_id=self.location_id)
            for field in ("customer_id", "reference_id", "note"):
                payment.pop(field, None)
                if body.get(field):
                    payment[field] = body[field]
            self.payments[payment["id"]] = payment
            return 200, {"payment": copy.deepcopy(payment)}
        return self._idempotent("CreatePayment", body, make)

    def _get_payment(self, body: dict, payment_id: str) -> tuple[int, dict]:
        payment = self.payments.get(payment_id)
        if payment is None:
            return 404, error_body("NOT_FOUND", "payment not found")
        return 200, {"payment": copy.deepcopy(payment)}

    def _update_payment(self, body: dict, payment_id: str) -> tuple[int, dict]:
        def make() -> tuple[int, dict]:
            payment = self.payments.get(payment_id)
            if payment is None:
                return 404, error_body("NOT_FOUND", "payment not found")
            money = (body.get("payment") or {}).get("amount_money")
            if self._money_problem(money) or money["currency"] != payment["amount_money"][
                    "currency"]:
                return 400, error_body("INVALID_VALUE", "amount_money", "payment.amount_money")
            if payment["status"] != "APPROVED":
                return 400, error_body("BAD_REQUEST", "payment is not APPROVED")
            if money["amount"] > payment["approved_money"]["amount"]:
                return 400, error_body("INVALID_VALUE", "above approved", "amount_money")
            payment.update(amount_money=dict(money), total_money=dict(money))
            return 200, {"payment": copy.deepcopy(payment)}
        return self._idempotent(f"UpdatePayment/{payment_id}", body, make)

    def _complete_payment(self, body: dict, payment_id: str) -> tuple[int, dict]:
        payment = self.payments.get(payment_id)
        if payment is None:
            return 404, error_body("NOT_FOUND", "payment not found")
        if payment["status"] == "COMPLETED":
            return 400, error_body("DELAYED_TRANSACTION_CAPTURED", "already captured")
        if payment["status"] != "APPROVED":
            return 400, error_body("DELAYED_TRANSACTION_CANCELED", "payment canceled")
        fee = fixture("complete_payment")["payment"]["processing_fee"]
        fee[0]["amount_money"] = {"amount": 34, "currency": payment["amount_money"]["currency"]}
        payment.update(status="COMPLETED", processing_fee=fee)
        payment.pop("capabilities", None)
        return 200, {"payment": copy.deepcopy(payment)}

    def _cancel_payment(self, body: dict, payment_id: str) -> tuple[int, dict]:
        payment = self.payments.get(payment_id)
        if payment is None:
            return 404, error_body("NOT_FOUND", "payment not found")
        if payment["status"] == "CANCELED":
            return 400, error_body("DELAYED_TRANSACTION_CANCELED", "already canceled")
        if payment["status"] != "APPROVED":
            return 400, error_body("DELAYED_TRANSACTION_CAPTURED", "payment captured")
        payment["status"] = "CANCELED"
        return 200, {"payment": copy.deepcopy(payment)}

    # -- Refunds API -----------------------------------------------------------------------

    def _refund_payment(self, body: dict) -> tuple[int, dict]:
        def make() -> tuple[int, dict]:
            payment = self.payments.get(body.get("payment_id", ""))
            if payment is None:
                return 404, error_body("NOT_FOUND", "payment not found")
            money = body.get("amount_money")
            if self._money_problem(money):
                return 400, error_body("INVALID_VALUE", "amount_money", "amount_money")
            if money["currency"] != payment["amount_money"]["currency"]:
                return 400, error_body("INVALID_VALUE", "currency differs from the payment's",
                                       "amount_money.currency")
            if payment["status"] != "COMPLETED":
                return 400, error_body("REFUND_ERROR_PAYMENT_NEEDS_COMPLETION")
            refunded = sum(r["amount_money"]["amount"] for r in self.refunds.values()
                           if r["payment_id"] == payment["id"])
            if refunded + money["amount"] > payment["amount_money"]["amount"]:
                return 400, error_body("REFUND_AMOUNT_INVALID")
            refund = fixture("refund_payment")["refund"]
            refund.update(id=f"{payment['id']}_{_id('', body['idempotency_key'])}",
                          payment_id=payment["id"], amount_money=dict(money),
                          status="PENDING", location_id=self.location_id)
            refund.pop("reason", None)
            if body.get("reason"):
                refund["reason"] = body["reason"]
            self.refunds[refund["id"]] = refund
            return 200, {"refund": copy.deepcopy(refund)}
        return self._idempotent("RefundPayment", body, make)

    def _get_refund(self, body: dict, refund_id: str) -> tuple[int, dict]:
        refund = self.refunds.get(refund_id)
        if refund is None:
            return 404, error_body("NOT_FOUND", "refund not found")
        return 200, {"refund": copy.deepcopy(refund)}

    # -- Customers and Cards APIs ----------------------------------------------------------

    def _create_customer(self, body: dict) -> tuple[int, dict]:
        def make() -> tuple[int, dict]:
            customer = fixture("create_customer")["customer"]
            for field in ("given_name", "family_name", "email_address"):
                customer.pop(field, None)
                if body.get(field):
                    customer[field] = body[field]
            customer["id"] = _id("CUST", body["idempotency_key"]).upper()
            return 200, {"customer": customer}
        return self._idempotent("CreateCustomer", body, make)

    def _create_card(self, body: dict) -> tuple[int, dict]:
        def make() -> tuple[int, dict]:
            customer_id = (body.get("card") or {}).get("customer_id")
            if not body.get("source_id") or not customer_id:
                return 400, error_body("MISSING_REQUIRED_PARAMETER", "source_id/customer_id")
            code = NONCE_ERRORS.get(body["source_id"])
            if code:
                return 400, error_body(code)
            card = fixture("create_card")["card"]
            card.update(id="ccof:" + _id("", body["idempotency_key"])[:19],
                        customer_id=customer_id, enabled=True)
            self.cards[card["id"]] = card
            return 200, {"card": copy.deepcopy(card)}
        return self._idempotent("CreateCard", body, make)

    def _disable_card(self, body: dict, card_id: str) -> tuple[int, dict]:
        card = self.cards.get(card_id)
        if card is None:
            return 404, error_body("NOT_FOUND", "card not found")
        card["enabled"] = False
        return 200, {"card": copy.deepcopy(card)}
