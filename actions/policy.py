"""Policy questions, answered only from the knowledge base in data/policies/, with its source.

When nothing matches well enough we say so, record a `policy_question` order for staff, and
offer a person: an invented answer about benefits would hurt the people we serve.
"""

from __future__ import annotations

import contextlib
import re
from functools import lru_cache

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions import policy_kb
from actions.common import create_order
from actions.settings import settings
from workorders.client import ApiError


@lru_cache
def knowledge() -> policy_kb.PolicyBase:
    return policy_kb.load(settings().policies_dir)


# Words of asking rather than of a question: "我想咨询一下政策" says only that a question comes.
_ASKING = re.compile(
    r"我|俺|想|要|请问|问一?下?|问问|咨询|打听|了解|一下|有关|关于|方面|的|个|些|点|"
    r"政策|问题|事儿?|情况|那个|嗯|啊|呀|吧|呢|[^\w]"
)


def is_bare_request(text: str) -> bool:
    """A request to ask (the keypad's 4, "政策咨询") with no question in it yet."""
    return text.startswith("/") or len(_ASKING.sub("", text)) < 2


class ActionAnswerPolicy(Action):
    def name(self) -> str:
        return "action_answer_policy"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        question = tracker.latest_message.get("text", "")
        if is_bare_request(question):
            dispatcher.utter_message(
                text="您想问哪方面的政策？比如高龄津贴、医保报销、低保、老年优待证，直接说就行。"
            )
            return []
        matches = knowledge().search(question, limit=1)
        if matches and matches[0].confident:
            best = matches[0]
            dispatcher.utter_message(
                text=f"{best.entry.answer}{best.citation()}",
                json_message={"policy_id": best.entry.id},
            )
            return []
        if tracker.get_slot("resident_id"):
            details = {"question": question[:1000] or "（未听清的问题）"}
            with contextlib.suppress(ApiError):  # the honest answer below stands either way
                await create_order(tracker, dispatcher, "policy_question", details)
        dispatcher.utter_message(
            text="这个问题我现在答不准，不敢乱说。已经记下来，工作人员核实后给您回电话。"
            "想马上找工作人员，就说“转人工”。",
            json_message={"policy_id": None},
        )
        return []
