"""The credit-grants API through the gateway (ledger.md §3.13–§3.17, §8 C): create, void,
list, credit balance and breakdown, with access classes, isolation and idempotency."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import SERVICE_TOKENS, bearer, iam_token
from tests.support import API, get, post

GRANTS = "/credit-grants"
SCOPE_REFUSED = "Token doesn't support this scope"
USER_QUERY = "userId query parameter is required"


async def post_raw(http, path, data: bytes, headers):
    return await post(http, path, None, {**headers, "Content-Type": "application/json"},
                      raw=data)


async def create(http, headers, **body):
    status, created, _ = await post(http, GRANTS, body, headers)
    assert status == 201, created
    return created


async def void(http, headers, grant_id, **kw):
    status, body, response_headers = await post(http, f"{GRANTS}/{grant_id}/void", None,
                                                headers, **kw)
    return status, body, response_headers


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def error(body) -> str:
    return body["error"]["message"]


async def test_credit_grants_api_in_order(http, org):
    """§8 C.1–C.14, in order, for `hanzo/alice`."""
    auth = org.auth()
    before = datetime.now(UTC)
    # C.1
    starter = await create(http, auth, userId="hanzo/alice", name="Starter Credit",
                           amountCents=500, currency="usd", priority=0, tags="starter",
                           expiresIn="720h")
    assert starter["id"] and starter["userId"] == "hanzo/alice"
    assert starter["name"] == "Starter Credit"
    assert (starter["amountCents"], starter["remainingCents"]) == (500, 500)
    assert (starter["currency"], starter["priority"], starter["tags"]) == ("usd", 0, "starter")
    expires = when(starter["expiresAt"])
    assert timedelta(hours=720) <= expires - before < timedelta(hours=720, seconds=30)
    # C.2
    promo = await create(http, auth, userId="hanzo/alice", name="Promo $10",
                         amountCents=1000, currency="usd", priority=1, tags="promo")
    assert (promo["amountCents"], promo["priority"]) == (1000, 1)
    assert "expiresAt" not in promo
    # C.3–C.5
    status, body, _ = await post(http, GRANTS, {"name": "Bad Grant", "amountCents": 100}, auth)
    assert (status, error(body)) == (400, "userId is required")
    status, body, _ = await post(http, GRANTS, {"userId": "hanzo/alice", "amountCents": 0},
                                 auth)
    assert (status, error(body)) == (400, "amountCents must be positive")
    status, body, _ = await post(http, GRANTS, {"userId": "hanzo/alice", "amountCents": 100,
                                                "expiresIn": "not-a-duration"}, auth)
    assert (status, error(body)) == (400, "invalid expiresIn duration")
    # C.6
    status, listed, _ = await get(http, GRANTS, auth, userId="hanzo/alice")
    assert status == 200 and listed["count"] == 2
    assert {g["name"] for g in listed["grants"]} == {"Starter Credit", "Promo $10"}
    # C.7
    status, body, _ = await get(http, GRANTS, auth)
    assert (status, error(body)) == (400, USER_QUERY)
    # C.8
    status, balance, _ = await get(http, "/credit-balance", auth, userId="hanzo/alice")
    assert status == 200
    assert balance == {"userId": "hanzo/alice",
                       "balances": [{"currency": "usd", "available": 1500}]}
    # C.13 (before the void), then an untagged grant lands in `other`.
    status, breakdown, _ = await get(http, "/credit-balance/breakdown", auth, userId="hanzo/alice")
    assert status == 200
    assert breakdown == {"userId": "hanzo/alice", "currency": "usd", "breakdown": {
        "starter": {"cents": 500, "expiresAt": starter["expiresAt"]},
        "promo": {"cents": 1000}}, "total": {"cents": 1500}}
    untagged = await create(http, auth, userId="hanzo/alice", amountCents=200)
    status, breakdown, _ = await get(http, "/credit-balance/breakdown", auth, userId="hanzo/alice")
    assert breakdown["breakdown"]["other"] == {"cents": 200}
    assert breakdown["total"] == {"cents": 1700}
    status, body, _ = await void(http, auth, untagged["id"])
    assert status == 200
    # C.9
    status, body, _ = await void(http, auth, starter["id"])
    assert (status, body) == (200, {"id": starter["id"], "voided": True})
    # C.10
    status, body, _ = await void(http, auth, starter["id"])
    assert (status, error(body)) == (400, "grant is already voided")
    # C.11
    status, body, _ = await void(http, auth, "nonexistent")
    assert (status, error(body)) == (404, "credit grant not found")
    # C.12
    status, balance, _ = await get(http, "/credit-balance", auth, userId="hanzo/alice")
    assert balance["balances"] == [{"currency": "usd", "available": 1000}]
    # C.14: still listed, voided and inactive, its remainder untouched.
    status, listed, _ = await get(http, GRANTS, auth, userId="hanzo/alice")
    item = next(g for g in listed["grants"] if g["id"] == starter["id"])
    assert (item["voided"], item["active"], item["remainingCents"]) == (True, False, 500)


async def test_created_and_listed_shapes(http, org):
    created = await create(http, org.auth(), userId="hanzo/shape", name="n", amountCents=42,
                           priority=-2, eligibility=["m1"], tags="trial", expiresIn="1h30m")
    assert list(created) == ["id", "userId", "name", "amountCents", "remainingCents",
                             "currency", "priority", "effectiveAt", "tags", "createdAt",
                             "expiresAt"]
    assert created["createdAt"] == created["effectiveAt"]
    assert created["createdAt"].endswith("Z")
    assert when(created["expiresAt"]) - when(created["createdAt"]) == timedelta(minutes=90)
    status, listed, _ = await get(http, GRANTS, org.auth(), userId="hanzo/shape")
    assert listed["count"] == 1
    assert listed["grants"][0] == {**created, "voided": False, "active": True}
    assert list(listed["grants"][0]) == [
        "id", "userId", "name", "amountCents", "remainingCents", "currency", "priority",
        "effectiveAt", "tags", "voided", "active", "createdAt", "expiresAt"]


async def test_list_is_newest_first_with_read_time_activity(http, org):
    auth = org.auth()
    first = await create(http, auth, userId="hanzo/lister", amountCents=1)
    expired = await create(http, auth, userId="hanzo/lister", amountCents=2, expiresIn="-1h")
    now_expiring = await create(http, auth, userId="hanzo/lister", amountCents=3,
                                expiresIn="0")
    status, listed, _ = await get(http, GRANTS, auth, userId="hanzo/lister")
    assert [g["id"] for g in listed["grants"]] == [now_expiring["id"], expired["id"],
                                                   first["id"]]
    assert [g["active"] for g in listed["grants"]] == [False, False, True]
    assert when(expired["expiresAt"]) < when(expired["createdAt"])
    status, page, _ = await get(http, GRANTS, auth, userId="hanzo/lister", limit="2", offset="1")
    assert [g["id"] for g in page["grants"]] == [expired["id"], first["id"]]
    assert page["count"] == 2
    status, balance, _ = await get(http, "/credit-balance", auth, userId="hanzo/lister")
    assert balance["balances"] == [{"currency": "usd", "available": 1}]


async def test_user_ids_are_canonical(http, org):
    created = await create(http, org.auth(), userId="  HANZO/Carol ", amountCents=10)
    assert created["userId"] == "hanzo/carol"
    for spelled in ("hanzo/carol", " Hanzo/CAROL"):
        status, listed, _ = await get(http, GRANTS, org.auth(), userId=spelled)
        assert listed["count"] == 1, spelled
        status, balance, _ = await get(http, "/credit-balance", org.auth(), userId=spelled)
        assert balance["userId"] == "hanzo/carol"


async def test_balances_are_per_currency_and_the_breakdown_sums_one(http, org):
    auth = org.auth()
    await create(http, auth, userId="hanzo/fx", amountCents=900, currency="EUR", tags="promo")
    await create(http, auth, userId="hanzo/fx", amountCents=100, tags="promo")
    await create(http, auth, userId="hanzo/fx", amountCents=5000, currency="jpy")
    status, balance, _ = await get(http, "/credit-balance", auth, userId="hanzo/fx")
    assert balance["balances"] == [{"currency": "eur", "available": 900},
                                   {"currency": "jpy", "available": 5000},
                                   {"currency": "usd", "available": 100}]
    # The reference added currencies together (100 + 900 + 5000); we never do.
    status, usd, _ = await get(http, "/credit-balance/breakdown", auth, userId="hanzo/fx")
    assert usd["currency"] == "usd" and usd["total"] == {"cents": 100}
    assert usd["breakdown"] == {"promo": {"cents": 100}}
    status, eur, _ = await get(http, "/credit-balance/breakdown", auth, userId="hanzo/fx",
                               currency=" EUR")
    assert eur["currency"] == "eur" and eur["total"] == {"cents": 900}
    status, none, _ = await get(http, "/credit-balance/breakdown", auth, userId="hanzo/nobody")
    assert none == {"userId": "hanzo/nobody", "currency": "usd", "breakdown": {},
                    "total": {"cents": 0}}
    status, body, _ = await get(http, "/credit-balance/breakdown", auth, userId="hanzo/fx",
                                currency="$")
    assert (status, error(body)) == (400, "invalid currency")
    status, body, _ = await get(http, "/credit-balance", auth, userId="hanzo/nobody")
    assert body == {"userId": "hanzo/nobody", "balances": []}


@pytest.mark.parametrize(("body", "message"), [
    (b"not-json", "invalid request body"),
    (b"", "invalid request body"),
    (b"[]", "invalid request body"),
    (b'{"userId": "a", "amountCents": "10"}', "invalid request body"),
    (b'{"userId": "a", "amountCents": 1.5}', "invalid request body"),
    (b'{"userId": "a", "amountCents": 9223372036854775808}', "invalid request body"),
    (b'{"userId": "a", "amountCents": 1, "eligibility": "m1"}', "invalid request body"),
    (b'{"userId": "a", "amountCents": 1, "expiresIn": 3600}', "invalid request body"),
    (b"null", "userId is required"),
    (b'{"amountCents": 0}', "userId is required"),
    (b'{"userId": "   ", "amountCents": 10}', "userId is required"),
    (b'{"userId": "a", "amountCents": -5}', "amountCents must be positive"),
    (b'{"userId": "a", "amountCents": 1, "expiresIn": "7d"}', "invalid expiresIn duration"),
    (b'{"userId": "a", "amountCents": 1, "expiresIn": "1H"}', "invalid expiresIn duration"),
    (b'{"userId": "a", "amountCents": 1, "currency": "US Dollar"}', "invalid currency"),
])
async def test_create_refuses_bad_input(http, org, body, message):
    status, refused, _ = await post_raw(http, GRANTS, body, org.auth())
    assert (status, error(refused)) == (400, message)
    status, listed, _ = await get(http, GRANTS, org.auth(), userId="a")
    assert listed["count"] == 0


async def test_reads_require_a_user(http, org):
    for path in (GRANTS, "/credit-balance", "/credit-balance/breakdown"):
        for params in ({}, {"userId": "  "}):
            status, body, _ = await get(http, path, org.auth(), **params)
            assert (status, error(body)) == (400, USER_QUERY), (path, params)


async def test_void_ignores_a_body_and_keys_case_insensitively(http, org):
    created = await create(http, org.auth(), userId="hanzo/v", amountCents=5)
    async with http.post(f"{API}{GRANTS}/{created['id']}/void", data=b"{whatever",
                         headers=org.auth()) as r:
        assert (r.status, await r.json()) == (200, {"id": created["id"], "voided": True})
    # Go's decoder matched keys case-insensitively: so does ours.
    status, body, _ = await post_raw(http, GRANTS, b'{"USERID": "hanzo/v", "AmountCents": 7}',
                                     org.auth())
    assert status == 201 and body["userId"] == "hanzo/v" and body["amountCents"] == 7


async def test_test_grants_are_invisible_to_live_keys_and_other_orgs(http, make_org):
    a, b = await make_org(), await make_org()
    created = await create(http, a.auth("sk_test"), userId="hanzo/iso", amountCents=300)
    for who, key in ((a, "sk_live"), (b, "sk_test"), (b, "sk_live")):
        status, listed, _ = await get(http, GRANTS, who.auth(key), userId="hanzo/iso")
        assert listed == {"grants": [], "count": 0}, (who.name, key)
        status, balance, _ = await get(http, "/credit-balance", who.auth(key), userId="hanzo/iso")
        assert balance["balances"] == []
        status, breakdown, _ = await get(http, "/credit-balance/breakdown", who.auth(key),
                                         userId="hanzo/iso")
        assert breakdown["total"] == {"cents": 0}
        status, body, _ = await void(http, who.auth(key), created["id"])
        assert (status, error(body)) == (404, "credit grant not found")
    status, listed, _ = await get(http, GRANTS, a.auth("sk_test"), userId="hanzo/iso")
    assert listed["count"] == 1 and listed["grants"][0]["voided"] is False


async def test_access_classes(http, org):
    # Publishable keys reach none of it.
    for method, path, kw in [
            ("POST", GRANTS, {"json": {"userId": "hanzo/a", "amountCents": 1}}),
            ("POST", f"{GRANTS}/x/void", {}),
            ("GET", GRANTS, {"params": {"userId": "hanzo/a"}}),
            ("GET", "/credit-balance", {"params": {"userId": "hanzo/a"}}),
            ("GET", "/credit-balance/breakdown", {"params": {"userId": "hanzo/a"}})]:
        async with http.request(method, API + path, headers=org.auth("pk_test"), **kw) as r:
            assert (r.status, error(await r.json())) == (403, SCOPE_REFUSED), path


async def test_end_users_see_only_their_own_credit_and_cannot_mint(http):
    owner = f"cg-{secrets.token_hex(3)}"
    service = {**bearer(SERVICE_TOKENS[0]), "X-IAM-Org-Id": owner}  # platform, live
    mine = await create(http, service, userId=f"{owner}/alice", amountCents=250, tags="trial")
    await create(http, service, userId=f"{owner}/bob", amountCents=999)
    alice = bearer(iam_token(owner=owner, name="Alice"))
    # Pinned to themselves by default, and may name themselves in any case.
    for params in ({}, {"userId": f"{owner.upper()}/ALICE"}):
        status, listed, _ = await get(http, GRANTS, alice, **params)
        assert status == 200 and [g["id"] for g in listed["grants"]] == [mine["id"]]
    status, balance, _ = await get(http, "/credit-balance", alice)
    assert balance == {"userId": f"{owner}/alice",
                       "balances": [{"currency": "usd", "available": 250}]}
    status, breakdown, _ = await get(http, "/credit-balance/breakdown", alice)
    assert breakdown["breakdown"] == {"trial": {"cents": 250}}
    for path in (GRANTS, "/credit-balance", "/credit-balance/breakdown"):
        status, body, _ = await get(http, path, alice, userId=f"{owner}/bob")
        assert (status, error(body)) == (403, "cannot access another user's account"), path
    # Creating or voiding credit is a mint: never for end users, nor for IAM org admins.
    admin = bearer(iam_token(owner=owner, name="root", isAdmin=True))
    for who in (alice, admin):
        status, body, _ = await post(http, GRANTS, {"userId": f"{owner}/alice",
                                                    "amountCents": 1}, who)
        assert (status, error(body)) == (403, SCOPE_REFUSED)
        status, body, _ = await void(http, who, mine["id"])
        assert (status, error(body)) == (403, SCOPE_REFUSED)
    # An org admin reads anyone's grants.
    status, listed, _ = await get(http, GRANTS, admin, userId=f"{owner}/bob")
    assert status == 200 and listed["count"] == 1


async def test_create_and_void_replay_under_an_idempotency_key(http, org):
    body = {"userId": "hanzo/idem", "amountCents": 700, "tags": "purchased"}
    key = {"Idempotency-Key": "grant-once"}
    status, first, headers = await post(http, GRANTS, body, {**org.auth(), **key})
    assert status == 201 and "Idempotent-Replayed" not in headers
    status, again, headers = await post(http, GRANTS, body, {**org.auth(), **key})
    assert (status, again) == (201, first)
    assert headers["Idempotent-Replayed"] == "true"
    status, listed, _ = await get(http, GRANTS, org.auth(), userId="hanzo/idem")
    assert listed["count"] == 1
    status, refused, _ = await post(http, GRANTS, {**body, "amountCents": 701},
                                    {**org.auth(), **key})
    assert (status, error(refused)) == (422, "idempotency key reused with different parameters")
    # The key is the org's and mode's: the live key may use the same string.
    status, live, _ = await post(http, GRANTS, body, {**org.auth("sk_live"), **key})
    assert status == 201 and live["id"] != first["id"]
    # Void: a retry replays the success instead of reporting "already voided".
    void_key = {"Idempotency-Key": "void-once"}
    status, voided, _ = await void(http, {**org.auth(), **void_key}, first["id"])
    assert (status, voided) == (200, {"id": first["id"], "voided": True})
    status, replayed, headers = await void(http, {**org.auth(), **void_key}, first["id"])
    assert (status, replayed) == (200, voided) and headers["Idempotent-Replayed"] == "true"
    # The same key on another grant's void is another request.
    other = await create(http, org.auth(), userId="hanzo/idem", amountCents=1)
    status, body, _ = await void(http, {**org.auth(), **void_key}, other["id"])
    assert status == 422
