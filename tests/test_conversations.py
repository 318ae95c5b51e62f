"""Conversations (`/conversations`): every message kept masked and encrypted, the takeover
state (bot, waiting, staff) that keeps the bot silent, one owner at a time, replies delivered
once, hand-back and close carried to the callback order, unclaimed hand-overs alerting
supervisors in office hours, how far a reply reaches (WeChat's 48 h window) and a reply the
channel refused (held for the resident's next message, or given up for a call). Against the
API as a real process on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select, text

from tests.support import Api, Backend
from workorders.client import ApiError as ClientError
from workorders.client import WorkOrdersClient
from workorders.models import AuditEntry, Event
from workorders.office_hours import OfficeHours
from workorders.schemas import HandoffIn
from workorders.services import conversations

SHANGHAI = ZoneInfo("Asia/Shanghai")
HOURS = OfficeHours.parse("mon-fri 08:30-17:30", "Asia/Shanghai")
THREE_MINUTES = timedelta(minutes=3)


def key() -> str:
    return f"web-{uuid.uuid4().hex}"


def say(api: Api, conversation: str, *texts: str, role: str = "resident", **body: Any) -> dict:
    response = api.call(
        "gateway",
        "POST",
        f"/conversations/{conversation}/messages",
        json={
            "channel": "web",
            "can_push": True,
            **body,
            "messages": [
                {
                    "role": role,
                    "text": t,
                    "client_id": str(uuid.uuid5(uuid.NAMESPACE_URL, conversation + t)),
                }
                for t in texts
            ],
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


def callback_order(api: Api, conversation: str) -> int:
    response = api.call(
        "bot",
        "POST",
        "/work-orders",
        json={
            "kind": "callback",
            "channel": "web",
            "details": {"reason": "居民要求人工服务", "summary": "居民：转人工"},
        },
        headers={"Idempotency-Key": f"{conversation}:callback"},
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def hand_over(api: Api, conversation: str, order_id: int | None = None) -> httpx.Response:
    return api.call(
        "bot",
        "POST",
        f"/conversations/{conversation}/handoff",
        json={
            "channel": "web",
            "reason": "request_human",
            "summary": "居民：我要找人工，电话13800138000",
            "order_id": order_id,
        },
    )


def detail(api: Api, conversation: str, account: str = "agent") -> dict:
    response = api.call(account, "GET", f"/conversations/{conversation}")
    assert response.status_code == 200, response.text
    return response.json()


def test_messages_are_kept_masked_and_a_retry_records_once(api: Api, backend: Backend) -> None:
    conversation = key()
    first = say(api, conversation, "我的电话是13800138000")
    assert first["state"] == "bot" and first["handoff_id"] is None
    assert first["last_handback"] is None
    again = say(api, conversation, "我的电话是13800138000")
    assert again["message_ids"] == first["message_ids"]
    say(api, conversation, "好的，已记下。", role="bot")
    seen = detail(api, conversation)
    assert [(m["role"], m["text"]) for m in seen["messages"]] == [
        ("resident", "我的电话是138****8000"),
        ("bot", "好的，已记下。"),
    ]
    with backend.session() as session:
        stored = session.execute(
            text("SELECT text FROM conversation_messages WHERE id = :id"),
            {"id": first["message_ids"][0]},
        ).scalar_one()
    assert "138" not in stored and "8000" not in stored  # encrypted at rest


def test_staff_reads_are_audited(api: Api, backend: Backend) -> None:
    conversation = key()
    say(api, conversation, "你好")
    detail(api, conversation)
    with backend.session() as session:
        entry = session.execute(
            select(AuditEntry)
            .where(AuditEntry.action == "read_conversation")
            .order_by(AuditEntry.id.desc())
            .limit(1)
        ).scalar_one()
    assert entry.detail == conversation


def test_the_takeover_from_hand_over_to_hand_back(api: Api) -> None:
    conversation = key()
    say(api, conversation, "转人工")
    order_id = callback_order(api, conversation)
    opened = hand_over(api, conversation, order_id)
    assert opened.status_code == 201, opened.text
    handoff = opened.json()["handoff"]
    assert handoff["summary"] == "居民：我要找人工，电话138****8000"
    # The dialogue asking again (Rasa re-runs actions) opens nothing new.
    again = hand_over(api, conversation, order_id)
    assert (again.status_code, again.json()["handoff"]["id"]) == (200, handoff["id"])

    waiting = say(api, conversation, "还要等多久")
    assert (waiting["state"], waiting["handoff_id"]) == ("waiting", handoff["id"])
    listed = api.call("agent", "GET", "/conversations", params={"state": "waiting"}).json()
    assert conversation in [c["key"] for c in listed["items"]]

    claimed = api.call("agent", "POST", f"/conversations/{conversation}/claim")
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["state"] == "staff"
    assert claimed.json()["handoff"]["claimed_by_name"] == "agent"
    order = api.call("agent", "GET", f"/work-orders/{order_id}").json()
    assert order["status"] == "accepted"
    assert order["assignee_id"] == claimed.json()["handoff"]["claimed_by"]

    state = api.call("gateway", "GET", f"/conversations/{conversation}/state").json()
    assert (state["state"], state["handoff_id"], state["handoff"]["claimed_by_name"]) == (
        "staff",
        handoff["id"],
        "agent",
    )
    assert api.call("agent", "GET", f"/conversations/{conversation}/state").status_code == 403
    unknown = api.call("gateway", "GET", f"/conversations/{key()}/state")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "conversation_not_found")

    other = api.call("agent2", "POST", f"/conversations/{conversation}/claim")
    assert (other.status_code, other.json()["code"]) == (409, "already_claimed")
    assert other.json()["message"] == "这个会话已由agent接手。"
    refused = api.call(
        "agent2", "POST", f"/conversations/{conversation}/replies", json={"text": "您好"}
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "not_owner")

    assert say(api, conversation, "喂？")["state"] == "staff"
    reply = api.call(
        "agent",
        "POST",
        f"/conversations/{conversation}/replies",
        json={"text": "您好，我是李网格员，师傅电话13900139000"},
    )
    assert reply.status_code == 201, reply.text
    pending = api.call("gateway", "GET", f"/conversations/{conversation}/outbound").json()
    assert [(m["id"], m["text"], m["author"]) for m in pending] == [
        (reply.json()["id"], "您好，我是李网格员，师傅电话13900139000", "agent")
    ]
    for _ in range(2):  # the channel's retry is a no-op
        done = api.call(
            "gateway",
            "POST",
            f"/conversations/{conversation}/outbound/{reply.json()['id']}/delivered",
        )
        assert done.status_code == 204, done.text
    assert api.call("gateway", "GET", f"/conversations/{conversation}/outbound").json() == []
    record = detail(api, conversation)
    staff_line = next(m for m in record["messages"] if m["role"] == "staff")
    assert staff_line["text"] == "您好，我是李网格员，师傅电话139****9000"
    assert staff_line["author"] == "agent" and staff_line["delivered_at"] is not None

    # Worked on meanwhile in the orders page: handing back still resolves it.
    moved = api.call(
        "agent", "POST", f"/work-orders/{order_id}/transitions", json={"to": "in_progress"}
    )
    assert moved.status_code == 200, moved.text
    back = api.call(
        "agent",
        "POST",
        f"/conversations/{conversation}/handback",
        json={"note": "已约好明天上午师傅上门"},
    )
    assert back.status_code == 200, back.text
    assert back.json()["state"] == "bot" and back.json()["handoff"] is None
    after = say(api, conversation, "谢谢")
    assert after["state"] == "bot"
    assert (after["last_handback"]["id"], after["last_handback"]["end_kind"]) == (
        handoff["id"],
        "handed_back",
    )
    assert after["last_handback"]["outcome"] == "已约好明天上午师傅上门"
    order = api.call("agent", "GET", f"/work-orders/{order_id}").json()
    assert order["status"] == "resolved"
    assert order["history"][-1]["reason"] == "交回助手：已约好明天上午师傅上门"
    roles = [(m["role"], m["text"]) for m in detail(api, conversation)["messages"]]
    assert ("system", "agent 接手了会话") in roles
    assert ("system", "agent 把会话交回助手：已约好明天上午师傅上门") in roles
    nothing = api.call("agent", "POST", f"/conversations/{conversation}/handback", json={})
    assert (nothing.status_code, nothing.json()["code"]) == (409, "no_handoff")


def test_closing_records_the_outcome_on_the_conversation_and_its_order(api: Api) -> None:
    conversation = key()
    order_id = callback_order(api, conversation)
    assert hand_over(api, conversation, order_id).status_code == 201
    # A supervisor may close one nobody claimed (dealt with by phone): it becomes theirs.
    closed = api.call(
        "supervisor",
        "POST",
        f"/conversations/{conversation}/close",
        json={"outcome": "已电话回访，问题解决"},
    )
    assert closed.status_code == 200, closed.text
    handoff = detail(api, conversation)["handoffs"][0]
    assert (handoff["end_kind"], handoff["outcome"], handoff["claimed_by_name"]) == (
        "closed",
        "已电话回访，问题解决",
        "supervisor",
    )
    order = api.call("agent", "GET", f"/work-orders/{order_id}").json()
    assert order["status"] == "resolved"
    assert order["history"][-1]["reason"] == "会话结束：已电话回访，问题解决"


def test_an_agent_cannot_end_what_another_owns(api: Api) -> None:
    conversation = key()
    assert hand_over(api, conversation).status_code == 201
    assert api.call("agent", "POST", f"/conversations/{conversation}/claim").status_code == 200
    refused = api.call(
        "agent2", "POST", f"/conversations/{conversation}/close", json={"outcome": "好"}
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "not_owner")
    assert detail(api, conversation)["state"] == "staff"


def test_of_two_staff_claiming_at_once_one_wins(api: Api) -> None:
    conversation = key()
    assert hand_over(api, conversation).status_code == 201
    results: dict[str, int] = {}
    start = threading.Barrier(2)

    def claim(account: str) -> None:
        with api.as_(account) as client:
            start.wait()
            results[account] = client.post(f"/conversations/{conversation}/claim").status_code

    threads = [threading.Thread(target=claim, args=(a,)) for a in ("agent", "agent2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results.values()) == [200, 409]
    winner = next(a for a, status in results.items() if status == 200)
    assert detail(api, conversation)["handoff"]["claimed_by_name"] == winner


def test_a_channel_that_cannot_push_gets_a_callback_instead(api: Api) -> None:
    conversation = f"hotline-{uuid.uuid4().hex}"
    order_id = callback_order(api, conversation)
    response = api.call(
        "bot",
        "POST",
        f"/conversations/{conversation}/handoff",
        json={"channel": "hotline", "reason": "not_understood", "order_id": order_id},
    )
    assert response.status_code == 201, response.text
    assert api.call("agent", "POST", f"/conversations/{conversation}/claim").status_code == 200
    refused = api.call(
        "agent", "POST", f"/conversations/{conversation}/replies", json={"text": "您好"}
    )
    assert refused.status_code == 409
    assert refused.json() == {
        "code": "cannot_push",
        "message": "这个渠道不能把文字送到居民那里，请按回拨工单给居民打电话。",
        "details": {"order_id": order_id},
    }


def test_events_tell_consoles_and_the_gateway_without_words(api: Api, backend: Backend) -> None:
    conversation = key()
    assert hand_over(api, conversation).status_code == 201
    say(api, conversation, "我叫王秀英，电话13800138000")
    api.call("agent", "POST", f"/conversations/{conversation}/claim")
    api.call("agent", "POST", f"/conversations/{conversation}/replies", json={"text": "好的"})
    api.call("agent", "POST", f"/conversations/{conversation}/close", json={"outcome": "好"})
    with backend.session() as session:
        rows = session.execute(
            select(Event.type, Event.payload)
            .where(Event.type.like("conversation.%"))
            .order_by(Event.id)
        ).all()
    mine = [(t, p) for t, p in rows if p["conversation"] == conversation]
    assert [t for t, _ in mine] == [
        "conversation.waiting",
        "conversation.message",
        "conversation.claimed",
        "conversation.reply",
        "conversation.closed",
    ]
    # Ids and names of things, never words: the only strings are the key, channel, reason.
    strings = {v for _, p in mine for v in p.values() if isinstance(v, str)}
    assert strings == {conversation, "web", "request_human"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/conversations/web%20x/messages",
            {"channel": "web", "messages": [{"role": "resident", "text": "你好"}]},
        ),
        ("/conversations/web-1/messages", {"channel": "web", "messages": []}),
        (
            "/conversations/web-1/messages",
            {"channel": "web", "messages": [{"role": "resident", "text": " "}]},
        ),
        (
            "/conversations/web-1/messages",
            {"channel": "web", "messages": [{"role": "staff", "text": "你好"}]},
        ),
        (
            "/conversations/web-1/messages",
            {"channel": "web", "messages": [{"role": "resident", "text": "长" * 2001}]},
        ),
        (
            "/conversations/web-1/messages",
            {"channel": "fax", "messages": [{"role": "resident", "text": "你好"}]},
        ),
        ("/conversations/web-1/handoff", {"channel": "web", "reason": "bored"}),
    ],
)
def test_bad_input_is_refused_and_nothing_is_kept(
    api: Api, backend: Backend, path: str, body: dict
) -> None:
    response = api.call("gateway", "POST", path, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_request"
    with backend.session() as session:
        assert (
            session.execute(
                text("SELECT count(*) FROM conversations WHERE key IN ('web 1', 'web x', 'web-1')")
            ).scalar_one()
            == 0
        )


def test_rights_staff_reply_services_write(api: Api) -> None:
    conversation = key()
    staff_write = api.call(
        "agent",
        "POST",
        f"/conversations/{conversation}/messages",
        json={"channel": "web", "messages": [{"role": "bot", "text": "假装是机器人"}]},
    )
    assert staff_write.status_code == 403
    assert hand_over(api, conversation).status_code == 201
    assert api.call("gateway", "POST", f"/conversations/{conversation}/claim").status_code == 403
    assert api.call("gateway", "GET", f"/conversations/{conversation}").status_code == 403
    assert api.call(None, "GET", "/conversations").status_code == 401


def _open_at(backend: Backend, moment: datetime) -> str:
    conversation = key()
    with backend.session() as session:
        conversations.hand_over(
            session,
            conversation,
            HandoffIn(channel="web", reason="request_human"),
            moment,
            HOURS,
            THREE_MINUTES,
        )
    return conversation


def _alerts(backend: Backend, moment: datetime, conversation: str) -> list[dict]:
    conversations.sweep_unclaimed(backend.factory, moment, HOURS, THREE_MINUTES)
    with backend.session() as session:
        rows = session.execute(
            select(Event.payload).where(Event.type == "conversation.unclaimed")
        ).scalars()
        return [p for p in rows if p["conversation"] == conversation]


def test_an_unclaimed_hand_over_alerts_supervisors_then_again(backend: Backend) -> None:
    tuesday = datetime(2026, 12, 1, 10, 0, tzinfo=SHANGHAI)
    conversation = _open_at(backend, tuesday)
    assert _alerts(backend, tuesday + timedelta(minutes=2, seconds=59), conversation) == []
    first = _alerts(backend, tuesday + THREE_MINUTES, conversation)
    assert [(a["alert"], a["waited_seconds"], a["notify"]) for a in first] == [
        (1, 180, "supervisor")
    ]
    assert len(_alerts(backend, tuesday + timedelta(minutes=5), conversation)) == 1
    second = _alerts(backend, tuesday + timedelta(minutes=6), conversation)
    assert [a["alert"] for a in second] == [1, 2]


def test_outside_office_hours_the_waiting_starts_when_staff_come_in(backend: Backend) -> None:
    friday_night = datetime(2026, 12, 4, 20, 0, tzinfo=SHANGHAI)
    conversation = _open_at(backend, friday_night)
    monday = datetime(2026, 12, 7, 8, 30, tzinfo=SHANGHAI)
    assert _alerts(backend, monday + timedelta(minutes=2), conversation) == []
    assert len(_alerts(backend, monday + THREE_MINUTES, conversation)) == 1


def test_a_claimed_hand_over_alerts_nobody(backend: Backend, api: Api) -> None:
    tuesday = datetime(2026, 12, 1, 10, 0, tzinfo=SHANGHAI)
    conversation = _open_at(backend, tuesday)
    assert api.call("agent", "POST", f"/conversations/{conversation}/claim").status_code == 200
    assert _alerts(backend, tuesday + timedelta(hours=1), conversation) == []


def test_the_api_tells_the_dialogue_when_staff_answer(api: Api) -> None:
    """The API runs on the wall clock: at work, staff answer now; otherwise at the opening."""
    body = hand_over(api, key()).json()
    now = datetime.now(timezone.utc)
    answer_from = datetime.fromisoformat(body["answer_from"])
    assert body["office_open"] == HOURS.is_open(now)
    if body["office_open"]:
        assert abs((answer_from - now).total_seconds()) < 5
    else:
        assert answer_from == HOURS.next_opening(now)


# --- reach (WeChat's 48 h window) and replies the channel could not deliver ----------------


def test_the_channel_reports_how_far_a_reply_reaches(api: Api, backend: Backend) -> None:
    conversation = key()
    path = f"/conversations/{conversation}/reach"
    body = {"open_until": "2026-12-07T09:30:00+08:00", "sends_left": 4}
    unknown = api.call("gateway", "PUT", path, json=body)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "conversation_not_found")
    say(api, conversation, "你好")
    assert hand_over(api, conversation).status_code == 201
    assert detail(api, conversation)["reach"] is None  # never reported: no limits

    for _ in range(2):  # idempotent: the same report again changes nothing
        assert api.call("gateway", "PUT", path, json=body).status_code == 204
    reach = detail(api, conversation)["reach"]
    assert reach["sends_left"] == 4
    assert datetime.fromisoformat(reach["open_until"]) == datetime(
        2026, 12, 7, 9, 30, tzinfo=SHANGHAI
    )
    listed = api.call("agent", "GET", "/conversations", params={"state": "waiting"}).json()
    assert next(c for c in listed["items"] if c["key"] == conversation)["reach"] == reach

    closed = {"open_until": None, "sends_left": 0}
    assert api.call("gateway", "PUT", path, json=closed).status_code == 204
    assert detail(api, conversation)["reach"] == closed  # the latest report stands
    assert api.call("agent", "PUT", path, json=body).status_code == 403
    with backend.session() as session:
        reported = session.execute(
            select(Event.payload).where(Event.type == "conversation.reach")
        ).scalars()
        mine = [p for p in reported if p["conversation"] == conversation]
    assert len(mine) == 2  # one per change, so consoles show the latest


@pytest.mark.parametrize(
    "body",
    [
        {"open_until": "2026-12-07T09:30:00+08:00", "sends_left": 6},
        {"open_until": "2026-12-07T09:30:00+08:00", "sends_left": -1},
        {"open_until": "2026-12-07T09:30:00+08:00", "sends_left": "4"},
        {"open_until": "2026-12-07T09:30:00+08:00", "sends_left": True},
        {"open_until": "2026-12-07T09:30:00", "sends_left": 4},
        {"open_until": 1796607000, "sends_left": 4},
        {"open_until": "明天", "sends_left": 4},
        {"sends_left": 4},
        {"open_until": None},
        {"open_until": None, "sends_left": 4, "openid": "o-abc"},
    ],
)
def test_a_bad_reach_report_is_refused(api: Api, body: dict) -> None:
    conversation = key()
    say(api, conversation, "你好")
    response = api.call("gateway", "PUT", f"/conversations/{conversation}/reach", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_request"
    assert response.json()["message"].startswith("请求内容有误，请检查这些字段：")
    assert detail(api, conversation)["reach"] is None


def test_what_staff_read_for_each_wechat_refusal() -> None:
    assert [conversations.refusal(c) for c in (45015, 45047, 43004, 40003, 45009)] == [
        "居民超过48小时没有发消息，微信不让再发客服消息",
        "这次能发的客服消息条数用完了",
        "居民已经取消关注公众号",
        "居民的微信号无效",
        "微信拒收（错误码 45009）",
    ]


def staff_reply(api: Api, conversation: str, order_id: int | None, text: str) -> int:
    """A hand-over claimed by agent, who replies: the reply's message id."""
    say(api, conversation, "你好")  # a channel that can push (the web chat)
    assert hand_over(api, conversation, order_id).status_code in (200, 201)
    assert api.call("agent", "POST", f"/conversations/{conversation}/claim").status_code == 200
    reply = api.call("agent", "POST", f"/conversations/{conversation}/replies", json={"text": text})
    assert reply.status_code == 201, reply.text
    return int(reply.json()["id"])


