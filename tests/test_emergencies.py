"""Emergencies through Rasa's REST channel with the real stack (trained model, action server,
work-order API, Redis): in every state of a conversation an emergency gets the advice for its
danger first, one P0 order and a staff alarm, and then who and where."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from tests.conftest import RUN_ID
from tests.dialogue_stack import GAS_LINE, Chat, DialogueStack
from tests.factories import resident_body
from tests.support import Api

PREFIX = f"linli:test:{RUN_ID}"
STREAM = f"linli:test:{RUN_ID}:events"


@dataclass
class Stack:
    api: Api
    rasa_url: str

    def chat(self) -> Chat:
        return Chat(self.rasa_url, f"wx-{uuid.uuid4().hex[:12]}")

    def known_resident(self, chat: Chat) -> dict[str, Any]:
        body = resident_body(identities=[{"kind": "wechat_openid", "value": chat.sender}])
        return self.api.call("bot", "POST", "/residents", json=body).json()

    def orders(self, resident_id: int) -> list[dict[str, Any]]:
        return self.api.call(
            "bot", "GET", "/work-orders", params={"resident_id": resident_id}
        ).json()["items"]

    def order(self, order_id: int) -> dict[str, Any]:
        """As staff who reveal personal data (audited): what they need to reach the person."""
        return self.api.call(
            "agent", "GET", f"/work-orders/{order_id}", params={"reveal": "true"}
        ).json()


@pytest.fixture(scope="module")
def stack(dialogue: DialogueStack) -> Stack:
    return Stack(Api(dialogue.api), dialogue.rasa_url)


def texts(replies: list[dict[str, Any]]) -> list[str]:
    return [m["text"] for m in replies if m.get("text")]


def hints(replies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["custom"] for m in replies if m.get("custom")]


def alarms(client: redis.Redis, order: dict[str, Any]) -> list[str]:
    """Staff alerts for this order on the event stream (other backends share the stream and
    number their orders alike, so the resident tells them apart)."""
    found = []
    for _, fields in client.xrange(STREAM):
        data = json.loads(fields[b"data"])
        if (
            fields[b"order_id"] == str(order["id"]).encode()
            and data["resident_id"] == order["resident_id"]
            and data["kind"] == "emergency"
            and fields[b"type"] in (b"emergency.raised", b"emergency.repeated")
        ):
            found.append(fields[b"type"].decode())
    return found


# What each danger must be told first: the words that matter and the number to call.
DANGERS = [
    ("我家厨房有股煤气味儿", "gas", ["关掉燃气总阀", "别开关电灯电器", "屋外"], GAS_LINE),
    ("厨房着火了", "fire", ["119", "别坐电梯", "别用水浇"], "119"),
    ("俺家老爷子突然说不出话来，嘴也歪了", "chest_stroke", ["120", "几点开始"], "120"),
    ("救命 我摔倒了起不来", "fall", ["别急着起来", "120"], "120"),
    ("有人在撬我家门，我害怕", "break_in", ["110", "锁好门"], "110"),
    ("家里进水了，全淹了", "flooding", ["总水阀", "拉下电闸"], None),
]


@pytest.mark.parametrize(
    ("said", "danger", "words", "number"), DANGERS, ids=[d[1] for d in DANGERS]
)
def test_each_danger_gets_its_own_advice_first(
    stack: Stack, said: str, danger: str, words: list[str], number: str | None
) -> None:
    chat = stack.chat()
    resident = stack.known_resident(chat)
    replies = chat.say(said)
    first, *rest = texts(replies)
    for word in words:
        assert word in first, first
    assert hints(replies)[0] == {"urgent": True, "danger": danger, "call": number}
    assert rest == ["社区已经收到您的紧急求助，工作人员马上联系您。", "您现在在家吗？"]
    [order] = stack.orders(resident["id"])
    assert (order["kind"], order["priority"], order["details"]["danger"]) == (
        "emergency",
        "P0",
        danger,
    )
    assert texts(chat.say("在家")) == [
        "好，已经告诉工作人员了，他们正往您那儿赶。有什么变化随时跟我说。"
    ]
    assert stack.order(order["id"])["details"]["at_home"] is True


def test_a_dangerous_fault_that_is_no_emergency_stays_an_urgent_repair(stack: Stack) -> None:
    chat = stack.chat()
    resident = stack.known_resident(chat)
    reply = chat.text("厨房水管漏水，都漏到楼下了，帮我报个修")
    assert reply.startswith("请先关上家里的总水阀，把插座和电器挪到高处"), reply
    [order] = stack.orders(resident["id"])
    assert (order["kind"], order["priority"]) == ("repair", "P1")


def test_an_unknown_sender_is_asked_where_and_how_to_call_back(
    stack: Stack, redis_client: redis.Redis
) -> None:
    chat = stack.chat()
    replies = chat.say("我家厨房有股煤气味儿")
    assert texts(replies)[1:] == [
        "社区已经收到您的紧急求助，工作人员马上联系您。",
        "您现在在哪儿？请说几号楼几单元几号，或者附近有什么地方。",
    ]
    [order_id] = {h["order_id"] for h in hints(replies) if h.get("order_id")}
    assert stack.order(order_id)["resident_id"] is None

    # Name and address at once, as a worried person says them: the address is on the order
    # before the next question is even answered.
    asked = texts(chat.say("我叫王芳，住五号楼一单元三零一"))
    assert asked == ["请留一个现在能打通的电话号码。"]
    order = stack.order(order_id)
    assert order["details"]["address"] == {"building": "5", "unit": "1", "room": "301"}
    assert order["details"]["location"] == "我叫王芳，住五号楼一单元三零一"

    done = texts(chat.say("13912345678"))
    assert done == ["好，已经告诉工作人员了，他们正往您那儿赶。有什么变化随时跟我说。"]
    order = stack.order(order_id)
    assert order["details"]["caller_phone"] == "13912345678"
    assert [h["reason"] for h in order["history"] if h["action"] == "whereabouts"] == [
        "居民补充了地址，位置",
        "居民补充了电话",
    ]
    # Said again later, it is the same emergency: a note, never a second P0.
    again = chat.say("煤气味越来越大了")
    assert {h["order_id"] for h in hints(again) if h.get("order_id")} == {order_id}
    notes = [h["reason"] for h in stack.order(order_id)["history"] if h["action"] == "note"]
    assert notes == ["再次求助：煤气味越来越大了"]


def test_an_emergency_in_the_middle_of_a_booking(stack: Stack, redis_client: redis.Redis) -> None:
    chat = stack.chat()
    resident = stack.known_resident(chat)
    assert "哪天" in chat.text("帮我挂个内科")
    replies = chat.say("救命 我摔倒了起不来")
    assert "别急着起来" in texts(replies)[0]
    [order] = stack.orders(resident["id"])
    assert (order["kind"], order["priority"]) == ("emergency", "P0")
    assert alarms(redis_client, order) == ["emergency.raised"]
    assert texts(replies)[-1] == "您现在在家吗？"
    # Not at home: where, and the home address is no longer where staff should go.
    assert texts(chat.say("不在家")) == ["您现在在哪儿？请说几号楼几单元几号，或者附近有什么地方。"]
    chat.say("在小区东门的菜市场门口")
    details = stack.order(order["id"])["details"]
    assert (details["at_home"], details["location"]) == (False, "在小区东门的菜市场门口")
    assert "address" not in details
    assert [o["kind"] for o in stack.orders(resident["id"])] == ["emergency"]


def test_an_emergency_while_waiting_for_a_person(stack: Stack, redis_client: redis.Redis) -> None:
    chat = stack.chat()
    resident = stack.known_resident(chat)
    assert "工作人员" in chat.text("我要找人工")
    # Waiting (a channel straight to Rasa): the first message is acknowledged once, then the
    # bot keeps quiet.
    assert texts(chat.say("你好")) == ["您说的我都转给工作人员了，请稍等。有紧急情况直接说“救命”。"]
    assert chat.say("还要等多久") == []

    replies = chat.say("救命 我摔倒了起不来")
    assert "别急着起来" in texts(replies)[0]
    emergency = next(o for o in stack.orders(resident["id"]) if o["kind"] == "emergency")
    assert alarms(redis_client, emergency) == ["emergency.raised"]
    assert texts(chat.say("在家"))[0].startswith("好，已经告诉工作人员了")
    # Back to waiting for the person it asked for.
    assert chat.say("你们快点") == []
    assert chat.tracker()["active_loop"]["name"] == "handoff_form"
    assert sorted(o["kind"] for o in stack.orders(resident["id"])) == ["callback", "emergency"]


def test_an_emergency_while_staff_own_the_conversation(
    stack: Stack, redis_client: redis.Redis
) -> None:
    """While staff have a written conversation the gateway forwards only emergencies, saying
    so in the metadata (tests/test_gateway.py has the whole way)."""
    chat = stack.chat()
    resident = stack.known_resident(chat)
    chat.say("你好")
    chat.metadata = {**chat.metadata, "takeover": "staff"}
    replies = chat.say("救命 我摔倒了起不来")
    assert "别急着起来" in texts(replies)[0]
    assert texts(replies)[1] == "社区已经收到您的紧急求助，工作人员马上联系您。"
    [order] = stack.orders(resident["id"])
    assert (order["kind"], order["priority"]) == ("emergency", "P0")
    assert order["details"]["during_takeover"] is True  # flagged for the staff on it
    assert alarms(redis_client, order) == ["emergency.raised"]


def test_where_they_are_not_is_no_answer(stack: Stack) -> None:
    chat = stack.chat()
    asked = "您现在在哪儿？请说几号楼几单元几号，或者附近有什么地方。"
    assert texts(chat.say("救命 有人在撬我家门"))[-1] == asked
    assert texts(chat.say("不在家")) == [asked]
    assert texts(chat.say("我在小区门口的超市")) == ["请留一个现在能打通的电话号码。"]
