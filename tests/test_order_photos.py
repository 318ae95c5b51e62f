"""Photos residents send on WeChat (`POST /conversations/{key}/photos`): kept, encrypted, with
their most recent open repair order of the last PHOTO_ATTACH_MINUTES (60), a retry of the same
bytes answered with the same ids, nothing kept without such an order; read back by staff only
(`GET /work-orders/{id}/photos/{photo_id}`, audited). Against the API as a real process on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
import zlib
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from sqlalchemy import select, text

from tests.browser import Console
from tests.factories import repair_body, resident_body
from tests.support import ROOT, Api, Backend
from workorders.client import ApiError as ClientError
from workorders.client import WorkOrdersClient
from workorders.crypto import cipher
from workorders.models import AuditEntry, Event

JPEG = (ROOT / "channels" / "wechat" / "standin" / "sample.jpg").read_bytes()
MAX_BYTES = 2 * 1024 * 1024
NO_RECENT = {
    "code": "no_recent_repair",
    "message": "没有找到您最近的报修，照片没有保存。如需报修，请先说一下哪里坏了。",
}


def png(width: int = 2, height: int = 2) -> bytes:
    """A real PNG, grey pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def resident(api: Api) -> int:
    answer = api.call("bot", "POST", "/residents", json=resident_body())
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def conversation(api: Api, resident_id: int | None) -> str:
    """A WeChat conversation, the resident known (or not yet)."""
    key = f"wx-{uuid.uuid4().hex}"
    body: dict[str, Any] = {
        "channel": "wechat",
        "can_push": True,
        "messages": [{"role": "resident", "text": "厨房水管漏水了", "client_id": key}],
    }
    if resident_id is not None:
        body["resident_id"] = resident_id
    answer = api.call("gateway", "POST", f"/conversations/{key}/messages", json=body)
    assert answer.status_code == 200, answer.text
    return key


def order(api: Api, resident_id: int, **overrides: Any) -> int:
    answer = api.call("bot", "POST", "/work-orders", json=repair_body(resident_id, **overrides))
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def send(
    api: Api, key: str, data: bytes, content_type: str | None = "image/jpeg", account="gateway"
) -> httpx.Response:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return api.call(account, "POST", f"/conversations/{key}/photos", content=data, headers=headers)


