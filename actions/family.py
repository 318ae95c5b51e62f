"""A son or daughter acting for an elder (代办): asking the elder's consent, and for whom each
request is.

The work-order API keeps the proxies: `request_proxy` asks the elder's consent (the hotline
calls the elder, who presses 1), `proxies_of` lists for whom an identity may act, and orders,
cancellations and ratings take `proxy_id`. `whom()` is the one rule every action follows to
know whose request it is; the actions only read its answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.common import answering, api, identity
from workorders.client import ApiError, ApiUnavailable
from workorders.contract import IdentityKind

WITHDRAWN = "老人已经收回了代办的同意，需要的话请重新申请。"
REFUSED = "老人没有同意由您代办，需要的话请重新申请。"
NOT_FOUND = "没有找到用这个电话登记的老人，请确认号码，或者请老人先打社区热线登记。"
ORDINALS = "123456789一二三四五六七八九"
MISSES = 3  # the number asked once and again at most twice
RELATIONS = ("儿子", "女儿", "儿媳", "女婿", "孙子", "孙女", "老伴", "其他亲属")
_RELATION_WORDS = [
    ("儿媳", "儿媳"),
    ("媳妇", "儿媳"),
    ("女婿", "女婿"),
    ("外孙女", "孙女"),
    ("孙女", "孙女"),
    ("外孙", "孙子"),
    ("孙子", "孙子"),
    ("儿子", "儿子"),
    ("女儿", "女儿"),
    ("闺女", "女儿"),
    ("老伴", "老伴"),
    ("爱人", "老伴"),
    ("老公", "老伴"),
    ("老婆", "老伴"),
    ("侄", "其他亲属"),
    ("外甥", "其他亲属"),
    ("亲戚", "其他亲属"),
    ("亲属", "其他亲属"),
    ("其他", "其他亲属"),
]
_SAYS_RELATION = re.compile(r"我是(?:她|他|老人|老太太|老爷子)?(?:的|家)?")
_NAME_PREFIX = re.compile(r"^(我叫|我是|叫我|我姓|俺叫|俺是)")
SELF = ("我", "我自己", "自己", "本人", "我本人", "给我自己")
FAMILY = re.compile(
    r"(?:我|俺)(?:家)?(?:的)?(?:妈|爸|老妈|老爸|母亲|父亲|娘|爹|奶奶|爷爷|姥姥|姥爷|外婆|外公"
    r"|婆婆|公公|岳母|岳父|丈母娘|老丈人|老伴|父母|爸妈)|老人家?|老爷子|老太太"
)


@dataclass
class Whom:
    """Whose request this is: `resident_id` (None: not known yet, so a form registers the
    sender), through `proxy_id` with the elder's masked `name` when a family member acts, or
    `blocked` (a sentence to say instead: consent withdrawn, still waiting …)."""

    resident_id: int | None = None
    proxy_id: int | None = None
    name: str | None = None
    blocked: str | None = None
    choices: list[dict[str, Any]] = field(default_factory=list)

    @property
    def for_elder(self) -> bool:
        return self.proxy_id is not None


def _elder(proxy: dict[str, Any]) -> Whom:
    return Whom(int(proxy["resident_id"]), int(proxy["id"]), proxy.get("resident_name") or "老人")


def names_family(tracker: Tracker) -> bool:
    """The sender says the request is for a family member (我妈, 我爸, 老人 …)."""
    said = [str(p) for p in tracker.get_latest_entity_values("person")]
    if any(p not in SELF for p in said) or FAMILY.search(tracker.latest_message.get("text", "")):
        return True
    person = tracker.get_slot("person")  # said when the form that is being filled began
    return bool(tracker.active_loop.get("name") and person and person not in SELF)


def waiting(name: str) -> str:
    return f"已经在等{name}同意了：社区会打电话给老人，老人按1同意后就可以了。"


async def proxies_of(tracker: Tracker) -> list[dict[str, Any]]:
    """For whom the sender may act or asked to, newest first (none when the API is away)."""
    try:
        return await api().proxies_of(*identity(tracker))
    except (ApiError, ApiUnavailable):
        return []


async def whom(tracker: Tracker) -> Whom:
    """The rule: a sender who is a resident acts for themselves unless they name a family
    member or asked to act for one in this conversation (slot acting_for); a sender who is no
    resident acts for the elder of their one active proxy. Several active ones: the one chosen
    (asked once, `choices`)."""
    own = tracker.get_slot("resident_id")
    chosen = tracker.get_slot("acting_for") or {}
    if own and not chosen.get("said") and not names_family(tracker):
        return Whom(int(own))
    proxies = await proxies_of(tracker)
    if chosen.get("proxy_id"):
        mine = next((p for p in proxies if p["id"] == chosen["proxy_id"]), None)
        if mine is None or mine["status"] == "active":
            return _elder(mine or {**chosen, "id": chosen["proxy_id"]})
        return Whom(blocked=WITHDRAWN)
    active = [p for p in proxies if p["status"] == "active"]
    if len(active) == 1:
        return _elder(active[0])
    if active:
        return Whom(choices=active)
    if own or not proxies:
        return Whom(int(own) if own else None)
    newest = proxies[0]  # a family member whose proxy is not (or no longer) active
    if newest["status"] == "requested":
        return Whom(blocked=waiting(newest.get("resident_name") or "老人"))
    return Whom(blocked=WITHDRAWN if newest["status"] == "withdrawn" else REFUSED)


def withdrawn_error() -> ApiError:
    """What create_order and the others raise for a proxy that is no longer active: the
    sentence to say, the API's code (the dialogue forgets acting_for on it)."""
    return ApiError(403, "proxy_not_active", WITHDRAWN, None)


