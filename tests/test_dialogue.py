"""End to end through Rasa's REST channel: a trained model, the action server, the work-order
API, the FHIR stand-in and Redis, all real processes. Assertions are on the orders that result."""

from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from actions.common import say_moment
from tests.conftest import RUN_ID
from tests.dialogue_stack import Chat, DialogueStack, Process
from tests.factories import repair_body, resident_body, unique_phone
from tests.support import Api
from workorders.office_hours import OfficeHours

PREFIX = f"linli:test:{RUN_ID}"  # the conftest removes these keys at the end


@dataclass
class Stack:
    api: Api
    rasa_url: str
    actions: Process

    def chat(self, **metadata: Any) -> Chat:
        return Chat(self.rasa_url, f"wx-{uuid.uuid4().hex[:12]}", metadata)

    def orders(self, resident_id: int) -> list[dict[str, Any]]:
        return self.api.call(
            "bot", "GET", "/work-orders", params={"resident_id": resident_id}
        ).json()["items"]

    def known_resident(self, chat: Chat, **overrides: Any) -> dict[str, Any]:
        body = resident_body(
            identities=[{"kind": "wechat_openid", "value": chat.sender}], **overrides
        )
        return self.api.call("bot", "POST", "/residents", json=body).json()


@pytest.fixture(scope="module")
def stack(dialogue: DialogueStack) -> Stack:
    return Stack(Api(dialogue.api), dialogue.rasa_url, dialogue.actions)


def test_a_stranger_reports_a_repair_and_is_registered_once(stack: Stack) -> None:
    chat = stack.chat()
    assert "怎么称呼" in chat.text("厨房水管漏水了")
    assert "几号楼" in chat.text("我叫王秀英")
    assert "电话" in chat.text("三号楼二单元五零二")
    phone = unique_phone()
    reply = chat.text(phone)
    assert "报修记下了" in reply, reply
    resident = stack.api.call(
        "bot", "GET", "/residents/lookup", params={"kind": "wechat_openid", "value": chat.sender}
    ).json()
    assert resident["name"] == "王秀英" and resident["phone"] == phone
    assert resident["address"]["text"] == "3号楼2单元502"
    [order] = stack.orders(resident["id"])
    assert (order["kind"], order["priority"], order["details"]["category"]) == (
        "repair",
        "P2",
        "水管",
    )
    assert order["details"]["location"] == "home"
    # Known from now on: the next request goes straight to the point.
    assert "怎么称呼" not in chat.text("电梯又坏了")


def test_a_stranger_in_a_building_without_units_is_registered(stack: Stack) -> None:
    """五号楼一二零一: no 单元 to say. (It was asked for again and again.)"""
    chat = stack.chat()
    assert "怎么称呼" in chat.text("客厅的灯坏了")
    assert "几号楼" in chat.text("我叫李建国")
    assert "电话" in chat.text("五号楼一二零一")
    assert "报修记下了" in chat.text(unique_phone())
    resident = stack.api.call(
        "bot", "GET", "/residents/lookup", params={"kind": "wechat_openid", "value": chat.sender}
    ).json()
    assert (resident["address"]["text"], resident["address"]["unit"]) == ("5号楼1201", None)
    [order] = stack.orders(resident["id"])
    assert order["kind"] == "repair"


def test_booking_a_doctor_lists_real_slots_and_books_one(stack: Stack) -> None:
    chat = stack.chat()
    resident = stack.known_resident(chat)
    offer = chat.text("帮我挂个下礼拜二的内科")
    assert "第1个" in offer and "您要第几个" in offer, offer
    confirm = chat.text("第一个")
    assert "对吗" in confirm, confirm
    done = chat.text("对")
    assert "约好了" in done and "身份证" in done, done
    [order] = stack.orders(resident["id"])
    assert order["kind"] == "medical_appointment"
    assert order["details"]["department"] == "内科"
    assert order["details"]["appointment_id"]


def test_booking_home_care_confirms_the_profile_address(stack: Stack) -> None:
    chat = stack.chat()
    resident = stack.known_resident(chat)
    assert "哪天" in chat.text("想请人上门给我妈洗个澡")
    assert "几点" in chat.text("下礼拜三")
    confirm = chat.text("上午")
    assert "3号楼2单元502" in confirm and "吗" in confirm, confirm
    done = chat.text("对")
    assert "助浴" in done and "上门前" in done, done
    [order] = stack.orders(resident["id"])
    assert (order["kind"], order["status"], order["priority"]) == ("home_care", "new", "P2")
    details = order["details"]
    assert details["service"] == "助浴" and details["person"] == "我妈"
    start = datetime.fromisoformat(details["window_start"])
    end = datetime.fromisoformat(details["window_end"])
    assert start.weekday() == 2 and start.date() > datetime.now(start.tzinfo).date()
    assert start.hour < 12 and start < end
    # The confirmed profile address goes on the order, for the carer.
    assert details["address"] == {"building": "3", "unit": "2", "room": "502"}


