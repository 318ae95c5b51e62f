"""A whole stairwell at once: 50 residents report a repair over the gateway's web chat at the
same moment, and some of their pages send the same message again (a client retry: a timeout, a
reload) while the first is still being answered and after it was. Every order exists exactly
once: one per resident, 50 in all, none missing, none twice, and each message is recorded once.

Real processes throughout: the gateway, Rasa with the trained model, the action server, the
work-order API, Redis. Nothing here measures time (bench/dialogue_turns.py does)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from tests.test_gateway import Stack, Web, stack  # noqa: F401 (the gateway in front of the stack)

CONVERSATIONS = 50
RETRIED = range(0, CONVERSATIONS, 5)  # every fifth page sends its message twice more
REPAIR = "楼道的灯坏了，晚上黑乎乎的"
STILL_RUNNING = 409  # the gateway: the first copy is still being answered, send it again later


async def send(client: httpx.AsyncClient, web: Web, client_id: str) -> dict[str, Any]:
    """What a page does: post, and while the gateway says the same message is still being
    answered, post the same message again a little later (bounded)."""
    body = {"secret": web.secret, "client_id": client_id, "text": REPAIR}
    for _ in range(40):
        response = await client.post(f"{web.gateway}/chat/api/messages", json=body)
        if response.status_code != STILL_RUNNING:
            assert response.status_code == 200, response.text
            return response.json()
        await asyncio.sleep(3)
    raise AssertionError(f"{web.key}: still running after 40 tries")


async def resident_page(client: httpx.AsyncClient, web: Web, retried: bool) -> list[Any]:
    """The first copy, and for a retried page a copy sent while the first is in flight and
    another once it was answered."""
    client_id = uuid.uuid4().hex
    if not retried:
        return [await send(client, web, client_id)]

    async def in_flight() -> dict[str, Any]:
        await asyncio.sleep(0.2)
        return await send(client, web, client_id)

    first, during = await asyncio.gather(send(client, web, client_id), in_flight())
    return [first, during, await send(client, web, client_id)]


async def everyone(webs: list[Web]) -> list[list[Any]]:
    limits = httpx.Limits(max_connections=2 * CONVERSATIONS)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        return await asyncio.gather(
            *(resident_page(client, web, n in RETRIED) for n, web in enumerate(webs))
        )


def test_fifty_residents_at_once_each_order_exists_exactly_once(stack: Stack) -> None:  # noqa: F811
    webs = [stack.web() for _ in range(CONVERSATIONS)]
    residents = [stack.known(web.key) for web in webs]

    outcomes = asyncio.run(everyone(webs))

    for web, answers in zip(webs, outcomes, strict=True):
        first = answers[0]
        assert first["state"] == "bot" and first["replies"], (web.key, first)
        assert all(again == first for again in answers[1:]), (web.key, answers)
    orders: list[dict[str, Any]] = []
    for web, resident in zip(webs, residents, strict=True):
        own = [o for o in stack.orders(resident["id"]) if o["kind"] == "repair"]
        assert len(own) == 1, (web.key, own)
        orders += own
        lines = stack.lines(web.key)
        assert lines.count(("resident", REPAIR)) == 1, (web.key, lines)
    assert len({o["id"] for o in orders}) == CONVERSATIONS
    assert {o["resident_id"] for o in orders} == {r["id"] for r in residents}
