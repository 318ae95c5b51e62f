"""个人信息保护法: personal data encrypted at rest, masked in views and logs, reads audited."""

from __future__ import annotations

import uuid

from sqlalchemy import inspect, text

from tests.factories import resident_body, unique_id_number, unique_phone
from tests.support import Api, Backend
from workorders.crypto import mask_text


def _all_text(backend: Backend) -> str:
    """Every value of every table, read raw with SQL (no ORM type decoding)."""
    chunks = []
    with backend.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                chunks.append(" ".join(str(v) for v in row))
    return "\n".join(chunks)


def test_personal_data_is_encrypted_at_rest(api: Api, backend: Backend) -> None:
    phone, contact_phone, openid = unique_phone(), unique_phone(), f"o-{uuid.uuid4().hex}"
    id_number = unique_id_number()
    body = resident_body(
        phone=phone,
        id_number=id_number,
        address={"building": "7", "unit": "3", "room": "1601"},
        contacts=[{"name": "李华", "relation": "女儿", "phone": contact_phone}],
        identities=[{"kind": "wechat_openid", "value": openid}],
        service_notes={"chronic_illness": "糖尿病晚期"},
    )
    resident = api.call("bot", "POST", "/residents", json=body)
    assert resident.status_code == 201, resident.text
    order = api.call(
        "bot",
        "POST",
        "/work-orders",
        json={
            "kind": "callback",
            "channel": "hotline",
            "resident_id": resident.json()["id"],
            "details": {"reason": "想问低保", "summary": f"请回电 {phone}"},
        },
    )
    assert order.status_code == 201, order.text
    raw = _all_text(backend)
    for secret in (phone, contact_phone, id_number, openid, '"1601"', "糖尿病晚期", "想问低保"):
        assert secret not in raw, f"{secret} stored in plaintext"
    # ...and the API reads them back for those entitled to them.
    shown = api.call("bot", "GET", f"/residents/{resident.json()['id']}").json()
    assert shown["phone"] == phone and shown["id_number"] == id_number
    assert shown["address"]["text"] == "7号楼3单元1601"


def test_an_address_without_a_unit_is_kept_and_masked(api: Api) -> None:
    """Towers and many older blocks have no 单元: 5号楼1201."""
    body = resident_body(address={"building": "5", "room": "1201"})
    rid = api.call("bot", "POST", "/residents", json=body).json()["id"]
    shown = api.call("bot", "GET", f"/residents/{rid}").json()["address"]
    assert shown == {"building": "5", "unit": None, "room": "1201", "text": "5号楼1201"}
    masked = api.call("agent", "GET", f"/residents/{rid}").json()["address"]
    assert masked == {"building": "5", "unit": None, "room": "****", "text": "5号楼****"}


def test_staff_see_masked_data_unless_they_reveal_and_reveals_are_audited(api: Api) -> None:
    phone, id_number = unique_phone(), unique_id_number()
    rid = api.call(
        "bot", "POST", "/residents", json=resident_body(phone=phone, id_number=id_number)
    ).json()["id"]
    masked = api.call("agent", "GET", f"/residents/{rid}").json()
    assert masked["masked"] is True
    assert masked["phone"] == f"{phone[:3]}****{phone[-4:]}"
    assert masked["id_number"] == f"1101**********{id_number[-4:]}"
    assert masked["address"]["text"] == "3号楼*单元***"
    assert masked["service_notes"] is None
    assert all("****" in c["phone"] for c in masked["contacts"])

    revealed = api.call("agent", "GET", f"/residents/{rid}", params={"reveal": "true"}).json()
    assert revealed["phone"] == phone and revealed["masked"] is False

    audit = api.call(
        "admin", "GET", "/audit", params={"resource_type": "resident", "resource_id": rid}
    ).json()
    actions = sorted(e["action"] for e in audit["items"])
    assert actions == ["read_resident", "read_resident", "reveal_personal_data"]


def test_a_channel_without_the_right_gets_masked_data(api: Api) -> None:
    openid = f"o-{uuid.uuid4().hex}"
    phone = unique_phone()
    api.call(
        "bot",
        "POST",
        "/residents",
        json=resident_body(phone=phone, identities=[{"kind": "wechat_openid", "value": openid}]),
    )
    found = api.call(
        "wechat", "GET", "/residents/lookup", params={"kind": "wechat_openid", "value": openid}
    )
    assert found.status_code == 200
    assert found.json()["phone"] == f"{phone[:3]}****{phone[-4:]}"
    assert found.json()["identities"][0]["value"] != openid


def test_free_text_in_orders_is_masked_for_staff(api: Api) -> None:
    phone, id_number = unique_phone(), unique_id_number()
    rid = api.call("bot", "POST", "/residents", json=resident_body()).json()["id"]
    order = api.call(
        "bot",
        "POST",
        "/work-orders",
        json={
            "kind": "repair",
            "channel": "wechat",
            "resident_id": rid,
            "details": {
                "category": "门窗",
                "location": "home",
                "description": f"窗户坏了，联系我 {phone}，身份证 {id_number}",
            },
        },
    ).json()
    staff = api.call("agent", "GET", f"/work-orders/{order['id']}").json()
    assert phone not in staff["details"]["description"]
    assert id_number not in staff["details"]["description"]
    assert f"{phone[:3]}****{phone[-4:]}" in staff["details"]["description"]


def test_mask_text() -> None:
    assert (
        mask_text("我的电话是13812345678，老伴139 1234 5678")
        == "我的电话是138****5678，老伴139****5678"
    )
    assert mask_text("身份证11010119450101123X") == "身份证1101**********123X"
    assert mask_text("3号楼502室") == "3号楼502室"


def test_api_log_has_no_personal_identifiers(api: Api) -> None:
    phone, openid = unique_phone(), f"o-{uuid.uuid4().hex}"
    api.call(
        "bot",
        "POST",
        "/residents",
        json=resident_body(phone=phone, identities=[{"kind": "wechat_openid", "value": openid}]),
    )
    api.call("bot", "POST", "/residents", json=resident_body(phone="12345"))  # invalid: 422
    api.call("bot", "GET", "/residents/lookup", params={"kind": "phone", "value": phone})
    api.call("bot", "GET", "/residents/lookup", params={"kind": "wechat_openid", "value": openid})
    api.call("agent", "GET", "/residents", params={"phone": phone})
    log = api.process.log_text()
    assert "GET /residents/lookup?kind=wechat_openid&value=*** 200" in log
    assert phone not in log
    assert openid not in log
