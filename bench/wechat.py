"""WeChat: time to WeChat's acknowledgement and to the resident's answer at 20 messages a second.

Starts what `make run` runs for WeChat, as real processes on loopback: the FHIR stand-in, the
work-order API (fresh SQLite), the action server, Rasa (the trained model), the conversation
gateway with its WeChat channel, and the WeChat stand-in for WeChat's API (tokens and
customer-service messages). The bench itself plays WeChat's servers pushing: each push is a
safe-mode (AES) text message signed as WeChat signs it, sent at a fixed rate (open loop: a push
does not wait for the one before), from BENCH_WECHAT_USERS known residents in turn, each saying
one of the lines below.

  ack      push sent → the gateway's HTTP answer (what WeChat waits for: 5 s at most; the
           goal is p99 < 1 s). A passive reply carries the answer; an empty one means it
           follows as a customer-service message.
  answer   push sent → the resident has the answer: the passive reply's arrival, or the
           customer-service message's arrival at the stand-in (its inbox time).

It measures and reports, never asserts; var/bench/wechat.json; bench/README.md explains it.
Knobs: BENCH_WECHAT_RATE=20 (pushes a second), BENCH_WECHAT_SECONDS=30, BENCH_WECHAT_USERS=200,
BENCH_WECHAT_PASSIVE=0.8 (the gateway's WECHAT_PASSIVE_SECONDS), BENCH_WECHAT_DRAIN=240 (seconds
to wait after the last push for the answers still owed).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import json
import os
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/wechat.py`
    sys.path.insert(0, str(ROOT))

# ruff: noqa: E402
import httpx
import redis
import xmltodict
from sqlalchemy.orm import Session
from wechatpy.crypto import WeChatCrypto

from bench.dialogue_turns import MODEL, REDIS_URL, Service, percentiles, start
from bench.workorders_api import ApiServer, free_port, fresh_database, seed
from workorders.contract import Role
from workorders.db import make_engine
from workorders.models import Principal
from workorders.security import issue_token

RUN_ID = uuid.uuid4().hex[:8]
PREFIX = f"linli:bench:{RUN_ID}"
OUT = ROOT / "var" / "bench" / "wechat.json"
RATE = float(os.environ.get("BENCH_WECHAT_RATE", "20"))
SECONDS = float(os.environ.get("BENCH_WECHAT_SECONDS", "30"))
USERS = int(os.environ.get("BENCH_WECHAT_USERS", "200"))
PASSIVE = os.environ.get("BENCH_WECHAT_PASSIVE", "0.8")
DRAIN = float(os.environ.get("BENCH_WECHAT_DRAIN", "240"))  # seconds to wait for late answers
GOAL_ACK_P99_MS = 1000.0
LINES = ["你好", "高龄津贴怎么领", "我的工单", "谢谢你"]
GATEWAY_SCOPES = ["conversations:write", "events:read", "residents:lookup", "orders:read"]
ACCOUNT = {
    "WECHAT_TOKEN": secrets.token_hex(16),
    "WECHAT_AES_KEY": base64.b64encode(os.urandom(32)).decode().rstrip("="),
    "WECHAT_APP_ID": "wx" + secrets.token_hex(8),
    "WECHAT_APP_SECRET": secrets.token_hex(16),
}


def gateway_token(db_url: str) -> str:
    engine = make_engine(db_url)
    try:
        with Session(engine, future=True) as session:
            gateway = Principal(
                username="bench-gateway",
                display_name="bench gateway",
                role=Role.service,
                scopes=GATEWAY_SCOPES,
            )
            session.add(gateway)
            session.flush()
            token = issue_token(session, gateway, None)
            session.commit()
            return token
    finally:
        engine.dispose()


def sealed_push(openid: str, text: str, msg_id: int) -> tuple[dict[str, str], bytes]:
    """A text message as WeChat pushes it in safe mode: query and body."""
    token, key, app_id = (ACCOUNT[k] for k in ("WECHAT_TOKEN", "WECHAT_AES_KEY", "WECHAT_APP_ID"))
    crypto = WeChatCrypto(token, key, app_id)
    now, nonce = str(int(time.time())), secrets.token_hex(5)
    xml = (
        f"<xml><ToUserName>gh_6c696e6c6921</ToUserName><FromUserName>{openid}</FromUserName>"
        f"<CreateTime>{now}</CreateTime><MsgType>text</MsgType><Content>{text}</Content>"
        f"<MsgId>{msg_id}</MsgId></xml>"
    )
    envelope = xmltodict.parse(crypto.encrypt_message(xml, nonce, now))["xml"]
    body = (
        f"<xml><ToUserName>gh_6c696e6c6921</ToUserName><Encrypt>{envelope['Encrypt']}"
        "</Encrypt></xml>"
    ).encode()
    signature = hashlib.sha1("".join(sorted([token, now, nonce])).encode())
    query = {
        "signature": signature.hexdigest(),
        "timestamp": now,
        "nonce": nonce,
        "openid": openid,
        "encrypt_type": "aes",
        "msg_signature": envelope["MsgSignature"],
    }
    return query, body


async def push_all(gateway: str, standin: str, openids: list[str]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=500)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def one(n: int) -> None:
            openid = openids[n % len(openids)]
            query, body = sealed_push(openid, LINES[(n // len(openids)) % len(LINES)], 10**9 + n)
            sent_wall, sent = time.time(), time.perf_counter()
            try:
                response = await client.post(f"{gateway}/wechat", params=query, content=body)
            except httpx.HTTPError as exc:
                results.append({"n": n, "error": type(exc).__name__})
                return
            ack_ms = (time.perf_counter() - sent) * 1000
            passive = response.status_code == 200 and response.text.startswith("<")
            result = {"n": n, "openid": openid, "status": response.status_code}
            result |= {"ack_ms": ack_ms, "passive": passive, "sent_at": sent_wall}
            result["answer_ms"] = ack_ms if passive else None
            results.append(result)

        tasks = []
        started = time.perf_counter()
        for n in range(int(RATE * SECONDS)):
            await asyncio.sleep(max(0.0, started + n / RATE - time.perf_counter()))
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
        # Customer-service answers, once the backlog has drained (or DRAIN seconds passed): the
        # first one each push's resident got after it.
        expected = collections.Counter(
            r["openid"] for r in results if r.get("passive") is False and r.get("status") == 200
        )
        inboxes: dict[str, list[dict[str, Any]]] = {}
        drained_by = time.monotonic() + DRAIN
        while True:
            for openid in openids:
                got = await client.get(f"{standin}/standin/users/{openid}/inbox")
                inboxes[openid] = [i for i in got.json()["items"] if i["via"] == "custom"]
            missing = sum(max(n - len(inboxes[o]), 0) for o, n in expected.items())
            if not missing or time.monotonic() > drained_by:
                break
            await asyncio.sleep(2)
        for result in sorted(results, key=lambda r: r["n"]):
            if result.get("passive") is False and result.get("status") == 200:
                waiting = inboxes.get(result["openid"], [])
                if waiting:
                    item = waiting.pop(0)
                    result["answer_ms"] = (item["at"] - result["sent_at"]) * 1000
    return results


def main() -> int:
    if not MODEL.exists():
        print("bench/wechat.py: no trained model; run `make model` first", file=sys.stderr)
        return 1
    services: list[Service] = []
    redis_client = redis.Redis.from_url(REDIS_URL)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="linli-bench-") as tmp:
        workdir = Path(tmp)
        db = fresh_database("sqlite", "wechat", workdir)
        api = ApiServer(db.url, 1, workdir / "api.log")
        py = sys.executable
        try:
            token, _ = seed(db, 0)
            gw_token = gateway_token(db.url)
            fhir_port = free_port()
            services.append(start(
                "fhir",
                [py, "-m", "workorders.hospital.standin", "--port", str(fhir_port),
                 "--state", str(workdir / "fhir.json")],
                {}, f"http://127.0.0.1:{fhir_port}/fhir/metadata", workdir,
            ))  # fmt: skip
            os.environ["FHIR_BASE_URL"] = f"http://127.0.0.1:{fhir_port}/fhir"
            api.start()
            action_port, rasa_port = free_port(), free_port()
            services.append(start(
                "actions",
                [py, "-m", "rasa_sdk", "--actions", "actions", "--port", str(action_port)],
                {"WORKORDERS_URL": api.base_url, "LINLI_TOKEN_ACTIONS": token,
                 "REDIS_URL": REDIS_URL, "LINLI_REDIS_PREFIX": PREFIX},
                f"http://127.0.0.1:{action_port}/health", workdir,
            ))  # fmt: skip
            rasa = start(
                "rasa",
                [str(Path(py).parent / "rasa"), "run", "--enable-api", "--model", str(MODEL),
                 "--port", str(rasa_port), "--endpoints", "bot/endpoints.yml",
                 "--credentials", "bot/credentials.yml", "--interface", "127.0.0.1"],
                {"ACTION_SERVER_URL": f"http://127.0.0.1:{action_port}/webhook",
                 "REDIS_URL": REDIS_URL,
                 "RASA_REDIS_PREFIX": f"linlibench{RUN_ID}"},
                f"http://127.0.0.1:{rasa_port}/status", workdir,
            )  # fmt: skip
            services.append(rasa)
            gateway_port, standin_port = free_port(), free_port()
            gateway = start(
                "gateway",
                [py, "-m", "channels.gateway", "--port", str(gateway_port)],
                {"RASA_URL": f"http://127.0.0.1:{rasa_port}", "WORKORDERS_URL": api.base_url,
                 "LINLI_TOKEN_GATEWAY": gw_token, "LINLI_REDIS_PREFIX": PREFIX,
                 "WECHAT_API_BASE": f"http://127.0.0.1:{standin_port}",
                 "WECHAT_PASSIVE_SECONDS": PASSIVE, **ACCOUNT},
                f"http://127.0.0.1:{gateway_port}/health", workdir,
            )  # fmt: skip
            services.append(gateway)
            gateway_url = f"http://127.0.0.1:{gateway_port}"
            standin_url = f"http://127.0.0.1:{standin_port}"
            services.append(start(
                "standin",
                [py, "-m", "channels.wechat.standin", "--port", str(standin_port),
                 "--callback", f"{gateway_url}/wechat"],
                {**ACCOUNT, "WECHAT_MODE": "safe"}, f"{standin_url}/standin/config", workdir,
            ))  # fmt: skip
            headers = {"Authorization": f"Bearer {token}"}
            openids = [f"obench{RUN_ID}{i:04d}" for i in range(USERS)]
            for i, openid in enumerate(openids):
                body = {
                    "name": "王秀英",
                    "phone": f"137{(int(RUN_ID, 16) + i) % 100_000_000:08d}",
                    "community": "阳光社区",
                    "address": {"building": str(1 + i % 12), "unit": "2", "room": "502"},
                    "identities": [{"kind": "wechat_openid", "value": openid}],
                }
                httpx.post(
                    f"{api.base_url}/residents", json=body, headers=headers, timeout=30
                ).raise_for_status()
                # The stand-in lets the account message only its followers.
                httpx.post(f"{standin_url}/standin/users/{openid}/follow", timeout=60)
            cpu_started = time.perf_counter()
            results = asyncio.run(push_all(gateway_url, standin_url, openids))
            wall = time.perf_counter() - cpu_started
            rss = {s.name: round(s.rss_mb()[1]) for s in services}
        finally:
            for service in reversed(services):
                service.stop()
            api.stop()
            db.drop()
            for pattern in (f"{PREFIX}:*", f"linlibench{RUN_ID}*"):
                for key in redis_client.scan_iter(pattern):
                    redis_client.delete(key)
            redis_client.delete(os.environ["EVENT_STREAM"])

    ok = [r for r in results if r.get("status") == 200]
    acks = percentiles([r["ack_ms"] for r in ok])
    answered = [r["answer_ms"] for r in ok if r.get("answer_ms") is not None]
    answers = percentiles(answered)
    passive = sum(1 for r in ok if r["passive"])
    late = sum(1 for r in ok if r["ack_ms"] >= 5000)
    print(
        f"\n{len(results)} pushes at {RATE:g}/s over {SECONDS:g} s from {USERS} residents "
        f"(wall {wall:.0f} s; load average before {load_before[0]:.2f}): "
        f"{len(results) - len(ok)} failed, {late} acknowledged after WeChat's 5 s, "
        f"{passive} answered passively, {len(ok) - passive} by customer-service message, "
        f"{len(ok) - len(answered)} without an answer found"
    )
    print(f"  ack     p50 {acks['p50']:.0f} ms  p99 {acks['p99']:.0f} ms  max {acks['max']:.0f} ms"
          f"  (goal p99 < {GOAL_ACK_P99_MS:.0f} ms: "
          f"{'PASS' if acks['p99'] < GOAL_ACK_P99_MS else 'MISS'})")  # fmt: skip
    print(f"  answer  p50 {answers['p50']:.0f} ms  p95 {answers['p95']:.0f} ms  "
          f"max {answers['max']:.0f} ms")  # fmt: skip
    print(f"  peak memory MB: {rss}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "rate": RATE, "seconds": SECONDS, "users": USERS, "passive_wait_s": float(PASSIVE),
        "pushes": len(results), "failed": len(results) - len(ok), "late_acks": late,
        "passive": passive, "ack_ms": acks, "answer_ms": answers, "peak_rss_mb": rss,
        "load_before": load_before,
    }, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
