"""Create, get and list through the gateway: the first thing other areas rely on."""

from tests.support import get, post


async def test_create_get_list(http, org):
    s, body, h = await get(http, "/plans", org.auth())
    assert s == 200, body
    assert len(body) == 12
    s, sub, _ = await post(http, "/subscriptions", {"userId": "Hanzo/Alice", "planId": "pro"}, org.auth())
    assert s == 201, sub
    s, got, _ = await get(http, f"/subscriptions/{sub['id']}", org.auth())
    assert (s, got) == (200, sub)
    s, lst, h = await get(http, "/subscriptions", org.auth(), userId="hanzo/alice")
    assert s == 200 and lst["count"] == 1, lst
    assert h["X-Total-Count"] == "1"
