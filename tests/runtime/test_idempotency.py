"""The idempotency mechanism where its two ways of claiming a key meet: a per-request
transaction (advisory lock, reply stored at the end) and a batched writer (`claim_many`)."""

from __future__ import annotations

import asyncpg
import pytest

from contracts import Actor, Scope
from contracts.errors import Failure
from services.runtime.idempotency import IdempotencyKeys
from tests.support import scope


def _scope(key: str) -> Scope:
    return scope("org_1", org_name="acme", actor=Actor(kind="service", role="platform"),
                 request_id="req_1", key=key, fingerprint="f1")


async def test_a_key_taken_by_a_batched_writer_refuses_the_request_and_undoes_its_effect(
        database_url, schema):
    keys = IdempotencyKeys(schema)
    request, batch = [await asyncpg.connect(database_url) for _ in range(2)]
    try:
        await request.execute(f"create table {schema}.effects (n int)")
        with pytest.raises(Failure) as refused:
            async with request.transaction():  # as the runtime runs a handler
                assert await keys.begin(request, _scope("k1")) is None
                await request.execute(f"insert into {schema}.effects values (1)")
                # Meanwhile a batched write with the same key commits first.
                async with batch.transaction():
                    claimed = await keys.claim_many(batch,
                                                    [("org_1", False, "k1", "f1", b"{}")])
                assert claimed == {("org_1", False, "k1")}
                await keys.complete(request, _scope("k1"), b'{"result":1}')
        assert refused.value.error.status == 409
        assert await request.fetchval(f"select count(*) from {schema}.effects") == 0
        stored = await keys.find_many(request, [("org_1", False, "k1")])
        assert stored == {("org_1", False, "k1"): ("f1", b"{}")}
    finally:
        await request.close()
        await batch.close()
