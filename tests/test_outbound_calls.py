"""The hotline's follow-up calls (voice/outbound.py): the elder's consent to a family member
acting for them (代办), and the 回访 rating call after an order is resolved.

Real baresip phones stand behind the "trunk" (the hotline dials sip:<number>@trunk, as it
phones a family contact after an SOS); the work-order API runs as a process and drives the
calls through its event stream. Calling hours are off here (the tests run at any hour).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import redis

from channels.voice import DialogueClient
from tests.factories import repair_body, resident_body, unique_phone
from tests.sip_clients import free_sip_port
from tests.support import Api, Backend, hotline_token
from tests.test_hotline import Caller, Stack, loud_seconds, own_calls_keys, wait_handled
from tests.test_hotline import calling_out as hotline_calling_out
from voice.asr import ScriptedRecogniser
from voice.hotline import Hotline, HotlineSettings
from voice.outbound import Outbound, calling_time
from voice.tts import Synthesizer
from workorders.client import WorkOrdersClient

# The API on SQLite only: these tests are about the calls, not the database.
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

RATED, CONSENT = "order.status_changed", "proxy.consent_requested"
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def synthesizer() -> Iterator[Synthesizer]:
    with Synthesizer() as synth:
        synth.start()  # as the hotline does: the neural voice's workers take seconds to start
        yield synth


@pytest.fixture
def token(sqlite_backend: Backend) -> str:
    """The hotline's token, with exactly the rights data/demo/community.json gives it."""
    return hotline_token(sqlite_backend)


def stream_now(api: Api, token: str) -> str:
    """The event stream's position now, so the hotline acts on what happens after it."""
    with httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {token}"}) as c:
        response = c.get("/events", params={"after": "$"})
    assert response.status_code == 200, response.text
    return response.json()["last_id"]


@pytest.fixture
def keys(api: Api, token: str, redis_client: redis.Redis) -> str:
    """Where the hotline's own calls stand in Redis, starting at the stream position now: the
    hotline acts on what happens after it."""
    prefix = own_calls_keys()
    redis_client.set(f"{prefix}:cursor", stream_now(api, token))
    return prefix


def follow_ups(redis_client: redis.Redis, keys: str) -> dict[str, dict[str, Any]]:
    """The follow-ups not done yet, as the next hotline would take them up."""
    kept = redis_client.hgetall(f"{keys}:follow-ups")
    return {key.decode(): json.loads(value) for key, value in kept.items()}


@contextlib.asynccontextmanager
async def calling_out(
    api: Api, token: str, synth: Synthesizer, keys: str, phone_port: int, **options: Any
) -> AsyncIterator[Outbound]:
    """The hotline's own calls (test_hotline's) through a trunk at `phone_port`, from where
    they stand under `keys` on, at any hour; `options`: Outbound's settings. No dialogue is
    needed: these calls ask for a key."""
    client = WorkOrdersClient(api.base_url, token)
    dialogue = DialogueClient("http://127.0.0.1:9")  # never asked
    hotline = Hotline(
        settings=HotlineSettings(),
        synthesizer=synth,
        dialogue=dialogue,
        recogniser=ScriptedRecogniser([]),
        api=client,
    )
    trunk = f"127.0.0.1:{phone_port}"
    try:
        async with hotline_calling_out(Stack(api, "", token), hotline, trunk, keys) as outbound:
            for name, value in {"calling_hours": None, **options}.items():
                setattr(outbound, name, value)
            yield outbound
    finally:
        await dialogue.aclose()
        await client.aclose()


@contextlib.asynccontextmanager
async def at_home(tmp_path: Path, phone: str, answermode: str = "auto") -> AsyncIterator[Caller]:
    """The resident's telephone (baresip), reached through the trunk at its port."""
    async with Caller(
        tmp_path / "home", phone, sip_port=free_sip_port(), answermode=answermode
    ) as caller:
        yield caller


def rings(caller: Caller) -> int:
    """Calls that reached the phone (answered or not), by SIP Call-ID."""
    events = caller.phone.events
    return len({e["id"] for e in events if e.get("id") and e.get("direction") == "incoming"})


async def ringing(caller: Caller, count: int, timeout: float = 30.0) -> None:
    """Until the phone has rung `count` times in all."""
    deadline = asyncio.get_running_loop().time() + timeout
    while rings(caller) < count:
        assert asyncio.get_running_loop().time() < deadline, f"rang {rings(caller)} times"
        await asyncio.sleep(0.1)


def resident(api: Api, phone: str, *identities: dict[str, str]) -> dict[str, Any]:
    body = resident_body(phone=phone, identities=[{"kind": "phone", "value": phone}, *identities])
    made = api.call("bot", "POST", "/residents", json=body)
    assert made.status_code == 201, made.text
    return made.json()


