"""The hotline's own calls on two hosts: each placed once, and taken over when the holder dies.

Hosts (network namespaces): `data` (PostgreSQL, Redis, the API), `h1` and `h2` (a hotline each,
as its unit runs it, both free to place the hotline's own calls) and `phone` (the SIP trunk:
the daughter's baresip phone, which answers by itself). A mother and a father each have an SOS
terminal, and their daughter as family contact.

h1 starts first and holds the lease (voice/outbound_state.py); h2 stands by. The mother
presses her button: the daughter's phone rings once, from h1, and she presses 1. Then h1 dies
(every process, then its link, so its lease lapses rather than being released) and the father
presses his at once: while nobody holds the lease the call waits; h2 takes the lease over,
goes on from the stream position h1 left in Redis and rings her, once.

Afterwards each emergency has exactly one family notification result and one note about its
callback (the terminals reported no SIP address, so the callback is a note): both hosts were
following the stream, one placed the calls.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from ops.units import METRICS
from tests.cluster import services
from tests.cluster.hosts import network
from tests.factories import resident_body, unique_phone
from tests.test_hotline import Caller, stream_position
from tests.test_sos_terminal import post_event, sos_body

LEASE = 3  # s (HOTLINE_LEASE_SECONDS)
TRUNK_PORT = 5062  # the daughter's phone, standing for the trunk
NOTIFIED = "电话通知紧急联系人王丽（女儿）：已接听并按1确认收到"
HELD = "linli_hotline_outbound_lease_held"
NO_CALLBACK = "无法回拨一键呼叫终端：终端没有报告通话地址，请电话联系居民"


def test_a_dead_hotline_host_s_own_calls_are_placed_by_the_other_once(tmp_path: Path) -> None:
    with network(["data", "h1", "h2", "phone"], tmp_path) as hosts:
        data = hosts["data"]
        database, tokens = services.seeded_database(data)
        prefix = f"linli{uuid.uuid4().hex[:6]}"
        env = {
            "DATABASE_URL": database,
            "REDIS_URL": services.redis(data),
            "LINLI_DATA_KEY": os.environ["LINLI_DATA_KEY"],
            "WORKORDERS_URL": f"http://{data.address}:8000",
            "LINLI_TOKEN_HOTLINE": tokens["hotline"],
            "LINLI_REDIS_PREFIX": prefix,
            "HOTLINE_ASR": "scripted",  # nobody calls in: the calls here are the hotline's own
            "HOTLINE_TRUNK": f"{hosts['phone'].address}:{TRUNK_PORT}",
            "HOTLINE_LEASE_SECONDS": str(LEASE),
        }
        api = services.api(data, env)
        daughter = unique_phone()
        mother, father = (terminal(api, tokens, daughter) for _ in range(2))
        inventory: dict[str, Any] = {
            "hosts": {name: host.address for name, host in hosts.items()},
            "sip": {"hotlines": ["h1", "h2"]},
        }
        lease = redis.Redis.from_url(env["REDIS_URL"])

        def holder() -> int | None:
            value = lease.get(f"{prefix}:hotline:outbound")
            return int(value.decode().split(":")[1]) if value else None

        pid = {}
        for name in ("h1", "h2"):
            services.hotline(hosts[name], inventory, env)
            pid[name] = hosts[name].processes[-1].pid
            services.until("h1 holds the lease", lambda: holder() == pid["h1"])
        time.sleep(LEASE + 1)  # h2 stands by while h1 renews
        assert holder() == pid["h1"]
        assert [lease_held(hosts[name].address) for name in ("h1", "h2")] == [1.0, 0.0]

        phone = Caller(
            tmp_path / "daughter",
            daughter,
            host=hosts["phone"].address,
            netns=hosts["phone"].ns,
            sip_port=TRUNK_PORT,
            answermode="auto",
        )

        def handled(order_id: int) -> None:
            """Until the holder has done all the emergency asks and moved its position past
            it: a holder dying before that has the next one call again (at least once)."""
            done = ([NOTIFIED], [NO_CALLBACK])
            services.until("the emergency handled", lambda: outcome(api, tokens, order_id) == done)
            head = stream_position(events_head(api, tokens["hotline"]).encode())
            cursor = f"{prefix}:hotline:cursor"
            moved = lambda: stream_position(lease.get(cursor)) >= head  # noqa: E731
            services.until("the position past it", moved)

        orders, callers, rang_after = asyncio.run(
            sos_calls(phone, api, mother, father, handled, hosts["h1"].kill)
        )
        assert holder() == pid["h2"]
        assert lease_held(hosts["h2"].address) == 1.0
        outcomes = [outcome(api, tokens, order_id) for order_id in orders]

    print(f"\nafter h1's death, h2 rang the daughter for the father's SOS in {rang_after:.2f} s")
    assert callers == [hosts["h1"].address, hosts["h2"].address]  # one call each, by its holder
    assert rang_after < LEASE + 3, rang_after  # the lease lapses, h2 takes it within a second
    assert outcomes == [([NOTIFIED], [NO_CALLBACK])] * 2  # each asked for once, done once


async def sos_calls(
    phone: Caller,
    api: str,
    mother: tuple[str, str],
    father: tuple[str, str],
    handled: Callable[[int], None],
    kill_h1: Callable[[], None],
) -> tuple[list[int], list[str], float]:
    """The two presses and the daughter's calls. Returns the emergencies, the address each call
    came from, and the seconds from h1's death until the phone rang for the father."""
    async with phone:
        orders = [await asyncio.to_thread(press, api, *mother)]
        first, _ = await acknowledged(phone, 1)
        await asyncio.to_thread(handled, orders[0])
        await asyncio.to_thread(kill_h1)
        killed = time.monotonic()
        orders.append(await asyncio.to_thread(press, api, *father))
        second, rang_at = await acknowledged(phone, 2)
        callers, rang_after = [first, second], rang_at - killed
        await asyncio.sleep(LEASE)  # a second call, had there been one, would ring by now
        assert incoming(phone) == 2, phone.phone.events
    return orders, callers, rang_after