def undeliverable(
    api: Api, conversation: str, message_id: int, code: int, fallback: str
) -> httpx.Response:
    return api.call(
        "gateway",
        "POST",
        f"/conversations/{conversation}/outbound/{message_id}/undeliverable",
        json={"code": code, "fallback": fallback},
    )


def _undeliverable_events(backend: Backend, conversation: str) -> list[dict]:
    with backend.session() as session:
        rows = session.execute(
            select(Event.payload)
            .where(Event.type == "conversation.undeliverable")
            .order_by(Event.id)
        ).scalars()
        return [p for p in rows if p["conversation"] == conversation]


def _system_lines(api: Api, conversation: str) -> list[str]:
    return [m["text"] for m in detail(api, conversation)["messages"] if m["role"] == "system"]


HELD = "这条回复暂时发不到居民的微信（{}）。已发订阅消息提醒居民，居民回消息后会自动送达。"
GIVEN_UP = "这条回复没能发到居民的微信（{}）。请按回拨工单打电话联系居民。"


def test_a_reply_wechat_refused_is_held_then_given_up_for_a_call(
    api: Api, backend: Backend
) -> None:
    conversation = key()
    say(api, conversation, "我家水管漏了")
    order_id = callback_order(api, conversation)
    message_id = staff_reply(api, conversation, order_id, "师傅电话13900139000")
    outbound = f"/conversations/{conversation}/outbound"
    before = len(_system_lines(api, conversation))

    # Held: still pending in its exact words, a system line says why, staff are told.
    for _ in range(2):  # the channel's retry is a no-op
        held = undeliverable(api, conversation, message_id, 45015, "subscribe")
        assert held.status_code == 204, held.text
    pending = api.call("gateway", "GET", outbound).json()
    assert [(m["id"], m["text"]) for m in pending] == [(message_id, "师傅电话13900139000")]
    record = detail(api, conversation)
    line = next(m for m in record["messages"] if m["id"] == message_id)
    assert line["delivered_at"] is None
    assert line["undelivered"] == {
        "code": 45015,
        "reason": "居民超过48小时没有发消息，微信不让再发客服消息",
        "fallback": "subscribe",
    }
    assert _system_lines(api, conversation)[before:] == [
        HELD.format("居民超过48小时没有发消息，微信不让再发客服消息")
    ]
    order = api.call("agent", "GET", f"/work-orders/{order_id}").json()
    assert [h for h in order["history"] if h["action"] == "note"] == []  # nothing to call yet

    # Then failed for good: no longer pending, its words forgotten, never marked delivered.
    for _ in range(2):
        gone = undeliverable(api, conversation, message_id, 43004, "callback")
        assert gone.status_code == 204, gone.text
    assert api.call("gateway", "GET", outbound).json() == []
    line = next(m for m in detail(api, conversation)["messages"] if m["id"] == message_id)
    assert line["delivered_at"] is None
    assert line["text"] == "师傅电话139****9000"  # the masked record stays
    assert line["undelivered"] == {
        "code": 43004,
        "reason": "居民已经取消关注公众号",
        "fallback": "callback",
    }
    with backend.session() as session:
        kept = session.execute(
            text("SELECT delivery FROM conversation_messages WHERE id = :id"), {"id": message_id}
        ).scalar_one()
    assert kept is None
    said = GIVEN_UP.format("居民已经取消关注公众号")
    assert _system_lines(api, conversation)[before:] == [
        HELD.format("居民超过48小时没有发消息，微信不让再发客服消息"),
        said,
    ]
    # Whoever works the callback order reads the same, once.
    order = api.call("agent", "GET", f"/work-orders/{order_id}").json()
    assert [h["reason"] for h in order["history"] if h["action"] == "note"] == [said]

    # One event per change, ids and codes only, so open consoles refresh.
    events_seen = _undeliverable_events(backend, conversation)
    assert [(e["message_id"], e["code"], e["fallback"]) for e in events_seen] == [
        (message_id, 45015, "subscribe"),
        (message_id, 43004, "callback"),
    ]
    handoff_id = record["handoffs"][0]["id"]
    assert {e["handoff_id"] for e in events_seen} == {handoff_id}
    strings = {v for e in events_seen for v in e.values() if isinstance(v, str)}
    assert strings == {conversation, "web", "request_human", "subscribe", "callback"}

    # Given up is final: it cannot be held again, nor will it be delivered after all.
    again = undeliverable(api, conversation, message_id, 45015, "subscribe")
    assert (again.status_code, again.json()["code"]) == (409, "given_up")
    assert len(_undeliverable_events(backend, conversation)) == 2