def resolved_order(api: Api, resident_id: int) -> int:
    """A repair (水管) staff have resolved."""
    made = api.call("bot", "POST", "/work-orders", json=repair_body(resident_id, channel="hotline"))
    assert made.status_code == 201, made.text
    for to in ("accepted", "in_progress", "resolved"):
        moved = api.call(
            "agent", "POST", f"/work-orders/{made.json()['id']}/transitions", json={"to": to}
        )
        assert moved.status_code == 200, moved.text
    return made.json()["id"]


def order(api: Api, order_id: int) -> dict[str, Any]:
    return api.call("agent", "GET", f"/work-orders/{order_id}").json()


async def answered(
    api: Api,
    token: str,
    synth: Synthesizer,
    keys: str,
    folder: Path,
    make: Callable[[Api, int], int],
    key: str,
) -> tuple[Outbound, Caller, int]:
    """A resident with a phone; `make` (api, resident id) asks for a call; the phone answers,
    listens to the first sentences and presses `key`. The outbound side, the phone, and what
    `make` made."""
    phone = unique_phone()
    someone = resident(api, phone)
    async with (
        at_home(folder, phone) as home,
        calling_out(api, token, synth, keys, home.phone.sip_port) as outbound,
    ):
        made = await asyncio.to_thread(make, api, someone["id"])
        await home.phone.wait_event("CALL_ESTABLISHED", timeout=30)
        await asyncio.sleep(5.0)  # 您好，这里是邻里社区服务中心。您的… (the question comes)
        await home.press(key)
        await home.phone.wait_event("CALL_CLOSED", timeout=30)
        await wait_handled(outbound, 1)
    return outbound, home, made


def ask_to_act_for(api: Api, resident_id: int) -> int:
    """A daughter (王丽) asks on WeChat to act for the elder (代办): `requested`."""
    body = {
        "identity": {"kind": "wechat_openid", "value": f"oWx{uuid.uuid4().hex[:25]}"},
        "name": "王丽",
        "relation": "女儿",
        "phone": unique_phone(),
    }
    made = api.call("bot", "POST", f"/residents/{resident_id}/proxies", json=body)
    assert made.status_code == 201, made.text
    assert made.json()["status"] == "requested"
    return made.json()["id"]


def proxy(api: Api, proxy_id: int) -> dict[str, Any]:
    read = api.call("agent", "GET", f"/proxies/{proxy_id}")
    assert read.status_code == 200, read.text
    return read.json()


# --- 代办: the elder's consent --------------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize(
    ("key", "outcome", "status"), [("1", "granted", "active"), ("2", "refused", "refused")]
)
async def test_the_elder_answers_a_family_members_request_by_a_key(
    api: Api,
    token: str,
    synthesizer: Synthesizer,
    redis_client: redis.Redis,
    keys: str,
    tmp_path: Path,
    key: str,
    outcome: str,
    status: str,
) -> None:
    """The hotline calls the elder's own phone: 您的女儿想在微信上替您办理社区服务 …"""
    outbound, home, proxy_id = await answered(
        api, token, synthesizer, keys, tmp_path, ask_to_act_for, key
    )

    assert outbound.handled == [(CONSENT, outcome)]
    decided = proxy(api, proxy_id)
    assert (decided["status"], decided["decided_via"]) == (status, "hotline")
    assert decided["decided_at"] is not None
    assert rings(home) == 1
    assert loud_seconds(home.heard()) > 3.0  # the question, then 好的，…
    assert follow_ups(redis_client, keys) == {}  # nothing left to do


@sqlite_only
@pytest.mark.parametrize("kind", [CONSENT, RATED])
async def test_an_unanswered_follow_up_is_tried_again_then_left_for_staff(
    api: Api,
    token: str,
    synthesizer: Synthesizer,
    tmp_path: Path,
    redis_client: redis.Redis,
    keys: str,
    kind: str,
) -> None:
    """Nobody picks up, twice: nothing is recorded; the proxy waits for staff in the console
    (still requested), the order stays resolved and unrated."""
    phone = unique_phone()
    someone = resident(api, phone)
    async with (
        at_home(tmp_path, phone, answermode="manual") as home,
        calling_out(
            api,
            token,
            synthesizer,
            keys,
            home.phone.sip_port,
            follow_up_attempts=2,
            follow_up_after=1.0,
        ) as outbound,
    ):
        outbound.ring_seconds = 3
        make = ask_to_act_for if kind == CONSENT else resolved_order
        made = await asyncio.to_thread(make, api, someone["id"])
        await wait_handled(outbound, 1)

    assert outbound.handled == [(kind, "left_for_staff")]
    assert rings(home) == 2
    if kind == CONSENT:
        waiting = proxy(api, made)
        assert (waiting["status"], waiting["decided_at"], waiting["decided_via"]) == (
            "requested",
            None,
            None,
        )
    else:
        unrated = order(api, made)
        assert (unrated["status"], unrated["rating"]) == ("resolved", None)
    assert follow_ups(redis_client, keys) == {}


# --- 回访: the rating call after an order is resolved --------------------------------------


