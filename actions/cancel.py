"""Cancelling: which order (asked when there are several), a confirmation, then the API."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.choices import pick
from actions.common import answering, api, parse_time
from actions.family import forget, whom, withdrawn_error
from actions.medical import confirmation
from actions.residents import ResidentFormValidation
from actions.status import plain, subject
from workorders.client import ApiError, ApiUnavailable

CANCELLABLE = ["new", "accepted", "in_progress", "on_hold"]
NOTHING = {"id": None}
KIND_WORDS = {
    "medical_appointment": ("号", "挂", "看病", "医院", "预约", "大夫", "医生"),
    "home_care": ("助", "送饭", "洗澡", "保洁", "打扫", "陪护", "上门"),
    "repair": ("修", "师傅", "报修", "坏"),
    "callback": ("回电", "电话"),
    "policy_question": ("政策", "咨询", "问"),
}


def by_words(text: str, orders: list[dict[str, Any]]) -> int | None:
    hits = [
        i for i, o in enumerate(orders) if any(w in text for w in KIND_WORDS.get(o["kind"], ()))
    ]
    return hits[0] if len(hits) == 1 else None


class ValidateCancelForm(ResidentFormValidation):
    def name(self) -> str:
        return "validate_cancel_form"

    async def extract_order_to_cancel(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if tracker.get_slot("order_to_cancel"):
            return {}
        found = await whom(tracker)
        if not found.resident_id:
            return {}
        candidates = tracker.get_slot("cancel_candidates")
        if candidates is None:
            try:
                candidates = await api().orders_of(found.resident_id, CANCELLABLE)
            except (ApiError, ApiUnavailable):
                dispatcher.utter_message(text="系统暂时查不了您的单子，请稍后再试。")
                return {"order_to_cancel": NOTHING}
            candidates = [
                {k: o[k] for k in ("id", "kind", "status", "details", "scheduled_at")}
                for o in candidates
            ]
        if not candidates:
            return {"order_to_cancel": NOTHING, "cancel_candidates": []}
        text = tracker.latest_message.get("text", "")
        if len(candidates) == 1:
            return {"order_to_cancel": candidates[0], "cancel_candidates": candidates}
        index = by_words(text, candidates)
        if index is None and answering(tracker, "order_to_cancel"):
            index = pick(
                text,
                [
                    parse_time(c.get("scheduled_at")) or parse_time("2000-01-01T00:00:00+08:00")
                    for c in candidates
                ],
            )
        if index is None:
            return {"cancel_candidates": candidates}
        return {"order_to_cancel": candidates[index], "cancel_candidates": candidates}

    async def extract_cancel_confirmed(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if (tracker.get_slot("order_to_cancel") or {}).get("id") is None and tracker.get_slot(
            "order_to_cancel"
        ):
            return {"cancel_confirmed": False}  # nothing to cancel: no question to ask
        return confirmation(tracker, "cancel_confirmed")


class ActionAskOrderToCancel(Action):
    def name(self) -> str:
        return "action_ask_order_to_cancel"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        candidates = tracker.get_slot("cancel_candidates") or []
        items = "；".join(f"第{i}个，{plain(o)}" for i, o in enumerate(candidates, start=1))
        dispatcher.utter_message(
            text=f"您有几件事在办：{items}。要取消哪一个？", json_message={"expect": "choice"}
        )
        return []


class ActionAskCancelConfirmed(Action):
    def name(self) -> str:
        return "action_ask_cancel_confirmed"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        order = tracker.get_slot("order_to_cancel") or {}
        dispatcher.utter_message(
            text=f"确定要取消{plain(order)}吗？", json_message={"expect": "yes_no"}
        )
        return []


_FORM_SLOTS = ("order_to_cancel", "cancel_candidates", "cancel_confirmed", "person")


class ActionCancelOrder(Action):
    def name(self) -> str:
        return "action_cancel_order"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        order = tracker.get_slot("order_to_cancel") or NOTHING
        reset = [SlotSet(s, None) for s in _FORM_SLOTS]
        found = await whom(tracker)
        if found.blocked:
            dispatcher.utter_message(text=found.blocked)
            return [*reset, *forget(withdrawn_error())]
        if order.get("id") is None:
            dispatcher.utter_message(text="您现在没有可以取消的事。")
            return reset
        if not tracker.get_slot("cancel_confirmed"):
            dispatcher.utter_message(text="好的，不取消，照常办。")
            return reset
        try:
            await api().move(
                int(order["id"]), "cancelled", "居民通过邻里助手取消", proxy_id=found.proxy_id
            )
        except ApiUnavailable:
            dispatcher.utter_message(text="系统暂时连不上，没取消成功，请稍后再说一次。")
            return reset
        except ApiError as exc:
            if exc.code == "proxy_not_active":
                exc = withdrawn_error()
            dispatcher.utter_message(text=exc.message)
            return [*reset, *forget(exc)]
        done = f"已经替{found.name}取消了" if found.for_elder else "已经取消了"
        dispatcher.utter_message(
            text=f"{done}：{subject(order)}。", json_message={"order_id": order["id"]}
        )
        return reset