def test_a_reply_given_up_without_a_callback_order_asks_staff_to_call(api: Api) -> None:
    conversation = key()
    message_id = staff_reply(api, conversation, None, "您好")
    response = undeliverable(api, conversation, message_id, 40003, "callback")
    assert response.status_code == 204, response.text
    assert _system_lines(api, conversation)[-1] == (
        "这条回复没能发到居民的微信（居民的微信号无效）。请打电话联系居民。"
    )
    assert api.call("gateway", "GET", f"/conversations/{conversation}/outbound").json() == []


def test_only_an_undelivered_staff_reply_of_that_conversation_can_be_refused(
    api: Api, backend: Backend
) -> None:
    conversation = key()
    said = say(api, conversation, "你好")
    message_id = staff_reply(api, conversation, None, "您好，请讲")
    other = key()
    other_reply = staff_reply(api, other, None, "您好")
    for wrong in (said["message_ids"][0], other_reply, 2**31 - 1):
        refused = undeliverable(api, conversation, wrong, 45015, "subscribe")
        assert (refused.status_code, refused.json()["code"]) == (404, "message_not_found")
    unknown = undeliverable(api, key(), message_id, 45015, "subscribe")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "conversation_not_found")

    done = api.call(
        "gateway", "POST", f"/conversations/{conversation}/outbound/{message_id}/delivered"
    )
    assert done.status_code == 204
    late = undeliverable(api, conversation, message_id, 45015, "callback")
    assert late.status_code == 409
    assert late.json() == {"code": "already_delivered", "message": "这条回复已经送到居民那里了。"}

    bad = api.call(
        "gateway",
        "POST",
        f"/conversations/{other}/outbound/{other_reply}/undeliverable",
        json={"code": 45015, "fallback": "sms"},
    )
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_request")
    staff = api.call(
        "agent",
        "POST",
        f"/conversations/{other}/outbound/{other_reply}/undeliverable",
        json={"code": 45015, "fallback": "callback"},
    )
    assert staff.status_code == 403
    assert _undeliverable_events(backend, conversation) == []
    assert _undeliverable_events(backend, other) == []


async def test_the_client_reports_reach_and_a_refused_reply(api: Api) -> None:
    conversation = key()
    message_id = staff_reply(api, conversation, None, "您好")
    client = WorkOrdersClient(api.base_url, api.process.tokens["gateway"])
    try:
        await client.set_reach(conversation, "2026-12-07T09:30:00+08:00", 4)
        await client.set_reach(conversation, None, 0)
        await client.undeliverable(conversation, message_id, 45047, "subscribe")
        await client.undeliverable(conversation, message_id, 45047, "subscribe")
        with pytest.raises(ClientError) as refused:
            await client.set_reach(conversation, None, 6)
        assert (refused.value.status, refused.value.code) == (422, "invalid_request")
    finally:
        await client.aclose()
    record = detail(api, conversation)
    assert record["reach"] == {"open_until": None, "sends_left": 0}
    assert _system_lines(api, conversation)[-1] == HELD.format("这次能发的客服消息条数用完了")
    assert [m["undelivered"] for m in record["messages"] if m["id"] == message_id] == [
        {"code": 45047, "reason": "这次能发的客服消息条数用完了", "fallback": "subscribe"}
    ]