def detail(api: Api, order_id: int) -> dict[str, Any]:
    answer = api.call("agent", "GET", f"/work-orders/{order_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def system_lines(api: Api, key: str) -> list[str]:
    answer = api.call("agent", "GET", f"/conversations/{key}")
    assert answer.status_code == 200, answer.text
    return [m["text"] for m in answer.json()["messages"] if m["role"] == "system"]


def photos_of(backend: Backend, resident_id: int) -> int:
    with backend.session() as session:
        return int(
            session.execute(
                text(
                    "SELECT count(*) FROM order_photos p JOIN work_orders o ON o.id = p.order_id "
                    "WHERE o.resident_id = :r"
                ),
                {"r": resident_id},
            ).scalar_one()
        )


def age(backend: Backend, order_id: int, minutes: float) -> None:
    """Make the order as old as that (the API reads the wall clock)."""
    with backend.session() as session:
        session.execute(
            text("UPDATE work_orders SET created_at = :at WHERE id = :id"),
            {"at": datetime.now(timezone.utc) - timedelta(minutes=minutes), "id": order_id},
        )
        session.commit()


def test_a_photo_joins_the_recent_repair_once(api: Api, backend: Backend) -> None:
    someone = resident(api)
    key = conversation(api, someone)
    older = order(api, someone)
    latest = order(
        api, someone, details={"category": "电", "location": "home", "description": "厨房灯不亮"}
    )
    first = send(api, key, JPEG)
    assert first.status_code == 201, first.text
    body = first.json()
    assert set(body) == {"order_id", "photo_id"}
    assert body["order_id"] == latest

    # WeChat retries the push: the same bytes, the same answer, nothing new.
    again = send(api, key, JPEG)
    assert (again.status_code, again.json()) == (200, body)
    assert photos_of(backend, someone) == 1

    shown = detail(api, latest)
    assert len(shown["photos"]) == 1
    photo = shown["photos"][0]
    assert {k: photo[k] for k in ("id", "content_type", "size")} == {
        "id": body["photo_id"],
        "content_type": "image/jpeg",
        "size": len(JPEG),
    }
    assert [h["reason"] for h in shown["history"] if h["action"] == "photo"] == [
        "居民通过微信发来一张照片"
    ]
    assert detail(api, older)["photos"] == []
    assert system_lines(api, key) == [f"照片已附在报修工单 #{latest} 上"]

    # A second, different photo joins the same order.
    second = send(api, key, png(), "image/png")
    assert second.status_code == 201, second.text
    assert second.json()["order_id"] == latest
    assert [p["content_type"] for p in detail(api, latest)["photos"]] == [
        "image/jpeg",
        "image/png",
    ]
    with backend.session() as session:
        added = (
            session.execute(
                select(Event.payload)
                .where(Event.type == "order.photo_added", Event.order_id == latest)
                .order_by(Event.id)
            )
            .scalars()
            .all()
        )
    assert [p["photo_id"] for p in added] == [body["photo_id"], second.json()["photo_id"]]


def test_staff_read_the_photo_and_each_read_is_audited(api: Api, backend: Backend) -> None:
    someone = resident(api)
    key = conversation(api, someone)
    order_id = order(api, someone)
    photo_id = send(api, key, JPEG).json()["photo_id"]
    read = api.call("agent", "GET", f"/work-orders/{order_id}/photos/{photo_id}")
    assert read.status_code == 200
    assert read.content == JPEG
    assert read.headers["content-type"] == "image/jpeg"
    assert read.headers["cache-control"] == "no-store"
    assert read.headers["x-content-type-options"] == "nosniff"
    assert read.headers["content-disposition"] == "inline"
    with backend.session() as session:
        entry = session.execute(
            select(AuditEntry)
            .where(AuditEntry.action == "read_photo", AuditEntry.resource_id == order_id)
            .order_by(AuditEntry.id.desc())
            .limit(1)
        ).scalar_one()
    assert (entry.resource_type, entry.detail) == ("order", f"photo {photo_id}")

    # Services never see a resident's photo, even with orders:read.
    for service in ("gateway", "bot"):
        refused = api.call(service, "GET", f"/work-orders/{order_id}/photos/{photo_id}")
        assert refused.status_code == 403, service
        assert refused.json()["code"] == "forbidden"
    # Only through its own order.
    other = order(api, resident(api))
    missing = api.call("agent", "GET", f"/work-orders/{other}/photos/{photo_id}")
    assert (missing.status_code, missing.json()["code"]) == (404, "photo_not_found")
    gone = api.call("agent", "GET", f"/work-orders/{2**31 - 1}/photos/{photo_id}")
    assert (gone.status_code, gone.json()["code"]) == (404, "order_not_found")


def test_the_photo_is_encrypted_at_rest(api: Api, backend: Backend) -> None:
    someone = resident(api)
    key = conversation(api, someone)
    order(api, someone)
    photo_id = send(api, key, JPEG).json()["photo_id"]
    with backend.session() as session:
        raw = session.execute(
            text("SELECT data, size, sha256, source FROM order_photos WHERE id = :id"),
            {"id": photo_id},
        ).one()
    stored = bytes(raw.data)
    assert JPEG not in stored
    assert b"\xff\xd8\xff" not in stored[:40]
    assert b"Lavc" not in stored  # the JPEG's own comment
    assert len(stored) == len(JPEG) + 34  # version, key id, nonce, AES-GCM tag
    assert stored.startswith(b"v2" + bytes.fromhex(cipher().kid))
    assert (raw.size, raw.source) == (len(JPEG), "wechat")
    assert raw.sha256 == hashlib.sha256(JPEG).hexdigest()


def test_a_repair_older_than_the_window_still_counts_until_it_is_60_minutes_old(
    api: Api, backend: Backend
) -> None:
    someone = resident(api)
    key = conversation(api, someone)
    order_id = order(api, someone)
    age(backend, order_id, 59)
    kept = send(api, key, JPEG)
    assert (kept.status_code, kept.json()["order_id"]) == (201, order_id)
    age(backend, order_id, 61)
    late = send(api, key, png(), "image/png")
    assert (late.status_code, late.json()) == (404, NO_RECENT)
    assert photos_of(backend, someone) == 1


def test_nothing_is_kept_without_a_recent_open_repair(api: Api, backend: Backend) -> None:
    someone = resident(api)
    key = conversation(api, someone)
    # Nothing at all yet.
    assert (send(api, key, JPEG).status_code, send(api, key, JPEG).json()) == (404, NO_RECENT)
    # Other kinds of order do not take photos.
    for body in (
        {"kind": "policy_question", "channel": "wechat", "details": {"question": "高龄津贴怎么领"}},
        {"kind": "complaint", "channel": "wechat", "details": {"text": "楼道灯坏了没人修"}},
    ):
        made = api.call("bot", "POST", "/work-orders", json={**body, "resident_id": someone})
        assert made.status_code == 201, made.text
    assert send(api, key, JPEG).status_code == 404
    # A repair too old.
    old = order(api, someone)
    age(backend, old, 61)
    assert send(api, key, JPEG).json() == NO_RECENT
    # A recent repair, but cancelled; another resolved.
    for end in (["cancelled"], ["accepted", "in_progress", "resolved"]):
        closed = order(api, someone)
        for step in end:
            moved = api.call(
                "agent",
                "POST",
                f"/work-orders/{closed}/transitions",
                json={"to": step, "reason": "测试"},
            )
            assert moved.status_code == 200, moved.text
        refused = send(api, key, JPEG)
        assert (refused.status_code, refused.json()) == (404, NO_RECENT)
    # Another resident's recent repair is not theirs.
    order(api, resident(api))
    assert send(api, key, JPEG).status_code == 404
    assert photos_of(backend, someone) == 0
    assert system_lines(api, key) == []


def test_no_resident_known_keeps_nothing(api: Api) -> None:
    unknown = conversation(api, None)
    assert (send(api, unknown, JPEG).status_code, send(api, unknown, JPEG).json()) == (
        404,
        NO_RECENT,
    )
    never = send(api, f"wx-{uuid.uuid4().hex}", JPEG)
    assert (never.status_code, never.json()) == (404, NO_RECENT)


def test_too_large_wrong_type_and_disguised_bytes_are_refused(api: Api, backend: Backend) -> None:
    someone = resident(api)
    key = conversation(api, someone)
    order_id = order(api, someone)
    big = send(api, key, JPEG[:3] + b"\x00" * (MAX_BYTES - 2))
    assert (big.status_code, big.json()) == (
        413,
        {"code": "photo_too_large", "message": "照片太大了，最大 2 MB。"},
    )
    wrong = {"code": "photo_type", "message": "只能接收 JPEG 或 PNG 格式的照片。"}
    for content_type in ("image/gif", "text/plain", "application/octet-stream", None):
        refused = send(api, key, JPEG, content_type)
        assert (refused.status_code, refused.json()) == (415, wrong), content_type
    # The header says PNG, the bytes are a JPEG (and the reverse, and nothing at all).
    for data, content_type in ((JPEG, "image/png"), (png(), "image/jpeg"), (b"", "image/jpeg")):
        disguised = send(api, key, data, content_type)
        assert (disguised.status_code, disguised.json()) == (
            415,
            {"code": "photo_type", "message": f"照片的内容不是 {content_type} 格式，没有保存。"},
        )
    assert photos_of(backend, someone) == 0
    # Exactly 2 MB is still a photo; parameters on the type are fine.
    limit = send(api, key, JPEG[:3] + b"\x00" * (MAX_BYTES - 3), "image/jpeg; charset=binary")
    assert (limit.status_code, limit.json()["order_id"]) == (201, order_id)
    assert detail(api, order_id)["photos"][0]["size"] == MAX_BYTES


def test_only_the_channel_may_attach(api: Api) -> None:
    someone = resident(api)
    key = conversation(api, someone)
    order(api, someone)
    assert send(api, key, JPEG, account="agent").status_code == 403
    assert send(api, key, JPEG, account="wechat").status_code == 403
    assert send(api, key, JPEG, account=None).status_code == 401


async def test_the_client_attaches_a_photo(api: Api) -> None:
    someone = resident(api)
    key = conversation(api, someone)
    order_id = order(api, someone)
    alone = conversation(api, None)
    client = WorkOrdersClient(api.base_url, api.process.tokens["gateway"])
    try:
        kept = await client.attach_photo(key, JPEG, "image/jpeg")
        assert kept["order_id"] == order_id and kept["photo_id"] >= 1
        assert await client.attach_photo(key, JPEG, "image/jpeg") == kept
        with pytest.raises(ClientError) as nowhere:
            await client.attach_photo(alone, JPEG, "image/jpeg")
        assert (nowhere.value.status, nowhere.value.code) == (404, "no_recent_repair")
        assert nowhere.value.message == NO_RECENT["message"]
        with pytest.raises(ClientError) as disguised:
            await client.attach_photo(key, JPEG, "image/png")
        assert (disguised.value.status, disguised.value.code) == (415, "photo_type")
    finally:
        await client.aclose()


# --- the console's 工单 page, in Chromium ------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_order_page_shows_the_photo_as_a_thumbnail(api: Api, console: Console) -> None:
    someone = resident(api)
    key = conversation(api, someone)
    order_id = order(api, someone)
    photo_id = send(api, key, JPEG).json()["photo_id"]
    page = console.open("agent", f"/console/orders?order={order_id}")
    thumb = page.locator("#d-photos img")
    expect(thumb).to_have_count(1)
    expect(thumb).to_have_attribute("alt", "居民发来的照片")
    expect(thumb).to_have_attribute("src", f"/work-orders/{order_id}/photos/{photo_id}")
    page.wait_for_function(
        "() => { const i = document.querySelector('#d-photos img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    assert thumb.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [320, 240]
    link = page.locator("#d-photos a")
    expect(link).to_have_attribute("href", f"/work-orders/{order_id}/photos/{photo_id}")
    with page.context.expect_page() as opened:
        link.click()
    full = opened.value
    full.wait_for_load_state()
    assert full.evaluate("() => document.images[0].naturalWidth") == 320
    expect(page.locator("#d-history")).to_contain_text("居民通过微信发来一张照片")
    console.screenshot(page, "console-order-photo")
    assert console.errors == []
