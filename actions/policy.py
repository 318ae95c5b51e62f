"""Policy questions, answered only from the knowledge base in data/policies/, with its source.

When nothing matches well enough we say so, record a `policy_question` order for staff, and
offer a person: an invented answer about benefits would hurt the people we serve.
"""

from __future__ import annotations

import contextlib
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


class ActionAnswerPolicy(Action):
    def name(self) -> str:
        return "action_answer_policy"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        question = tracker.latest_message.get("text", "")
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
