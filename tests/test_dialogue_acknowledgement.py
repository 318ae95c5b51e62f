"""Elders acknowledge: a bare 好的 / 对 / 嗯 / 行 with no question pending is answered as an
acknowledgement, never as "没听明白" and never on the way to a person; while a question is
pending (a form's slot, a yes/no confirmation) the same words answer it as before.

End to end through Rasa's REST channel with the trained model, the action server and the
work-order API (tests/dialogue_stack.py). "对" confirming a cancellation is in test_dialogue.py
(test_cancelling_an_order)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.dialogue_stack import Chat, DialogueStack
from tests.factories import resident_body
from tests.support import Api

ACKNOWLEDGED = "好的。还有什么要帮忙的吗？"


class Stack:
    def __init__(self, dialogue: DialogueStack) -> None:
        self.api = Api(dialogue.api)
        self.rasa_url = dialogue.rasa_url

    def resident_chat(self) -> tuple[Chat, dict[str, Any]]:
        """A chat with a resident the API knows (no registration questions)."""
        chat = Chat(self.rasa_url, f"wx-{uuid.uuid4().hex[:12]}")
        body = resident_body(identities=[{"kind": "wechat_openid", "value": chat.sender}])
        return chat, self.api.call("bot", "POST", "/residents", json=body).json()

    def orders(self, resident_id: int) -> list[dict[str, Any]]:
        return self.api.call(
            "bot", "GET", "/work-orders", params={"resident_id": resident_id}
        ).json()["items"]


@pytest.fixture(scope="module")
def stack(dialogue: DialogueStack) -> Stack:
    return Stack(dialogue)


def actions_run(chat: Chat) -> list[str]:
    return [e["name"] for e in chat.tracker()["events"] if e.get("event") == "action"]


def test_ok_after_a_policy_answer_is_acknowledged_however_often(stack: Stack) -> None:
    chat, resident = stack.resident_chat()
    assert "来自" in chat.text("高龄津贴怎么领")
    for word in ("好的", "好的", "对", "嗯", "行"):
        assert chat.text(word) == ACKNOWLEDGED, word
    tracker = chat.tracker()
    assert (tracker["active_loop"] or {}).get("name") is None  # not waiting for a person
    assert "action_handoff" not in actions_run(chat)
    assert "action_not_understood" not in actions_run(chat)
    assert stack.orders(resident["id"]) == []  # no callback order
    # Nothing else: a goodbye; and the conversation goes on as usual afterwards.
    assert chat.text("没有了") == "好的，您慢走。有事随时找我。"
    assert "来自" in chat.text("那高龄津贴到哪儿领")


def test_an_acknowledgement_is_no_step_towards_a_person(stack: Stack) -> None:
    chat, resident = stack.resident_chat()
    assert "换个说法" in chat.text("/nlu_fallback")
    assert chat.text("好的") == ACKNOWLEDGED
    again = chat.text("/nlu_fallback")  # one miss after the acknowledgement, not the second
    assert "换个说法" in again and "工作人员" not in again, again
    assert [o["kind"] for o in stack.orders(resident["id"])] == []


@pytest.mark.parametrize(
    ("turns", "word", "done", "kind"),
    [  # (what the resident says, what the reply must contain), then the yes/no answer
        ([("帮我挂个下礼拜二的内科", "您要第几个"), ("第一个", "对吗")], "好的", "约好了",
         "medical_appointment"),
        ([("明天下午帮我老伴儿约个助餐", "是到3号楼2单元502")], "嗯", "助餐", "home_care"),
    ],
)  # fmt: skip
def test_ok_while_a_yes_no_confirmation_is_pending_still_confirms(
    stack: Stack, turns: list[tuple[str, str]], word: str, done: str, kind: str
) -> None:
    chat, resident = stack.resident_chat()
    for said, asked in turns:
        reply = chat.text(said)
        assert asked in reply, reply
    reply = chat.text(word)
    assert done in reply and ACKNOWLEDGED not in reply, reply
    [order] = stack.orders(resident["id"])
    assert order["kind"] == kind


def test_ok_while_a_form_asks_for_a_slot_leaves_the_question_open(stack: Stack) -> None:
    chat, resident = stack.resident_chat()
    assert "哪个科" in chat.text("我想挂个号")
    reply = chat.text("行")
    assert reply != ACKNOWLEDGED, reply
    tracker = chat.tracker()
    assert tracker["active_loop"]["name"] == "medical_form"
    assert tracker["slots"]["requested_slot"] == "department"
    assert "哪天" in chat.text("内科")
    assert stack.orders(resident["id"]) == []
