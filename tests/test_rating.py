"""Residents rate a resolved order by answering the channel's "请回复1到5…" in a new message:
end to end through the trained model, the action server and the work-order API."""

from __future__ import annotations

from typing import Any

import pytest

from tests.dialogue_stack import DialogueStack
from tests.factories import repair_body
from tests.support import Api
from tests.test_dialogue import Stack

UNKNOWN = "我还不知道您是哪一位，先办一件事或者转人工，我就能帮您查了。"


@pytest.fixture(scope="module")
def stack(dialogue: DialogueStack) -> Stack:
    return Stack(Api(dialogue.api), dialogue.rasa_url, dialogue.actions)


def resolved_repair(stack: Stack, resident: dict[str, Any], category: str) -> dict[str, Any]:
    details = {"category": category, "location": "home", "description": f"{category}坏了"}
    order = stack.api.call(
        "bot", "POST", "/work-orders", json=repair_body(resident["id"], details=details)
    ).json()
    for to in ("accepted", "in_progress", "resolved"):
        moved = stack.api.call(
            "agent", "POST", f"/work-orders/{order['id']}/transitions", json={"to": to}
        )
        assert moved.status_code == 200, moved.text
    return order


def detail(stack: Stack, order: dict[str, Any]) -> dict[str, Any]:
    return stack.api.call(
        "agent", "GET", f"/work-orders/{order['id']}", params={"reveal": "true"}
    ).json()


def ratings(order: dict[str, Any]) -> list[str]:
    return [h["reason"] for h in order["history"] if h["action"] == "rated"]


def test_a_score_with_words_rates_the_resolved_order_and_closes_it(stack: Stack) -> None:
    chat = stack.chat()
    order = resolved_repair(stack, stack.known_resident(chat), "水管")
    assert chat.text("5分，师傅很好") == (
        "谢谢您的评价！您给「报修：水管」打了5分。您说的意见我们会转给工作人员。"
    )
    rated = detail(stack, order)
    assert rated["status"] == "closed"
    assert (rated["rating"]["score"], rated["rating"]["comment"]) == (5, "师傅很好")


def test_very_satisfied_is_five_and_saying_it_again_rates_nothing_twice(stack: Stack) -> None:
    chat = stack.chat()
    order = resolved_repair(stack, stack.known_resident(chat), "电梯")
    thanks = "谢谢您的评价！您给「报修：电梯」打了5分。"
    assert chat.text("非常满意") == thanks
    assert chat.text("非常满意") == thanks  # the same again: the same answer, no new rating
    assert chat.text("4分") == "您已经给「报修：电梯」打过5分了，谢谢您！"
    rated = detail(stack, order)
    assert (rated["status"], rated["rating"]["score"], rated["rating"]["comment"]) == (
        "closed",
        5,
        None,
    )
    assert ratings(rated) == ["评分 5"]


def test_a_bare_digit_rates_the_latest_resolved_order(stack: Stack) -> None:
    chat = stack.chat()
    resident = stack.known_resident(chat)
    older = resolved_repair(stack, resident, "门窗")
    latest = resolved_repair(stack, resident, "暖气")
    assert chat.text("4") == "谢谢您的评价！您给「报修：暖气」打了4分。"
    assert detail(stack, latest)["rating"]["score"] == 4
    assert detail(stack, older)["status"] == "resolved"  # waits for its own answer
    assert chat.text("3") == "谢谢您的评价！您给「报修：门窗」打了3分。"
    assert (detail(stack, older)["rating"]["score"], detail(stack, older)["status"]) == (
        3,
        "closed",
    )


def test_a_low_score_asks_staff_to_call_and_notes_the_order(stack: Stack) -> None:
    chat = stack.chat()
    order = resolved_repair(stack, stack.known_resident(chat), "水管")
    assert chat.text("不满意，来得太晚了") == (
        "谢谢您的评价！您给「报修：水管」打了2分。您说的意见我们会转给工作人员。"
        "我们会请工作人员跟您联系，了解情况。"
    )
    rated = detail(stack, order)
    assert (rated["rating"]["score"], rated["rating"]["comment"]) == (2, "来得太晚了")
    notes = [h["reason"] for h in rated["history"] if h["action"] == "note"]
    assert notes == ["居民评了2分：来得太晚了。请联系居民了解情况。"]
    assert [o["kind"] for o in stack.orders(rated["resident_id"])] == ["repair"]


def test_nothing_to_rate_and_a_stranger(stack: Stack) -> None:
    chat = stack.chat()
    stack.known_resident(chat)
    assert chat.text("5分") == "您现在没有需要评价的事。"
    assert stack.chat().text("5") == UNKNOWN


def test_a_digit_during_a_medical_booking_still_picks_the_slot(stack: Stack) -> None:
    chat = stack.chat()
    repair = resolved_repair(stack, stack.known_resident(chat), "水管")
    offer = chat.text("帮我挂个下礼拜二的内科")
    assert "第1个" in offer and "您要第几个" in offer, offer
    first = offer.split("第1个，", 1)[1].split("；", 1)[0].split("。", 1)[0]
    assert chat.text("1") == f"给您约{first}的内科，对吗？"
    done = chat.text("对")
    assert done.startswith(f"约好了：{first}，内科。"), done
    assert detail(stack, repair)["status"] == "resolved"  # "1" was no rating