@sqlite_only
async def test_a_resolved_order_is_rated_by_a_key_on_the_follow_up_call(
    api: Api,
    token: str,
    synthesizer: Synthesizer,
    redis_client: redis.Redis,
    keys: str,
    tmp_path: Path,
) -> None:
    """您的报修：水管已经办好了。请为这次服务打个分 … 4 (满意) rates and closes the order."""
    outbound, home, order_id = await answered(
        api, token, synthesizer, keys, tmp_path, resolved_order, "4"
    )

    assert outbound.handled == [(RATED, "rated_4")]
    rated = order(api, order_id)
    assert (rated["status"], rated["rating"]["score"]) == ("closed", 4)
    assert [h["reason"] for h in rated["history"] if h["action"] == "rated"] == ["评分 4"]
    assert rings(home) == 1
    assert loud_seconds(home.heard()) > 3.0  # the question, then 谢谢您的评价
    assert follow_ups(redis_client, keys) == {}


@sqlite_only
async def test_a_resident_on_wechat_is_not_called_to_rate(
    api: Api, token: str, synthesizer: Synthesizer, tmp_path: Path, keys: str
) -> None:
    """WeChat users are asked to rate there (the gateway's status message)."""
    phone = unique_phone()
    openid = f"oWx{uuid.uuid4().hex[:25]}"
    someone = resident(api, phone, {"kind": "wechat_openid", "value": openid})
    async with (
        at_home(tmp_path, phone) as home,
        calling_out(api, token, synthesizer, keys, home.phone.sip_port) as outbound,
    ):
        order_id = await asyncio.to_thread(resolved_order, api, someone["id"])
        await wait_handled(outbound, 1)
        await asyncio.sleep(1.0)

    assert outbound.handled == [(RATED, "wechat")]
    assert rings(home) == 0
    assert (order(api, order_id)["status"], order(api, order_id)["rating"]) == ("resolved", None)


@sqlite_only
async def test_an_order_rated_already_gets_no_call(
    api: Api, token: str, synthesizer: Synthesizer, tmp_path: Path, keys: str
) -> None:
    """Resolved and rated (on the web chat, say) before the hotline reads the event."""
    phone = unique_phone()
    someone = resident(api, phone)
    order_id = resolved_order(api, someone["id"])
    rated = api.call("bot", "POST", f"/work-orders/{order_id}/rating", json={"score": 5})
    assert rated.status_code == 200, rated.text
    async with (
        at_home(tmp_path, phone) as home,
        calling_out(api, token, synthesizer, keys, home.phone.sip_port) as outbound,
    ):
        await wait_handled(outbound, 1)
        await asyncio.sleep(1.0)

    assert outbound.handled == [(RATED, "already_rated")]
    assert rings(home) == 0
    assert order(api, order_id)["rating"]["score"] == 5


@sqlite_only
async def test_a_follow_up_cut_off_by_a_restart_is_taken_up_again(
    api: Api,
    token: str,
    synthesizer: Synthesizer,
    tmp_path: Path,
    redis_client: redis.Redis,
    keys: str,
) -> None:
    """The hotline stops while the phone rings: the follow-up stays in Redis (the stream
    position has moved on), and the restarted hotline (or another host's) calls again."""
    phone = unique_phone()
    someone = resident(api, phone)
    async with at_home(tmp_path, phone, answermode="manual") as home:
        port = home.phone.sip_port
        async with calling_out(api, token, synthesizer, keys, port) as first:
            order_id = await asyncio.to_thread(resolved_order, api, someone["id"])
            await home.phone.wait_event("CALL_INCOMING", timeout=30)
        waiting = follow_ups(redis_client, keys)
        assert (list(waiting), waiting[f"rating:{order_id}"]["tries"]) == (
            [f"rating:{order_id}"],
            0,
        )
        async with calling_out(api, token, synthesizer, keys, port) as again:
            await ringing(home, 2)
            await home.phone.command("accept")
            await home.phone.wait_event("CALL_ESTABLISHED", timeout=10)
            await home.press("5")
            await wait_handled(again, 1)

    assert first.handled == []
    assert again.handled == [(RATED, "rated_5")]
    assert order(api, order_id)["rating"]["score"] == 5


def test_follow_ups_wait_for_calling_hours() -> None:
    hours = (time(9, 0), time(20, 0))
    morning = datetime(2026, 11, 25, 9, 0, tzinfo=SHANGHAI)
    assert calling_time(datetime(2026, 11, 24, 22, 30, tzinfo=SHANGHAI), hours) == morning
    assert calling_time(datetime(2026, 11, 25, 6, 0, tzinfo=SHANGHAI), hours) == morning
    afternoon = datetime(2026, 11, 25, 15, 0, tzinfo=SHANGHAI)
    assert calling_time(afternoon, hours) == afternoon
    assert calling_time(datetime(2026, 11, 25, 20, 0, tzinfo=SHANGHAI), hours) == morning + (
        timedelta(days=1)
    )
    assert calling_time(afternoon.replace(hour=23), None) == afternoon.replace(hour=23)
