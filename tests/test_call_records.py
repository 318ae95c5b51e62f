"""Call records (`/calls`): every call leaves one, numbers in transcripts are masked before they
are stored, caller and transcript are encrypted at rest, staff reads are audited. Against the
API as a real process on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.factories import repair_body, resident_body, unique_id_number, unique_phone
from tests.support import Api, ApiProcess, Backend
from workorders.client import ApiError, WorkOrdersClient
from workorders.contract import Role
from workorders.crypto import cipher, mask_text
from workorders.models import Principal
from workorders.security import issue_token

# The hotline's service account as deployed (data/demo/community.json), one per database.
HOTLINE_SCOPES = ["residents:lookup", "orders:read", "events:read", "emergency:create"]
_hotline_tokens: dict[str, str] = {}

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=timezone(timedelta(hours=8)))


@pytest.fixture
def hotline(api: Api, backend: Backend) -> Iterator[httpx.Client]:
    """A client as `svc-hotline`, the only account that writes call records."""
    token = _hotline_tokens.get(backend.url)
    if token is None:
        with backend.session() as session:
            principal = Principal(
                username=f"svc-hotline-{uuid.uuid4().hex[:8]}",
                display_name="语音热线",
                role=Role.service,
                scopes=[*HOTLINE_SCOPES, "calls:write"],
            )
            session.add(principal)
            session.flush()
            token = issue_token(session, principal, None)
            session.commit()
        _hotline_tokens[backend.url] = token
    with httpx.Client(
        base_url=api.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        yield client


def call_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "call_id": f"{uuid.uuid4().hex}@sip.linli.local",
        "channel": "hotline",
        "caller": unique_phone(),
        "resident_id": None,
        "started_at": T0.isoformat(),
        "ended_at": (T0 + timedelta(seconds=95)).isoformat(),
        "outcome": "completed",
        "transcript": [
            {"at": T0.isoformat(), "speaker": "bot", "text": "您好，这里是邻里助手。"},
            {
                "at": (T0 + timedelta(seconds=4)).isoformat(),
                "speaker": "caller",
                "text": "厨房水管漏水了",
                "confidence": 0.91,
            },
        ],
        "order_ids": [],
    }
    body.update(overrides)
    return body


def new_resident(api: Api) -> int:
    made = api.call("bot", "POST", "/residents", json=resident_body())
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


def raw_row(backend: Backend, record_id: int) -> dict[str, Any]:
    """The stored row as the database has it (no ORM type decoding)."""
    with backend.engine.connect() as conn:
        row = conn.execute(
            text("SELECT * FROM call_records WHERE id = :id"), {"id": record_id}
        ).one()
    return dict(row._mapping)


# --- recording -------------------------------------------------------------------------------


def test_a_call_is_stored_encrypted_with_every_number_in_the_transcript_masked(
    api: Api, backend: Backend, hotline: httpx.Client
) -> None:
    resident_id = new_resident(api)
    order = api.call("bot", "POST", "/work-orders", json=repair_body(resident_id))
    assert order.status_code == 201, order.text
    caller, other, id_number = unique_phone(), unique_phone(), unique_id_number()
    spoken = "".join("零幺二三四五六七八九"[int(d)] for d in other)
    lines = [
        f"我的电话是{caller}，我儿子{other[:3]} {other[3:7]} {other[7:]}",
        f"身份证号{id_number}",
        "家里座机010-62345678，我女儿在杭州(0571)88886666",
        f"再说一遍，{spoken}",
        f"{' '.join(spoken)}",
    ]
    body = call_body(
        caller=f"+86 {caller}",
        resident_id=resident_id,
        outcome="callback",
        transcript=[
            {"at": (T0 + timedelta(seconds=i)).isoformat(), "speaker": "caller", "text": line}
            for i, line in enumerate(lines)
        ]
        + [{"at": T0.isoformat(), "speaker": "bot", "text": f"好的，回电号码{caller}。"}],
        order_ids=[order.json()["id"]],
        keypad=f"2#{other}#",
        transfer_target=other,
    )
    made = hotline.post("/calls", json=body)
    assert made.status_code == 201, made.text
    out = made.json()
    assert out["caller"] == f"{caller[:3]}****{caller[-4:]}" and out["masked"] is True
    assert out["resident_id"] == resident_id and out["order_ids"] == [order.json()["id"]]
    assert out["duration_seconds"] == 95 and out["turns"] == 6 and out["outcome"] == "callback"

    row = raw_row(backend, out["id"])
    for column in ("caller", "transcript", "keypad", "transfer_target"):
        assert str(row[column]).startswith("v2:"), f"{column} is not ciphertext"
    raw = json.dumps(row, default=str, ensure_ascii=False)
    for secret in (caller, other, id_number, spoken, "62345678", "88886666", "女儿在杭州"):
        assert secret not in raw
    assert row["caller_hash"] == cipher().lookup_hash("phone", caller)

    stored = [turn["text"] for turn in json.loads(cipher().decrypt(row["transcript"]))]
    assert stored[0] == (
        f"我的电话是{caller[:3]}****{caller[-4:]}，我儿子{other[:3]}****{other[-4:]}"
    )
    assert stored[1] == f"身份证号{id_number[:4]}{'*' * 10}{id_number[-4:]}"
    assert stored[2] == "家里座机010****5678，我女儿在杭州(0571)****6666"
    assert stored[3] == f"再说一遍，{spoken[:3]}****{spoken[-4:]}"
    assert stored[4] == f"{' '.join(spoken[:3])}****{' '.join(spoken[-4:])}"
    for line in stored:
        assert caller not in line and other not in line and id_number not in line
    assert cipher().decrypt(row["caller"]) == caller  # kept in full, encrypted: for callbacks
    assert cipher().decrypt(row["keypad"]) == f"2#{other[:3]}****{other[-4:]}#"
    assert row["audio_path"] is None


def test_the_same_call_again_is_a_retry_and_a_different_body_is_refused(
    api: Api, backend: Backend, hotline: httpx.Client
) -> None:
    body = call_body()
    first = hotline.post("/calls", json=body)
    assert first.status_code == 201, first.text
    again = hotline.post("/calls", json=body)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()

    changed = hotline.post("/calls", json={**body, "outcome": "abandoned"})
    assert changed.status_code == 422
    assert changed.json()["code"] == "idempotency_key_reused"
    assert changed.json()["details"]["record_id"] == first.json()["id"]
    with backend.engine.connect() as conn:
        count = conn.execute(
            text("SELECT COUNT(*) FROM call_records WHERE call_id = :c"), {"c": body["call_id"]}
        ).scalar_one()
    assert count == 1


def test_withheld_numbers_and_extensions_are_recorded_nonsense_is_refused(
    api: Api, backend: Backend, hotline: httpx.Client
) -> None:
    for withheld in ("anonymous", "", None):
        made = hotline.post("/calls", json=call_body(caller=withheld))
        assert made.status_code == 201, made.text
        assert made.json()["caller"] is None
        assert raw_row(backend, made.json()["id"])["caller_hash"] is None
    extension = hotline.post("/calls", json=call_body(caller="8001"))
    assert extension.status_code == 201 and extension.json()["caller"] == "****"

    for bad in (
        {"caller": "sip:alice@example.org"},
        {"ended_at": (T0 - timedelta(seconds=1)).isoformat()},
        {"started_at": "2026-11-21T09:00:00"},  # no zone
        {"started_at": "0001-01-01T00:00:00+01:00"},  # a clock, not a call
        {"started_at": (T0 - timedelta(days=2)).isoformat()},  # two days long
        {"outcome": "hung_up"},
        {"channel": "wechat"},
        {"keypad": "12x"},
        {"transcript": [{"at": T0.isoformat(), "speaker": "robot", "text": "喂"}]},
        {
            "transcript": [
                {"at": T0.isoformat(), "speaker": "caller", "text": "喂", "confidence": 2}
            ]
        },
    ):
        refused = hotline.post("/calls", json=call_body(**bad))
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["code"] == "invalid_request"


def test_orders_and_resident_must_exist(api: Api, backend: Backend, hotline: httpx.Client) -> None:
    resident_id = new_resident(api)
    order_id = api.call("bot", "POST", "/work-orders", json=repair_body(resident_id)).json()["id"]
    missing = 2**31 - 1
    body = call_body(order_ids=[order_id, missing])
    refused = hotline.post("/calls", json=body)
    assert refused.status_code == 422
    assert refused.json()["code"] == "order_not_found"
    assert refused.json()["details"]["missing"] == [missing]

    nobody = hotline.post("/calls", json=call_body(resident_id=missing))
    assert nobody.status_code == 422 and nobody.json()["code"] == "resident_not_found"

    # Nothing was stored: the corrected body under the same call id is a new record.
    fixed = hotline.post("/calls", json={**body, "order_ids": [order_id, order_id]})
    assert fixed.status_code == 201, fixed.text
    assert fixed.json()["order_ids"] == [order_id]


def test_audio_is_refused_unless_the_deployment_keeps_recordings(
    api: Api, backend: Backend, hotline: httpx.Client, fhir_url: str
) -> None:
    body = call_body(audio_path="var/calls/2026/11/21/call.wav")
    refused = hotline.post("/calls", json=body)
    assert refused.status_code == 422
    assert refused.json()["code"] == "audio_not_kept"
    assert "KEEP_CALL_AUDIO" in refused.json()["message"]
    if backend.name != "sqlite":
        return  # one backend is enough for a configuration switch
    keeping = ApiProcess(backend.url, fhir_url, {}, extra_env={"KEEP_CALL_AUDIO": "true"})
    keeping.start()
    try:
        made = httpx.post(
            f"{keeping.base_url}/calls", json=body, headers=hotline.headers, timeout=30
        )
    finally:
        keeping.stop()
    assert made.status_code == 201, made.text
    assert made.json()["has_audio"] is True
    assert made.json()["audio_path"] == "var/calls/2026/11/21/call.wav"


# --- reading ---------------------------------------------------------------------------------


def test_rights_writing_is_for_the_hotline_reading_for_staff(
    api: Api, hotline: httpx.Client
) -> None:
    assert api.call(None, "POST", "/calls", json=call_body()).status_code == 401
    for account in ("bot", "terminal", "agent", "supervisor"):
        refused = api.call(account, "POST", "/calls", json=call_body())
        assert refused.status_code == 403, account
        assert refused.json()["code"] == "forbidden"
    made = hotline.post("/calls", json=call_body())
    assert made.status_code == 201
    for account in ("bot", "wechat"):
        assert api.call(account, "GET", "/calls").status_code == 403
        assert api.call(account, "GET", f"/calls/{made.json()['id']}").status_code == 403
    assert hotline.get("/calls").status_code == 403  # writes, never reads back
    for account in ("agent", "supervisor", "admin"):
        assert api.call(account, "GET", f"/calls/{made.json()['id']}").status_code == 200


def test_staff_see_the_caller_masked_unless_they_reveal_and_every_read_is_audited(
    api: Api, hotline: httpx.Client
) -> None:
    resident_id = new_resident(api)
    caller = unique_phone()
    made = hotline.post(
        "/calls",
        json=call_body(
            caller=caller,
            resident_id=resident_id,
            outcome="transferred",
            transfer_target="网格员",
            transcript=[
                {"at": T0.isoformat(), "speaker": "bot", "text": "您好，这里是邻里助手。"},
                {"at": T0.isoformat(), "speaker": "caller", "text": f"我要转人工，我是{caller}"},
                {"at": T0.isoformat(), "speaker": "staff", "text": "您好，我是李网格员。"},
            ],
        ),
    ).json()
    record_id = made["id"]
    masked = f"{caller[:3]}****{caller[-4:]}"
    me = api.call("agent", "GET", "/auth/me").json()
    audit_query = {"resource_type": "call", "principal_id": me["id"]}
    before = api.call("admin", "GET", "/audit", params={**audit_query, "limit": 1}).json()
    seen = max((e["id"] for e in before["items"]), default=0)

    page = api.call("agent", "GET", "/calls", params={"resident_id": resident_id}).json()
    assert page["total"] == 1
    [item] = page["items"]
    assert item["caller"] == masked and "transcript" not in item
    assert item["summary"] == f"我要转人工，我是{masked}"
    assert item["transfer_target"] == "网格员" and item["turns"] == 3

    detail = api.call("agent", "GET", f"/calls/{record_id}").json()
    assert detail["caller"] == masked and detail["masked"] is True
    assert [t["speaker"] for t in detail["transcript"]] == ["bot", "caller", "staff"]
    assert caller not in json.dumps(detail)

    revealed = api.call("agent", "GET", f"/calls/{record_id}", params={"reveal": "true"}).json()
    assert revealed["caller"] == caller and revealed["masked"] is False
    assert caller not in json.dumps(revealed["transcript"])  # stored masked: nothing to reveal

    entries = api.call("admin", "GET", "/audit", params=audit_query).json()["items"]
    mine = [(e["action"], e["resource_id"]) for e in entries if e["id"] > seen]
    assert sorted(mine, key=str) == sorted(
        [
            ("list_calls", None),
            ("read_call", record_id),
            ("read_call", record_id),
            ("reveal_personal_data", record_id),
        ],
        key=str,
    )


def test_list_filters(api: Api, hotline: httpx.Client) -> None:
    resident_id = new_resident(api)
    caller = unique_phone()
    early = hotline.post(
        "/calls", json=call_body(caller=caller, resident_id=resident_id, outcome="abandoned")
    ).json()
    later = T0 + timedelta(hours=2)
    late = hotline.post(
        "/calls",
        json=call_body(
            resident_id=resident_id,
            channel="terminal",
            started_at=later.isoformat(),
            ended_at=(later + timedelta(seconds=30)).isoformat(),
        ),
    ).json()

    def ids(**params: Any) -> list[int]:
        answer = api.call("agent", "GET", "/calls", params={"resident_id": resident_id, **params})
        assert answer.status_code == 200, answer.text
        return [c["id"] for c in answer.json()["items"]]

    assert ids() == [late["id"], early["id"]]  # newest first
    assert ids(outcome="abandoned") == [early["id"]]
    assert ids(channel="terminal") == [late["id"]]
    assert ids(**{"from": (T0 + timedelta(hours=1)).isoformat()}) == [late["id"]]
    assert ids(to=(T0 + timedelta(hours=1)).isoformat()) == [early["id"]]
    assert ids(phone=caller) == [early["id"]]
    assert ids(limit=1, offset=1) == [early["id"]]
    for bad in ("2026-11-21T09:00:00", "0001-01-01T00:00:00+01:00"):
        refused = api.call("agent", "GET", "/calls", params={"from": bad})
        assert refused.status_code == 422 and refused.json()["code"] == "invalid_period"
    assert api.call("agent", "GET", "/calls/2147483647").json()["code"] == "call_not_found"


async def test_the_client_records_a_call_and_its_retry(api: Api, hotline: httpx.Client) -> None:
    token = hotline.headers["Authorization"].removeprefix("Bearer ")
    client = WorkOrdersClient(api.base_url, token)
    body = call_body(started_at=T0, ended_at=T0 + timedelta(minutes=2))
    body["transcript"][0]["at"] = T0
    try:
        first = await client.record_call(body)
        assert (await client.record_call(body))["id"] == first["id"]
        with pytest.raises(ApiError) as refused:
            await client.record_call({**body, "outcome": "failed"})
        assert refused.value.status == 422 and refused.value.code == "idempotency_key_reused"
    finally:
        await client.aclose()


# --- the masking rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("said", "stored"),
    [
        ("电话13812345678", "电话138****5678"),
        ("+86 138-1234-5678", "+86 138****5678"),
        ("013812345678", "0138****5678"),
        ("幺三八一二三四五六七八", "幺三八****五六七八"),
        ("幺三八，零零幺三，八零零零", "幺三八****八零零零"),
        ("幺 三 八 一 二 三 四 五 六 七 八", "幺 三 八****五 六 七 八"),
        ("010-62345678", "010****5678"),
        ("（0571）8888 6666", "（0571）****6666"),
        ("零二一 六二三四 五六七八", "零二一****五六七八"),
        ("座机是八八八八六六六六", "座机是****六六六六"),
        ("身份证11010119450101123X", "身份证1101**********123X"),
        ("幺幺零幺零幺幺九四五零幺零幺幺二三叉", "幺幺零幺**********幺二三叉"),
        # Not phone numbers: left alone.
        ("工单号202611230001，金额12345678元，2026-11-21", None),
        ("三号楼二单元五零二", None),
        ("一二三四五六七八九十", None),
        ("138****5678", None),
    ],
)
def test_masking_rules(said: str, stored: str | None) -> None:
    assert mask_text(said) == (stored or said)
