"""Two application hosts behind HAProxy; one dies in the middle of a resident's repair form.

Hosts (network namespaces): `data` (PostgreSQL, Redis), `app1` and `app2` (each the API, the
gateway, the action server and Rasa, as docs/deployment.md lays out an application host), `lb`
(HAProxy from ops.deploy, in front of the API, the gateways and the dialogue workers). A
resident chats on the web page through the balancer. After the bot has asked for the address,
the host whose Rasa asked it (HAProxy's log says which) dies: every process, then its link.
The resident's answer is taken by the other host: the form goes on at the phone number, and the
order is made once, with what was said before the death.
"""

from __future__ import annotations

import os
import re
import secrets
import uuid
from pathlib import Path

import httpx

from channels.gateway.webchat import conversation_key
from tests.cluster import services
from tests.cluster.hosts import network
from tests.factories import unique_phone
from tests.support import make_backend, seed_principals

APPS = ("app1", "app2")


def test_a_dead_dialogue_host_leaves_the_form_where_it_was(tmp_path: Path) -> None:
    with network(["data", *APPS, "lb"], tmp_path) as hosts:
        database = services.postgres(hosts["data"]).url
        lb = hosts["lb"].address
        backend = make_backend(database)
        try:
            tokens = seed_principals(backend)
        finally:
            backend.dispose()
        prefix = f"linli{uuid.uuid4().hex[:6]}"
        env = {
            "DATABASE_URL": database,
            "REDIS_URL": services.redis(hosts["data"]),
            "LINLI_DATA_KEY": os.environ["LINLI_DATA_KEY"],
            "WORKORDERS_URL": f"http://{lb}:8000",
            "RASA_URL": f"http://{lb}:5005",
            "LINLI_TOKEN_ACTIONS": tokens["bot"],
            "LINLI_TOKEN_GATEWAY": tokens["gateway"],
            "LINLI_REDIS_PREFIX": prefix,
            "RASA_REDIS_PREFIX": prefix,
        }
        for name in APPS:
            services.api(hosts[name], env)
            services.dialogue(hosts[name], env)
        ports = {"api": 8000, "gateway": 8010, "dialogue": 5005}
        inventory = {
            "hosts": {name: host.address for name, host in hosts.items()},
            "balancer": {"host": "lb", "ports": ports},
            "services": {name: {"port": port, "hosts": list(APPS)} for name, port in ports.items()},
        }
        services.balancer(hosts["lb"], inventory, tmp_path)
        for name in APPS:
            services.gateway(hosts[name], env)
        chat = f"http://{lb}:8010/chat/api/messages"
        services.until("the balancer", lambda: services.answers(f"http://{lb}:8010/health"))
        secret = secrets.token_hex(32)

        def say(text: str) -> str:
            body = {"secret": secret, "client_id": uuid.uuid4().hex, "text": text}
            answer = httpx.post(chat, json=body, timeout=90)
            assert answer.status_code == 200, answer.text
            return "\n".join(answer.json()["replies"])

        assert "怎么称呼" in say("厨房水管漏水了")
        assert "几号楼" in say("我叫王秀英")
        log = (tmp_path / "lb-haproxy.log").read_text()
        last = re.findall(r" dialogue/(app\d) ", log)[-1]
        hosts[last].kill()
        assert "电话" in say("三号楼二单元五零二")
        phone = unique_phone()
        assert "报修记下了" in say(phone)

        key = conversation_key(secret)
        bot = {"Authorization": f"Bearer {tokens['bot']}"}
        with httpx.Client(base_url=f"http://{lb}:8000", headers=bot, timeout=10) as api:
            found = api.get("/residents/lookup", params={"kind": "web", "value": key})
            assert found.status_code == 200, found.text
            resident = found.json()
            assert (resident["name"], resident["phone"]) == ("王秀英", phone)
            assert resident["address"]["text"] == "3号楼2单元502"
            listed = api.get("/work-orders", params={"resident_id": resident["id"]})
            [order] = listed.json()["items"]
        assert (order["kind"], order["details"]["category"]) == ("repair", "水管")
