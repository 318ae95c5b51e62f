"""A son or daughter acts for an elder (代办) in the dialogue: asking the elder's consent, then
booking, following and cancelling for the elder; a withdrawn consent stops it. End to end
through the trained model, the action server and the work-order API."""

from __future__ import annotations

from typing import Any

import pytest

from tests.dialogue_stack import Chat, DialogueStack
from tests.factories import resident_body, unique_phone
from tests.support import Api
from tests.test_dialogue import Stack

ASK_PHONE = "请说一下老人登记用的手机号。"
ASK_NAME = "请问您怎么称呼？"
ASK_RELATION = "您是老人的什么人？儿子、女儿、儿媳、女婿、孙子、孙女、老伴，还是其他亲属？"
NOT_FOUND = "没有找到用这个电话登记的老人，请确认号码，或者请老人先打社区热线登记。"
REQUESTED = (
    "好的。社区会打电话给王*英，请老人按1同意。老人同意后，我们会在微信上告诉您，"
    "您就可以替老人预约、报修、查进度和评价了。"
)
WAITING = "已经在等王*英同意了：社区会打电话给老人，老人按1同意后就可以了。"
ACTIVE = "好的，您现在可以替王*英办事了，请说要办什么。"
WITHDRAWN = "老人已经收回了代办的同意，需要的话请重新申请。"


@pytest.fixture(scope="module")
def stack(dialogue: DialogueStack) -> Stack:
    return Stack(Api(dialogue.api), dialogue.rasa_url, dialogue.actions)


def an_elder(stack: Stack) -> dict[str, Any]:
    created = stack.api.call("bot", "POST", "/residents", json=resident_body(phone=unique_phone()))
    assert created.status_code == 201, created.text
    return created.json()


def proxies_of(stack: Stack, chat: Chat) -> list[dict[str, Any]]:
    return stack.api.call(
        "bot", "GET", "/proxies", params={"kind": "wechat_openid", "value": chat.sender}
    ).json()


def asked_by_a_daughter(stack: Stack, chat: Chat, elder: dict[str, Any]) -> dict[str, Any]:
    """The daughter asks in the dialogue ("我是她女儿" gives the relation); the proxy made."""
    assert chat.text("我是她女儿，想帮她办理") == ASK_PHONE
    assert chat.text(elder["phone"]) == ASK_NAME
    assert chat.text("我叫李小明") == REQUESTED
    [proxy] = proxies_of(stack, chat)
    return proxy


def consented(stack: Stack, proxy: dict[str, Any]) -> None:
    granted = stack.api.call(
        "agent",
        "POST",
        f"/proxies/{proxy['id']}/consent",
        json={"granted": True, "via": "console"},
    )
    assert granted.status_code == 200 and granted.json()["status"] == "active", granted.text


def test_a_family_member_asks_to_act_for_an_elder_and_waits(stack: Stack) -> None:
    elder = an_elder(stack)
    chat = stack.chat()
    assert chat.text("我想替我妈办事") == ASK_PHONE
    assert chat.text(unique_phone()) == f"{NOT_FOUND}\n{ASK_PHONE}"
    assert chat.text(elder["phone"]) == ASK_NAME
    assert chat.text("我叫李小明") == ASK_RELATION
    assert chat.text("女儿") == REQUESTED
    [proxy] = proxies_of(stack, chat)
    assert (proxy["resident_id"], proxy["resident_name"], proxy["relation"], proxy["status"]) == (
        elder["id"],
        "王*英",
        "女儿",
        "requested",
    )
    shown = stack.api.call(
        "agent",
        "GET",
        f"/proxies/{proxy['id']}",
        params={"reveal": "true", "purpose": "测试"},
    ).json()
    assert shown["name"] == "李小明"
    # Asked again: waiting for the elder, nothing new at the API, nobody registered.
    assert chat.text("能不能替我父母办") == WAITING
    assert proxies_of(stack, chat) == [proxy]
    lookup = stack.api.call(
        "bot", "GET", "/residents/lookup", params={"kind": "wechat_openid", "value": chat.sender}
    )
    assert lookup.status_code == 404


