"""Conversation mechanics: greeting by name, repeating the last answer, not understanding."""

from __future__ import annotations

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, UserUtteranceReverted
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.handoff import hand_over

MAX_FAILED_TURNS = 2


class ActionGreet(Action):
    def name(self) -> str:
        return "action_greet"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        name = tracker.get_slot("resident_name")
        if name:
            dispatcher.utter_message(
                text=f"{name}，您好！有什么要我帮忙的？看病预约、居家养老、报修、政策咨询都行。"
            )
        else:
            dispatcher.utter_message(response="utter_greet")
        return []


class ActionRepeat(Action):
    """Say the last answer again; channels read `slow` and speak it more slowly."""

    def name(self) -> str:
        return "action_repeat"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        for text in last_answer(tracker.events) or []:
            dispatcher.utter_message(text=text, json_message={"slow": True, "repeat": True})
        if not last_answer(tracker.events):
            dispatcher.utter_message(response="utter_greet")
        return []


def last_answer(events: list[dict]) -> list[str]:  # type: ignore[type-arg]
    """What the bot said between the previous user message and the current one."""
    users = [i for i, e in enumerate(events) if e.get("event") == "user"]
    if len(users) < 2:
        return []
    between = events[users[-2] + 1 : users[-1]]
    return [e["text"] for e in between if e.get("event") == "bot" and e.get("text")]


def failures_in_a_row(events: list[dict]) -> int:  # type: ignore[type-arg]
    count = 0
    for event in reversed(events):
        if event.get("event") != "user":
            continue
        if (event.get("parse_data") or {}).get("intent", {}).get("name") != "nlu_fallback":
            break
        count += 1
    return count


class ActionNotUnderstood(Action):
    """Ask to rephrase once; the second miss in a row goes to a person."""

    def name(self) -> str:
        return "action_not_understood"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        if failures_in_a_row(tracker.events) >= MAX_FAILED_TURNS:
            return await hand_over(tracker, dispatcher, "not_understood")
        dispatcher.utter_message(response="utter_please_rephrase")
        if tracker.get_intent_of_latest_message() != "nlu_fallback":
            # Run as the core fallback (an intent understood, but nothing fits here, e.g. a
            # bare "三号楼" with no question pending): forget the turn, as Rasa's default
            # fallback does, or the policies predict this action again and again.
            return [UserUtteranceReverted()]
        return []