async def acknowledged(phone: Caller, count: int) -> tuple[str, float]:
    """The phone rings for the `count`th time (at once answered), the daughter presses 1 and
    the hotline hangs up: the address that call came from, and when (time.monotonic) it was
    answered."""
    established = await nth(phone, "CALL_ESTABLISHED", count)
    answered_at = time.monotonic()
    await phone.press("1")
    await nth(phone, "CALL_CLOSED", count)
    return established["peeruri"].split("@", 1)[1].split(":")[0].rstrip(">"), answered_at


async def nth(phone: Caller, kind: str, count: int, seconds: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while len(seen := [e for e in phone.phone.events if e.get("type") == kind]) < count:
        assert time.monotonic() < deadline, f"no {kind} #{count}: {phone.phone.events}"
        await asyncio.sleep(0.05)
    return seen[count - 1]


def incoming(phone: Caller) -> int:
    events = phone.phone.events
    return len({e["id"] for e in events if e.get("id") and e.get("direction") == "incoming"})


def terminal(api: str, tokens: dict[str, str], daughter: str) -> tuple[str, str]:
    """A resident with their daughter as family contact and an SOS terminal: its device id and
    secret."""
    body = resident_body(contacts=[{"name": "王丽", "relation": "女儿", "phone": daughter}])
    with httpx.Client(base_url=api, timeout=10) as http:
        made = http.post("/residents", json=body, headers=bearer(tokens["bot"]))
        assert made.status_code == 201, made.text
        device = f"sos-{made.json()['id']}-{uuid.uuid4().hex[:6]}"
        provisioned = {"device_id": device, "resident_id": made.json()["id"]}
        made = http.post("/terminals", json=provisioned, headers=bearer(tokens["agent"]))
        assert made.status_code == 201, made.text
    return device, made.json()["secret"]


def press(api: str, device: str, secret: str) -> int:
    answer = post_event(api, device, secret, sos_body())
    assert answer.status_code in (200, 201), answer.text
    return answer.json()["order_id"]


def outcome(api: str, tokens: dict[str, str], order_id: int) -> tuple[list[str], list[str]]:
    """The emergency's family notification results and its notes."""
    with httpx.Client(base_url=api, headers=bearer(tokens["agent"]), timeout=10) as http:
        history = http.get(f"/work-orders/{order_id}").json()["history"]
    results = [h["reason"] for h in history if h["action"] == "notification_result"]
    return results, [h["reason"] for h in history if h["action"] == "note"]


def lease_held(address: str) -> float:
    """What the hotline's metrics say of the lease (HOTLINE_METRICS_PORT, as its units set)."""
    text = httpx.get(f"http://{address}:{METRICS['HOTLINE']}/metrics", timeout=5).text
    [family] = [f for f in text_string_to_metric_families(text) if f.name == HELD]
    [sample] = family.samples
    return sample.value


def events_head(api: str, token: str) -> str:
    """The event stream's last id now."""
    with httpx.Client(base_url=api, headers=bearer(token), timeout=10) as http:
        return http.get("/events", params={"after": "$"}).json()["last_id"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
