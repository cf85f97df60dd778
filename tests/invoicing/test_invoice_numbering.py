"""Invoice numbers (metering-invoicing.md §9.11): given at finalize, per organization and
mode, sequential from 1, with no gaps and no duplicates, however many finalize at once."""

from __future__ import annotations

import asyncio

import pytest

from services.invoicing.invoices import store
from tests.support import get, new_user, org_id_of, post

N = 40


async def drafts(http, org, n, key="sk_test"):
    made = await asyncio.gather(*[post(http, "/invoices", {
        "userId": new_user(), "lineItems": [{"amount": 100 + i}]}, org.auth(key))
        for i in range(n)])
    assert {status for status, _, _ in made} == {201}
    return [body["id"] for _, body, _ in made]


async def finalize(http, org, invoice_id, key="sk_test"):
    return await post(http, f"/invoices/{invoice_id}/finalize", None, org.auth(key))


async def test_concurrent_finalizes_take_1_to_n(http, org):
    ids = await drafts(http, org, N)
    # Each invoice finalized twice at once: one wins, the other is refused.
    replies = await asyncio.gather(*[finalize(http, org, i) for i in ids + ids])
    assert sorted(status for status, _, _ in replies) == [200] * N + [409] * N
    numbers = sorted(body["number"] for status, body, _ in replies if status == 200)
    assert numbers == list(range(1, N + 1))
    _, listed, _ = await get(http, "/invoices", org.auth(), status="open", limit="20")
    assert all(i["numberStr"] == f"INV-{i['number']:04d}" for i in listed["invoices"])


async def test_each_organization_and_mode_counts_on_its_own(http, org, make_org):
    other = await make_org()
    runs = {(who, key): await drafts(http, who, 3, key)
            for who, key in ((org, "sk_test"), (org, "sk_live"), (other, "sk_test"))}
    replies = await asyncio.gather(*[finalize(http, who, i, key)
                                     for (who, key), ids in runs.items() for i in ids])
    assert {status for status, _, _ in replies} == {200}
    numbers = [body["numberStr"] for _, body, _ in replies]
    for chunk in (numbers[0:3], numbers[3:6], numbers[6:9]):
        assert sorted(chunk) == ["INV-0001", "INV-0002", "INV-0003"]


async def test_a_rolled_back_numbering_gives_its_number_back(http, org, platform):
    org_id = await org_id_of(platform, org)
    pool = platform.gateway.pool
    (first,) = await drafts(http, org, 1)
    _, body, _ = await finalize(http, org, first)
    assert body["number"] == 1
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                assert await store.next_number(conn, org_id, False, "invoice") == 2
                raise RuntimeError("the finalize failed after taking its number")
    (second,) = await drafts(http, org, 1)
    _, body, _ = await finalize(http, org, second)
    assert (body["number"], body["numberStr"]) == (2, "INV-0002")


async def test_drafts_and_voided_drafts_take_no_number(http, org):
    voided, kept = await drafts(http, org, 2)
    status, body, _ = await post(http, f"/invoices/{voided}/void", None, org.auth())
    assert (status, body["number"], body["numberStr"]) == (200, 0, "")
    _, body, _ = await finalize(http, org, kept)
    assert body["numberStr"] == "INV-0001"
