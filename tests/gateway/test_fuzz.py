"""Fuzzing every operation of the OpenAPI document against the running gateway with a valid
secret key (schemathesis generates the requests, valid and invalid): no answer is a 5xx,
and every non-2xx answer is the error envelope (ZAP's unreadable calls: ZAP's envelope).

Bounded so it stays a CI test: a few dozen examples per operation and mode, no shrinking
(every failure is collected with a curl line to reproduce it, instead of stopping at one).
"""

from __future__ import annotations

import asyncio
import json
import os

import jsonschema
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from services.gateway import openapi
from services.gateway.routes import ROUTES, ZAP_METHODS, ZAP_ROUTE

# Per operation and generation mode; BILLING_FUZZ_EXAMPLES=500 for a longer hunt.
EXAMPLES = int(os.environ.get("BILLING_FUZZ_EXAMPLES", "25"))
# Half the cases get plausible values where they name a user or a currency, so that they
# reach the services' rules and stores instead of stopping at the first validation.
SANE = {"user": "fuzz/alice", "userId": "fuzz/alice", "currency": "usd"}
DOCUMENT = openapi.document(ROUTES, ("/api/v1",), zap=ZAP_ROUTE,
                            zap_methods=tuple(ZAP_METHODS), version="test", query_keys=False)
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
ENVELOPE = DOCUMENT["components"]["schemas"]["Error"]
ZAP = f"POST {ZAP_ROUTE.path}"
LABELS = [f"{route.method} {route.template}" for route in ROUTES] + [ZAP]
# Answers that are the route's contract, not a failure: card tokenization answers every card
# that passes its checks 503, so that clients use the provider's SDK (payments.md §4.9);
# account management is the console's, always 501 (subscriptions.md §3.6).
EXPECTED = {"POST /billing/card/tokenize": {503}, "POST /billing/accounts": {501},
            "POST /billing/accounts/{id}/members": {501},
            "PATCH /billing/accounts/{id}/members/{memberId}": {501},
            "DELETE /billing/accounts/{id}/members/{memberId}": {501}}


def _sane(case):
    for data in (case.body, case.query):
        if isinstance(data, dict):
            data.update({k: v for k, v in SANE.items() if k in data})
    return case


def _problem(label: str, status: int, body: bytes) -> str | None:
    if status >= 500 and status not in EXPECTED.get(label, ()):
        return f"{status}"
    if status < 400:
        return None
    try:
        answer = json.loads(body)
    except ValueError:
        return f"{status} without a JSON body"
    if label == ZAP and status == 400:  # ZAP's own envelope
        ok = isinstance(answer, dict) and isinstance(answer.get("error"), dict) and isinstance(
            answer["error"].get("code"), int)
        return None if ok else f"{status} outside ZAP's envelope"
    try:
        jsonschema.validate(answer, ENVELOPE)
    except jsonschema.ValidationError as e:
        return f"{status} outside the error envelope ({e.message})"
    return None


def _fuzz(label: str, base_url: str, auth: dict[str, str]) -> list[str]:
    """The failures found (ten at most), each with a curl line that reproduces it."""
    operation = SCHEMA.find_operation_by_label(label)
    assert operation is not None, label
    failures: list[str] = []
    session = requests.Session()

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        cases = operation.as_strategy(generation_mode=mode)

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=st.one_of(cases, cases.map(_sane)))
        def run(case) -> None:
            response = case.call(base_url=base_url, headers=auth, session=session, timeout=30)
            problem = _problem(label, response.status_code, response.content)
            if problem is not None and len(failures) < 10:
                failures.append(f"{problem}: {response.content[:200]!r}\n  "
                                f"{case.as_curl_command(headers=auth)}")

        run()
    session.close()
    return failures


@pytest.mark.timeout(300)
@pytest.mark.parametrize("label", LABELS)
async def test_fuzzing_finds_no_5xx_and_only_envelopes(label, platform, make_org):
    org = await make_org()
    base_url = f"http://127.0.0.1:{platform.gateway.port}/api/v1"
    # In a thread: the gateway answers from this test's event loop.
    failures = await asyncio.to_thread(_fuzz, label, base_url, org.auth())
    assert not failures, "\n".join(failures)
