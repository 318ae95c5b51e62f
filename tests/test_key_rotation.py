"""Rotating the data key loses nothing (workorders/services/rotation.py, README runbook).

Data written under the old key through the real API stays readable and findable while the new
key encrypts; `rotate-key` rewrites every value and hash; afterwards the API runs on the new
key alone and every value and look-up is as before. On both databases.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from datetime import datetime, timezone

import pytest

from tests.conftest import TEST_KEY
from tests.factories import repair_body, resident_body, unique_id_number, unique_phone
from tests.support import ROOT, Api, ApiProcess, Backend, seed_principals
from tests.test_sos_terminal import event_body, post_event
from workorders.crypto import FieldCipher
from workorders.services import rotation

NEW_KEY = base64.urlsafe_b64encode(b"linli-new-key-0123456789abcdefgh").decode()


def running(backend: Backend, fhir_url: str, tokens: dict[str, str], **env: str) -> Api:
    process = ApiProcess(backend.url, fhir_url, tokens, extra_env=env)
    process.start()
    return Api(process)


def rotate_key(backend: Backend, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workorders", "rotate-key", *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": backend.url, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def found(api: Api, kind: str, value: str) -> int | None:
    answer = api.call("bot", "GET", "/residents/lookup", params={"kind": kind, "value": value})
    return answer.json()["id"] if answer.status_code == 200 else None


def heartbeat(api: Api, device_id: str, secret: str) -> int:
    body = event_body("heartbeat", datetime.now(timezone.utc))[1]
    return post_event(api.base_url, device_id, secret, body).status_code


def test_a_rotated_key_loses_nothing(fresh_backend: Backend, fhir_url: str) -> None:
    fresh = fresh_backend
    tokens = seed_principals(fresh)
    old_kid, new_kid = FieldCipher(TEST_KEY).kid, FieldCipher(NEW_KEY).kid
    openid = f"o-{uuid.uuid4().hex}"
    elder = resident_body(
        phone=unique_phone(),
        id_number=unique_id_number(),
        identities=[{"kind": "wechat_openid", "value": openid}],
    )
    device_id = f"sos-{uuid.uuid4().hex[:10]}"

    api = running(fresh, fhir_url, tokens, LINLI_DATA_KEY=TEST_KEY)
    try:
        made = api.call("bot", "POST", "/residents", json=elder)
        assert made.status_code == 201, made.text
        elder_id = made.json()["id"]
        order = api.call("bot", "POST", "/work-orders", json=repair_body(elder_id))
        assert order.status_code == 201, order.text
        terminal = api.call(
            "agent", "POST", "/terminals", json={"device_id": device_id, "resident_id": elder_id}
        )
        assert terminal.status_code == 201, terminal.text
        secret = terminal.json()["secret"]
    finally:
        api.process.stop()
    before = rotation.census(fresh.factory, FieldCipher(TEST_KEY))
    assert set(before) == {old_kid}

    # Mid-rotation: the new key writes, the old one still reads and finds.
    api = running(fresh, fhir_url, tokens, LINLI_DATA_KEY=NEW_KEY, LINLI_DATA_KEYS_RETIRED=TEST_KEY)
    try:
        assert found(api, "phone", elder["phone"]) == elder_id
        assert found(api, "wechat_openid", openid) == elder_id
        assert heartbeat(api, device_id, secret) == 200
        twin = resident_body(id_number=elder["id_number"])  # the index sees new hashes only
        refused = api.call("bot", "POST", "/residents", json=twin)
        assert (refused.status_code, refused.json()["code"]) == (409, "already_registered")
        neighbour = resident_body(phone=unique_phone())
        made = api.call("bot", "POST", "/residents", json=neighbour)
        assert made.status_code == 201, made.text
        neighbour_id = made.json()["id"]

        keys = {"LINLI_DATA_KEY": NEW_KEY, "LINLI_DATA_KEYS_RETIRED": TEST_KEY}
        mid = rotation.census(fresh.factory, FieldCipher(NEW_KEY, [TEST_KEY]))
        assert mid[old_kid] == before[old_kid] and mid[new_kid] > 0
        first = rotate_key(fresh, "--batch", "2", **keys)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "under others: 0" in first.stdout, first.stdout
        again = rotate_key(fresh, **keys)
        assert "rewritten: 0 rows, 0 values" in again.stdout, again.stdout + again.stderr
    finally:
        api.process.stop()
    after = rotation.census(fresh.factory, FieldCipher(NEW_KEY))
    assert dict(after) == {new_kid: mid[old_kid] + mid[new_kid]}

    # The old key is gone: everything reads and is found as before.
    checked = rotate_key(fresh, "--check", LINLI_DATA_KEY=NEW_KEY)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    api = running(fresh, fhir_url, tokens, LINLI_DATA_KEY=NEW_KEY)
    try:
        assert found(api, "phone", elder["phone"]) == elder_id
        assert found(api, "wechat_openid", openid) == elder_id
        assert found(api, "phone", neighbour["phone"]) == neighbour_id
        assert heartbeat(api, device_id, secret) == 200
        shown = api.call("bot", "GET", f"/residents/{elder_id}").json()
        assert (shown["phone"], shown["id_number"]) == (elder["phone"], elder["id_number"])
        assert shown["address"]["room"] == elder["address"]["room"]
        assert shown["contacts"][0]["phone"] == elder["contacts"][0]["phone"]
        read = api.call("bot", "GET", f"/work-orders/{order.json()['id']}").json()
        assert read["details"]["description"] == "厨房水管漏水了"
        twin = api.call(
            "bot", "POST", "/residents", json=resident_body(id_number=elder["id_number"])
        )
        assert (twin.status_code, twin.json()["code"]) == (409, "already_registered")
    finally:
        api.process.stop()


def test_values_name_their_key_and_old_ones_open_with_a_retired_key() -> None:
    old, new = FieldCipher(TEST_KEY), FieldCipher(NEW_KEY, [TEST_KEY])
    nonce = os.urandom(12)  # a value from before key ids: "v1:" and no name
    legacy = "v1:" + base64.b64encode(nonce + old.current.aead.encrypt(nonce, b"3", None)).decode()
    assert new.decrypt(legacy) == "3" and new.sealed_with(legacy) is None
    sealed = old.encrypt("13800001234")
    assert sealed.startswith(f"v2:{old.kid}:")
    assert new.decrypt(sealed) == "13800001234"
    assert new.decrypt_bytes(old.encrypt_bytes(b"\x89PNG")) == b"\x89PNG"
    assert new.lookup_hashes("phone", "13800001234") == [
        new.lookup_hash("phone", "13800001234"),
        old.lookup_hash("phone", "13800001234"),
    ]
    with pytest.raises(ValueError, match=f"data key {new.kid} is not configured"):
        old.decrypt(new.encrypt("x"))