def test_after_consent_the_daughter_books_follows_and_cancels_for_the_elder(stack: Stack) -> None:
    elder = an_elder(stack)
    chat = stack.chat()
    proxy = asked_by_a_daughter(stack, chat, elder)
    assert proxy["relation"] == "女儿"
    consented(stack, proxy)
    assert chat.text("我想替我妈办事") == ACTIVE

    offer = chat.text("帮我妈挂个下礼拜二的内科")
    assert "第1个" in offer and "您要第几个" in offer, offer
    confirm = chat.text("第一个")
    assert confirm.startswith("给王*英约") and "对吗" in confirm, confirm
    done = chat.text("对")
    assert done.startswith("已经替王*英约好了：") and "身份证" in done, done
    [order] = stack.orders(elder["id"])
    assert order["kind"] == "medical_appointment" and order["resident_id"] == elder["id"]
    assert order["requested_by"] == {"proxy_id": proxy["id"], "name": "李小明", "relation": "女儿"}
    history = stack.api.call("bot", "GET", f"/work-orders/{order['id']}").json()["history"]
    assert (history[0]["action"], history[0]["reason"]) == ("created", "李*明（女儿）代老人提交")

    status = chat.text("我妈的挂号怎么样了")
    assert status.startswith("王*英有1件事在办：") and "内科" in status, status
    audit = stack.api.call(
        "admin", "GET", "/audit", params={"resource_type": "proxy", "resource_id": proxy["id"]}
    ).json()["items"]
    looks = [e["detail"] for e in audit if e["action"] == "use_proxy"]
    assert looks.count(f"status of resident {elder['id']}") == 1  # every use is recorded

    assert "确定要取消" in chat.text("帮我妈把挂号取消了")
    cancelled = chat.text("对")
    assert cancelled.startswith("已经替王*英取消了："), cancelled
    [order] = stack.orders(elder["id"])
    assert order["status"] == "cancelled"
    reasons = [
        h["reason"]
        for h in stack.api.call("bot", "GET", f"/work-orders/{order['id']}").json()["history"]
    ]
    assert reasons[-1] == "李*明（女儿）代老人取消：居民通过邻里助手取消"


def test_a_withdrawn_consent_stops_the_next_request(stack: Stack) -> None:
    elder = an_elder(stack)
    chat = stack.chat()
    proxy = asked_by_a_daughter(stack, chat, elder)
    consented(stack, proxy)
    assert chat.text("我想替我妈办事") == ACTIVE
    withdrawn = stack.api.call(
        "agent", "POST", f"/proxies/{proxy['id']}/withdraw", json={"via": "console"}
    )
    assert withdrawn.status_code == 200, withdrawn.text
    assert chat.text("帮我妈报修，厨房水管漏水了") == WITHDRAWN
    assert stack.orders(elder["id"]) == []
    # A new conversation: still no order, and the daughter is not registered as a resident.
    again = Chat(chat.rasa_url, chat.sender)
    assert again.text("我妈家厨房水管漏水了") == WITHDRAWN
    assert stack.orders(elder["id"]) == []


def test_a_resident_with_consent_acts_for_the_elder_only_when_saying_so(stack: Stack) -> None:
    elder = an_elder(stack)
    chat = stack.chat()
    own = stack.known_resident(chat, name="李小明")
    asked = stack.api.call(
        "bot",
        "POST",
        f"/residents/{elder['id']}/proxies",
        json={
            "identity": {"kind": "wechat_openid", "value": chat.sender},
            "name": "李小明",
            "relation": "儿子",
        },
    )
    assert asked.status_code == 201, asked.text
    consented(stack, asked.json())
    assert chat.text("厨房水管漏水了") == "报修记下了：水管。维修师傅会在两小时内联系您。"
    assert chat.text("我妈家厨房水管漏水了") == (
        "已经替王*英报修：水管。维修师傅会在两小时内联系老人。"
    )
    [mine] = stack.orders(own["id"])
    [hers] = stack.orders(elder["id"])
    assert mine["requested_by"] is None
    assert hers["requested_by"]["proxy_id"] == asked.json()["id"]