def test_home_care_elsewhere_takes_the_spoken_address(stack: Stack) -> None:
    chat = stack.chat()
    resident = stack.known_resident(chat)
    confirm = chat.text("明天下午帮我老伴儿约个助餐")
    assert "3号楼2单元502" in confirm, confirm
    assert "几号楼几单元" in chat.text("不是")
    done = chat.text("五号楼一单元三零一")
    assert "助餐" in done, done
    [order] = stack.orders(resident["id"])
    details = order["details"]
    assert details["service"] == "助餐" and details["person"] == "我老伴儿"
    assert details["address"]["building"] == "5" and details["address"]["room"] == "301"
    assert datetime.fromisoformat(details["window_start"]).hour >= 12


def test_an_answer_to_no_question_is_not_understood_once_then_all_goes_on(stack: Stack) -> None:
    chat = stack.chat()
    stack.known_resident(chat)
    reply = chat.text("三号楼二单元的楼道")  # an answer, but no question is pending
    assert reply.count("没听明白") == 1, reply
    assert "来自" in chat.text("高龄津贴怎么领")


def test_asking_to_ask_about_policy_gets_a_question_back_not_an_order(stack: Stack) -> None:
    chat = stack.chat()
    resident = stack.known_resident(chat)
    assert "哪方面" in chat.text("我想咨询一下政策")
    assert "来自" in chat.text("高龄津贴怎么领")
    assert stack.orders(resident["id"]) == []


def test_an_emergency_creates_a_p0_order_at_once(stack: Stack) -> None:
    chat = stack.chat()
    resident = stack.known_resident(chat)
    reply = chat.text("我摔倒了起不来了")
    assert "120" in reply
    [order] = stack.orders(resident["id"])
    assert (order["kind"], order["priority"]) == ("emergency", "P0")
    assert order["details"]["address"]["room"] == "502"


def test_policy_question_is_answered_with_its_source(stack: Stack) -> None:
    chat = stack.chat()
    stack.known_resident(chat)
    reply = chat.text("高龄津贴怎么领")
    assert "来自" in reply and "《" in reply, reply


def test_asking_for_a_person_opens_a_takeover_and_waits_for_staff(stack: Stack) -> None:
    chat = stack.chat()
    resident = stack.known_resident(chat)
    reply = chat.text("我要找人工")
    # The stack's API runs on the wall clock and the default office hours.
    now, hours = datetime.now(timezone.utc), OfficeHours.parse("mon-fri 08:30-17:30")
    if hours.is_open(now):
        assert reply == "好的，我已经请工作人员来帮您，请稍等，他们会尽快回复您。"
    else:
        assert reply == (
            "好的，我已经请工作人员来帮您。现在是下班时间，工作人员"
            f"{say_moment(hours.next_opening(now))}上班后会尽快回复您。有紧急情况请直接说“救命”。"
        )
    [order] = stack.orders(resident["id"])
    assert order["kind"] == "callback"
    conversation = stack.api.call("agent", "GET", f"/conversations/{chat.sender}").json()
    assert (conversation["state"], conversation["resident_id"]) == ("waiting", resident["id"])
    handoff = conversation["handoff"]
    assert (handoff["reason"], handoff["order_id"]) == ("request_human", order["id"])
    assert "居民：我要找人工" in handoff["summary"]
    # Waiting, not paused: a channel straight to Rasa (the hotline) is acknowledged once, and
    # an emergency would still be heard (tests/test_emergencies.py).
    tracker = chat.tracker()
    assert (tracker["paused"], tracker["active_loop"]["name"]) == (False, "handoff_form")
    assert "转给工作人员" in chat.text("帮我挂个号")
    assert [o["kind"] for o in stack.orders(resident["id"])] == ["callback"]


def test_a_rerun_action_creates_nothing_twice(stack: Stack) -> None:
    chat = stack.chat()
    resident = stack.known_resident(chat)
    chat.text("我摔倒了起不来了")
    rerun = httpx.post(
        f"{stack.rasa_url}/conversations/{chat.sender}/execute",
        json={"name": "action_emergency"},
        timeout=60,
    )
    assert rerun.status_code == 200, rerun.text
    [order] = stack.orders(resident["id"])
    detail = stack.api.call("agent", "GET", f"/work-orders/{order['id']}").json()
    assert [h["action"] for h in detail["history"]] == ["created"]  # not even a note


def test_a_policy_question_in_the_middle_of_a_booking_then_the_booking_goes_on(
    stack: Stack,
) -> None:
    chat = stack.chat()
    resident = stack.known_resident(chat)
    assert "您要第几个" in chat.text("我想约下礼拜三的骨科")
    answer = chat.text("对了高龄津贴咋领啊")
    assert "来自" in answer and "您要第几个" in answer, answer
    assert "对吗" in chat.text("第二个")
    assert "约好了" in chat.text("对")
    [order] = stack.orders(resident["id"])
    assert order["details"]["department"] == "骨科"


