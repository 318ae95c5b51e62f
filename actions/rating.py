"""Rating a resolved order: the resident answers the "请回复1到5…" their channel sent when the
order was resolved, in a new message without any dialogue before it.

The score comes from a `score` entity when a channel sends one, else from the words: 1-5 in
digits or 一…五 (with 分 or 星, or alone), 满分, 好评/中评/差评, or a verdict (非常满意 5,
满意 4, 一般 3, 不满意 2, 非常不满意 1). The comment is what they said beyond that, or None.
The same rating again is a no-op at the API and a different one 409 already_rated, so a
re-run action (or the resident saying it twice) rates nothing twice.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from redis.exceptions import RedisError

from actions.common import api, identity, now, parse_time, turn_key
from actions.family import Whom, forget, whom, withdrawn_error
from actions.settings import settings
from workorders.client import ApiError, ApiUnavailable
from workorders.redis_url import connect_async
from workorders.words import subject

UNKNOWN = "我还不知道您是哪一位，先办一件事或者转人工，我就能帮您查了。"  # as actions/status.py
NOTHING = "您现在没有需要评价的事。"
# A rating given this recently is the one being said again (a re-run, a resent message).
SAID_AGAIN = timedelta(minutes=30)
LOW = 2

_CN = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5}
_BEFORE = r"(?:(?:我|俺)?(?:就|也|还是)?(?:给|打|评)(?:你们|您|个)?(?:打|评)?(?:个)?)?"
_AFTER = r"(?:吧|呗|了|啊|呀|的)?"
_UNITS = "分号点个楼栋单元月日天年岁块元次回趟遍周"  # 3号楼, 2个小时: a bare digit that is no score
# (pattern, score: None = the digit or numeral matched in group 1)
_NUMBERS: list[tuple[re.Pattern[str], int | None]] = [
    (re.compile(_BEFORE + r"(?:满分|(?<!\d)(?:10|100)分|一百分)" + _AFTER), 5),
    (re.compile(_BEFORE + r"(?<![\d.])([1-5])\s*(?:分(?!钟|之)|颗星|星)" + _AFTER), None),
    (re.compile(_BEFORE + r"(?<![十百\d])([一二两三四五])(?:分(?!钟|之)|颗星|星)" + _AFTER), None),
    (re.compile(_BEFORE + r"(?<![\d.])([1-5])(?![\d.]|\s*[" + _UNITS + "])"), None),
    (re.compile(r"^\s*([一二两三四五])" + _AFTER + r"\s*$"), None),
    (re.compile(_BEFORE + r"好评"), 5),
    (re.compile(_BEFORE + r"中评"), 3),
    (re.compile(_BEFORE + r"差评"), 1),
]
# Verdicts, most specific first: 非常不满意 before 不满意 before 满意.
_VERDICTS: list[tuple[re.Pattern[str], int]] = [
    (re.compile(r"(?:很|非常|特别|太|十分|极其|相当|超)不满意"), 1),
    (re.compile(r"不(?:太|大|咋|怎么|是很)?满意"), 2),
    (re.compile(r"(?:非常|特别|十分|很|超|太|相当)满意"), 5),
    (re.compile(r"基本满意|一般般?|还?凑合|马马虎虎"), 3),
    (re.compile(r"(?:挺|比较|还算|还|蛮)?满意"), 4),
]
_PIECES = re.compile(r"[^\s,，。.!！?？;；、~～…]+")
_FILLERS = [
    *"嗯啊呀哦噢吧呗了的啦呢哈嘛我俺就也给打评个您中分星",
    *("你们", "这次", "这回", "服务", "评价", "一下", "打分", "觉得", "感觉", "还是", "那个"),
    *("好评", "中评", "差评"),
]
_FILLER = re.compile("|".join(sorted(_FILLERS, key=len, reverse=True)))


def read_rating(text: str, entity: Any = None) -> tuple[int | None, str | None]:
    """(score 1-5 or None, comment or None) from what the resident said."""
    text = unicodedata.normalize("NFKC", text or "").strip()
    score: int | None = None
    rest = text
    for pattern, fixed in _NUMBERS:
        match = pattern.search(text)
        if match:
            score = fixed or (int(match[1]) if match[1].isdigit() else _CN[match[1]])
            rest = f"{text[: match.start()]} {text[match.end() :]}"
            break
    if score is None:
        score = next((s for pattern, s in _VERDICTS if pattern.search(text)), None)
    if str(entity or "").strip() in {"1", "2", "3", "4", "5"}:
        score = int(str(entity).strip())
    return score, _comment(rest)


def _comment(rest: str) -> str | None:
    """The pieces of `rest` that say more than a verdict and fillers, as said."""
    kept = [m for m in _PIECES.finditer(rest) if _FILLER.sub("", _strip_verdicts(m[0])).strip()]
    if not kept:
        return None
    return rest[kept[0].start() : kept[-1].end()][:500]


def _strip_verdicts(piece: str) -> str:
    for pattern, _ in _VERDICTS:
        piece = pattern.sub("", piece)
    return piece


def thanks(order: dict[str, Any], score: int, comment: str | None) -> str:
    text = f"谢谢您的评价！您给「{subject(order)}」打了{score}分。"
    if comment:
        text += "您说的意见我们会转给工作人员。"
    if score <= LOW:
        text += "我们会请工作人员跟您联系，了解情况。"
    return text


def _rated_at(order: dict[str, Any]) -> datetime | None:
    return parse_time((order.get("rating") or {}).get("rated_at"))


def _latest(orders: list[dict[str, Any]], when: Callable[[dict[str, Any]], Any]) -> Any:
    dated = [o for o in orders if when(o) is not None]
    return max(dated, key=when) if dated else None


async def _resident_id(tracker: Tracker, found: Whom) -> int | None:
    if found.resident_id:  # the sender's, or the elder's they act for (actions/family.py)
        return found.resident_id
    resident = await api().find_resident(*identity(tracker))
    return int(resident["id"]) if resident else None


async def _this_turns(tracker: Tracker, order_id: int | None = None) -> int | None:
    """The order this turn rates: the one kept for it when Rasa ran the action before (a
    re-run must not rate the next resolved order), else `order_id`, kept now."""
    key = f"{settings().redis_prefix}:rating:{turn_key(tracker, 'rating')}"
    client = connect_async(settings().redis_url)
    try:
        if order_id is not None:
            await client.set(key, order_id, nx=True, ex=24 * 3600)
        kept = await client.get(key)
        return int(kept) if kept else order_id
    except RedisError:
        return order_id
    finally:
        await client.close()


async def order_to_rate(tracker: Tracker, resident_id: int) -> dict[str, Any] | None:
    """This turn's order if it has one; else the latest resolved one not rated yet; else the
    one rated last, when that was moments ago (the resident says it again)."""
    kept = await _this_turns(tracker)
    if kept is not None:
        return await api().order(kept)
    resolved = [o for o in await api().orders_of(resident_id, ["resolved"]) if not o.get("rating")]
    order = _latest(resolved, lambda o: parse_time(o.get("resolved_at")))
    if order is not None:
        kept = await _this_turns(tracker, int(order["id"]))
        return order if kept == order["id"] else await api().order(kept)
    order = _latest(await api().orders_of(resident_id, ["closed"]), _rated_at)
    if order is not None and now() - _rated_at(order) <= SAID_AGAIN:
        return order
    return None


class ActionRateService(Action):
    def name(self) -> str:
        return "action_rate_service"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        found = await whom(tracker)
        if found.blocked:
            dispatcher.utter_message(text=found.blocked)
            return forget(withdrawn_error())
        try:
            resident_id = await _resident_id(tracker, found)
            if resident_id is None:
                dispatcher.utter_message(text=UNKNOWN)
                return []
            order = await order_to_rate(tracker, resident_id)
            if order is None:
                dispatcher.utter_message(text=NOTHING)
                return [] if found.for_elder else [SlotSet("resident_id", resident_id)]
        except (ApiError, ApiUnavailable):
            dispatcher.utter_message(text="系统暂时查不了，请稍后再说一次。")
            return []
        events: list[EventType] = [] if found.for_elder else [SlotSet("resident_id", resident_id)]
        text = tracker.latest_message.get("text", "")
        score, comment = read_rating(text, next(tracker.get_latest_entity_values("score"), None))
        if score is None:
            dispatcher.utter_message(
                text=f"请给「{subject(order)}」打个分：1到5分，5分最满意。",
                json_message={"expect": "rating", "order_id": order["id"]},
            )
            return events
        return events + await self._rate(dispatcher, tracker, order, score, comment, found)

    async def _rate(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        order: dict[str, Any],
        score: int,
        comment: str | None,
        found: Whom,
    ) -> list[EventType]:
        from actions import outbox

        path = f"/work-orders/{order['id']}/rating"
        body: dict[str, Any] = {"score": score, "comment": comment}
        if found.proxy_id is not None:
            body["proxy_id"] = found.proxy_id
        try:
            await api().rate(int(order["id"]), score, comment, proxy_id=found.proxy_id)
        except ApiUnavailable:
            await outbox.keep("POST", path, body, turn_key(tracker, "rating"), tracker.sender_id)
            dispatcher.utter_message(
                text="您的评价已经记下了。系统正在恢复，好了以后会替您交上。",
                json_message={"outbox": turn_key(tracker, "rating")},
            )
            return []
        except ApiError as exc:
            if exc.code == "proxy_not_active":
                dispatcher.utter_message(text=withdrawn_error().message)
                return forget(exc)
            if exc.code != "already_rated":
                dispatcher.utter_message(text=exc.message)
                return []
            given = (order.get("rating") or {}).get("score") or await _score_of(order["id"])
            dispatcher.utter_message(
                text=f"您已经给「{subject(order)}」打过{given}分了，谢谢您！",
                json_message={"order_id": order["id"], "already_rated": True},
            )
            return []
        dispatcher.utter_message(
            text=thanks(order, score, comment), json_message={"order_id": order["id"]}
        )
        if score <= LOW and order["status"] == "resolved":  # newly rated, not said again
            note = f"居民评了{score}分{'：' + comment if comment else ''}。请联系居民了解情况。"
            with contextlib.suppress(ApiError, ApiUnavailable):  # the rating stands anyway
                await api().note(int(order["id"]), note)
        return []


async def _score_of(order_id: int) -> int | None:
    """The score an order was rated with (the rating a concurrent turn gave it)."""
    try:
        return ((await api().order(int(order_id))).get("rating") or {}).get("score")
    except (ApiError, ApiUnavailable):
        return None