def forget(exc: ApiError) -> list[EventType]:
    return [SlotSet("acting_for", None)] if exc.code == "proxy_not_active" else []


def choose(text: str, choices: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Which elder the sender means: by position (第一个) or by the masked name's letters."""
    named = [
        p
        for p in choices
        if (p.get("resident_name") or "")[:1] in text
        and (p.get("resident_name") or "")[-1:].strip("*") in text
    ]
    if len(named) == 1:
        return named[0]
    match = re.search(r"[1-9一二两三四五六七八九]", text)
    index = ORDINALS.find(match[0].replace("两", "二")) % 9 if match else None
    return choices[index] if index is not None and 0 <= index < len(choices) else None


def acting_slot(proxy: dict[str, Any]) -> dict[str, Any]:
    return {
        "said": True,
        "proxy_id": proxy["id"],
        "resident_id": proxy["resident_id"],
        "resident_name": proxy.get("resident_name"),
    }


class ActionAskActingFor(Action):
    """Several elders consented: which one (once per conversation, in the form asking it)."""

    def name(self) -> str:
        return "action_ask_acting_for"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        found = await whom(tracker)
        names = "；".join(
            f"第{i}个，{p.get('resident_name')}" for i, p in enumerate(found.choices, start=1)
        )
        dispatcher.utter_message(
            text=f"您可以替这几位老人办事：{names}。这次是替哪一位？",
            json_message={"expect": "choice", "options": len(found.choices)},
        )
        return []


# ------------------------------------------------------------------ asking to act for an elder


def _relation(text: str, asked: bool) -> str | None:
    if not asked:  # only "我是她女儿" before the question
        match = _SAYS_RELATION.search(text)
        if not match:
            return None
        text = text[match.end() :]
    return next((r for word, r in _RELATION_WORDS if word in text), None)


class ValidateProxyForm(FormValidationAction):
    def name(self) -> str:
        return "validate_proxy_form"

    async def required_slots(
        self,
        domain_slots: list[str],
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> list[str]:
        if (tracker.get_slot("elder_misses") or 0) >= MISSES:
            return []
        if tracker.get_slot("elder"):
            return domain_slots
        proxies = await proxies_of(tracker)
        if any(p["status"] in ("active", "requested") for p in proxies):
            return []  # nothing to ask: action_request_proxy says how it stands
        return domain_slots

    async def extract_elder_phone(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if not answering(tracker, "elder_phone"):
            return {}
        spoken = next(tracker.get_latest_entity_values("phone"), None)
        found = re.sub(r"\D", "", str(spoken or tracker.latest_message.get("text", "")))
        return {"elder_phone": found or None}

    async def validate_elder_phone(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        phone = re.sub(r"\D", "", str(value or ""))
        resident = None
        if re.fullmatch(r"1[3-9]\d{9}|0\d{9,11}", phone):
            try:
                resident = await api().find_resident(IdentityKind.phone, phone)
            except ApiUnavailable:
                dispatcher.utter_message(text="系统暂时连不上，请稍后再说一次号码。")
                return {"elder_phone": None}
            except ApiError:
                resident = None
        if resident is None:
            misses = (tracker.get_slot("elder_misses") or 0) + 1
            dispatcher.utter_message(text=NOT_FOUND)
            return {"elder_phone": None, "elder_misses": misses}
        elder = {"id": resident["id"], "name": mask_name(resident.get("name"))}
        return {"elder_phone": phone, "elder": elder}

    async def extract_family_name(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if not answering(tracker, "family_name"):
            return {}
        spoken = next(tracker.get_latest_entity_values("name"), None)
        text = str(spoken or _NAME_PREFIX.sub("", tracker.latest_message.get("text", "").strip()))
        return {"family_name": text.strip("，。 ")[:20] or None}

    async def extract_family_relation(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if tracker.get_slot("family_relation"):
            return {}
        asked = answering(tracker, "family_relation")
        found = _relation(tracker.latest_message.get("text", ""), asked)
        if found is None and asked:
            dispatcher.utter_message(
                text="没听清，请说儿子、女儿、儿媳、女婿、孙子、孙女、老伴或者其他亲属。"
            )
        return {"family_relation": found} if found else {}


def mask_name(name: str | None) -> str:
    """王秀英 → 王*英, as the API masks names for services (its proxies' resident_name)."""
    if not name:
        return "老人"
    if len(name) <= 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


_FORM_SLOTS = ("elder", "elder_phone", "elder_misses", "family_name", "family_relation")


class ActionRequestProxy(Action):
    """Ask the elder's consent for the sender (the API answers the same request again with the
    same proxy, so a re-run asks nothing twice); or say how an earlier request stands."""

    def name(self) -> str:
        return "action_request_proxy"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        reset: list[EventType] = [SlotSet(s, None) for s in _FORM_SLOTS]
        kind, value = identity(tracker)
        elder = tracker.get_slot("elder")
        try:
            if elder:
                proxy = await api().request_proxy(
                    int(elder["id"]),
                    kind,
                    value,
                    tracker.get_slot("family_name") or "家属",
                    tracker.get_slot("family_relation") or "其他亲属",
                )
                proxies = [{**proxy, "resident_name": proxy.get("resident_name") or elder["name"]}]
            elif (tracker.get_slot("elder_misses") or 0) >= MISSES:
                return reset  # not found three times: said so each time
            else:
                proxies = await api().proxies_of(kind, value)
        except ApiUnavailable:
            dispatcher.utter_message(text="系统暂时连不上，请稍后再说一次。")
            return reset
        except ApiError as exc:
            dispatcher.utter_message(text=exc.message)
            return reset
        active = [p for p in proxies if p["status"] == "active"]
        requested = [p for p in proxies if p["status"] == "requested"]
        if len(active) == 1:
            dispatcher.utter_message(
                text=f"好的，您现在可以替{active[0]['resident_name']}办事了，请说要办什么。"
            )
            return [*reset, SlotSet("acting_for", acting_slot(active[0]))]
        if active:
            names = "、".join(p["resident_name"] for p in active)
            dispatcher.utter_message(
                text=f"好的，您现在可以替{names}办事了，请说要替哪一位办什么。"
            )
            return [*reset, SlotSet("acting_for", {"said": True})]
        if requested and elder:
            name = requested[0]["resident_name"]
            dispatcher.utter_message(
                text=f"好的。社区会打电话给{name}，请老人按1同意。老人同意后，我们会在微信上告诉您，"
                "您就可以替老人预约、报修、查进度和评价了。",
                json_message={"proxy_id": requested[0]["id"]},
            )
        elif requested:
            dispatcher.utter_message(text=waiting(requested[0]["resident_name"]))
        else:
            dispatcher.utter_message(text=exc_message_for(proxies))
        return reset


def exc_message_for(proxies: list[dict[str, Any]]) -> str:
    """The request could not be made (the elder refused it before): what to say."""
    return REFUSED if proxies else "没有办成，请稍后再试，或者说“转人工”。"