def test_a_correction_changes_the_day(stack: Stack) -> None:
    chat = stack.chat()
    resident = stack.known_resident(chat)
    chat.text("帮我挂下礼拜二的内科")
    chat.text("第一个")
    again = chat.text("不对，是下礼拜四")
    assert "您要第几个" in again, again
    chat.text("第一个")
    assert "约好了" in chat.text("对")
    [order] = stack.orders(resident["id"])
    # The new list is for the Thursday (or, when it is full, the nearest days after it).
    assert "星期四" in again or "约满" in again, again
    assert datetime.fromisoformat(order["details"]["slot_start"]).weekday() >= 3


def test_stopping_half_way_creates_nothing(stack: Stack) -> None:
    chat = stack.chat()
    resident = stack.known_resident(chat)
    assert "服务" in chat.text("我想请人上门") or "哪天" in chat.text("助浴")
    assert "先不办了" in chat.text("算了算了不弄了")
    assert stack.orders(resident["id"]) == []


def test_cancelling_an_order(stack: Stack) -> None:
    chat = stack.chat()
    resident = stack.known_resident(chat)
    repair = stack.api.call(
        "bot",
        "POST",
        "/work-orders",
        json=repair_body(
            resident["id"],
            details={"category": "门窗", "location": "home", "description": "窗户关不上"},
        ),
    ).json()
    question = chat.text("帮我把那个报修取消了")
    assert "确定要取消" in question, question
    assert "已经取消" in chat.text("对")
    assert (
        stack.api.call("bot", "GET", f"/work-orders/{repair['id']}").json()["status"] == "cancelled"
    )


def test_status_in_plain_words(stack: Stack) -> None:
    chat = stack.chat()
    resident = stack.known_resident(chat)
    stack.api.call(
        "bot",
        "POST",
        "/work-orders",
        json=repair_body(
            resident["id"],
            details={
                "category": "电梯",
                "location": "public",
                "place": "3号楼电梯",
                "description": "电梯停了",
            },
        ),
    )
    reply = chat.text("我报修的师傅啥时候来")
    assert "报修：电梯" in reply, reply


def test_a_complaint_is_linked_escalated_and_handed_to_a_person(stack: Stack) -> None:
    chat = stack.chat()
    resident = stack.known_resident(chat)
    repair = stack.api.call(
        "bot",
        "POST",
        "/work-orders",
        json=repair_body(
            resident["id"], details={"category": "水管", "location": "home", "description": "漏水"}
        ),
    ).json()
    reply = chat.text("修水管的师傅态度太差了我要投诉")
    assert "投诉" in reply and "工作人员" in reply, reply
    complaint = next(o for o in stack.orders(resident["id"]) if o["kind"] == "complaint")
    assert complaint["related_order_id"] == repair["id"]
    assert complaint["sla"]["escalated"] is True


def test_two_misunderstandings_in_a_row_go_to_a_person(stack: Stack) -> None:
    chat = stack.chat()
    stack.known_resident(chat)
    assert "换个说法" in chat.text("/nlu_fallback")
    assert "工作人员" in chat.text("/nlu_fallback")


def test_repeat_says_the_last_answer_again_slowly(stack: Stack) -> None:
    chat = stack.chat()
    stack.known_resident(chat)
    first = chat.text("高龄津贴怎么领")
    again = chat.say("再说一遍")
    assert "\n".join(m["text"] for m in again if m.get("text")) == first
    # Rasa's REST channel sends a reply's JSON part as its own message, right after the text.
    assert any(m.get("custom", {}).get("slow") for m in again)


def test_requests_wait_in_the_outbox_while_the_api_is_down(stack: Stack) -> None:
    chat = stack.chat()
    resident = stack.known_resident(chat)
    chat.text("你好")  # session start: the resident is known before the API goes away
    stack.api.process.stop()
    try:
        reply = chat.text("我摔倒了起不来了")
        assert "记下了" in reply and "120" in reply, reply
        assert reply.endswith("您现在在家吗？"), reply
        chat.text("在家")  # the answer follows the order into the outbox
    finally:
        stack.api.process.start()
    replayer = Process(
        [str(Path(sys.executable)), "-m", "actions.outbox"],
        {
            "WORKORDERS_URL": stack.api.base_url,
            "LINLI_TOKEN_ACTIONS": stack.api.process.tokens["bot"],
            "REDIS_URL": os.environ["REDIS_URL"],
            "LINLI_REDIS_PREFIX": PREFIX,
        },
        health="",
        startup=0,
    )
    replayer.spawn()

    def answered() -> bool:
        orders = stack.orders(resident["id"])
        if not orders:
            return False
        detail = stack.api.call("agent", "GET", f"/work-orders/{orders[0]['id']}").json()
        return any(h["action"] == "whereabouts" for h in detail["history"])

    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not answered():
            time.sleep(0.5)
    finally:
        replayer.stop()
    [order] = stack.orders(resident["id"])
    assert (order["kind"], order["priority"]) == ("emergency", "P0")
    revealed = stack.api.call(
        "agent", "GET", f"/work-orders/{order['id']}", params={"reveal": "true"}
    ).json()
    assert revealed["details"]["at_home"] is True
    assert [h["action"] for h in revealed["history"]].count("whereabouts") == 1
