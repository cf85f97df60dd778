"""Every list answers X-Total-Count and X-Has-More (conventions §10.6; issue 9)."""

from __future__ import annotations

import secrets

import pytest

from tests.conftest import SERVICE_TOKENS, bearer
from tests.support import request

API = "/api/v1"
ADMIN = bearer(SERVICE_TOKENS[0])


async def _seed(http, headers, user):
    """Three items in each list for `user` (and for the org, for meters)."""
    for i in range(3):
        for path, body in (
            ("/billing/deposit", {"user": user, "amount": 100}),
            ("/billing/usage", {"user": user, "amount": 1}),
            ("/billing/credit-grants", {"userId": user, "name": f"g{i}", "amountCents": 5}),
            ("/billing/spend-alerts", {"userId": user, "title": f"a{i}", "threshold": 10}),
            ("/billing/meters", {"name": f"m{i}", "eventName": f"e.{secrets.token_hex(4)}",
                                 "aggregationType": "sum"}),
        ):
            status, reply, _ = await request(http, "POST", API + path, headers, json=body)
            assert status in (200, 201), (path, reply)


@pytest.mark.parametrize("path,key", [
    ("/billing/transactions", "transactions"), ("/billing/usage", "usage"),
    ("/billing/credit-grants", "grants"), ("/billing/spend-alerts", None),
    ("/billing/meters", "meters"),
])
async def test_lists_report_total_and_more(http, make_org, path, key):
    org = await make_org()
    headers = {**ADMIN, "X-IAM-Org": org.name}
    user = "acme/lister"
    await _seed(http, headers, user)
    # usage rows are tagged usage; transactions hold deposits and usage (6)
    total = 6 if path == "/billing/transactions" else 3
    query = {"user": user, "userId": user}
    for limit, offset in ((2, 0), (2, 2), (100, 0), (2, 50)):
        status, reply, h = await request(http, "GET", API + path, headers, params={
            **query, "limit": str(limit), "offset": str(offset)})
        assert status == 200, reply
        items = reply if key is None else reply[key]
        expected = max(0, min(limit, total - offset))
        assert len(items) == expected, (limit, offset, reply)
        assert h["X-Total-Count"] == str(total), (limit, offset)
        assert h["X-Has-More"] == ("true" if offset + expected < total else "false")


async def test_a_single_object_has_no_paging_headers(http):
    status, _, h = await request(http, "GET", API + "/billing/balance", ADMIN, params={"user": "a"})
    assert status == 200
    assert "X-Total-Count" not in h and "X-Has-More" not in h
