"""Chat with the running assistant from a terminal, through the conversation gateway.

.venv/bin/python -m channels.chat_cli [--url http://127.0.0.1:8010] [--sender me]

A channel that cannot push (`api`): while staff have the conversation the assistant keeps
quiet and they call the resident back; the gateway says so after each message.
"""

from __future__ import annotations

import argparse
import os
import uuid

import httpx


def main() -> None:
    parser = argparse.ArgumentParser(description="邻里助手：在终端里对话")
    parser.add_argument(
        "--url",
        default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8010"),
        help="the conversation gateway (GATEWAY_URL)",
    )
    parser.add_argument(
        "--sender",
        default=f"terminal-{uuid.uuid4().hex[:8]}",
        help="conversation id; also taken as the WeChat openid of the resident",
    )
    args = parser.parse_args()
    print("邻里助手（输入 /quit 退出）")
    shown_notice = None
    with httpx.Client(base_url=args.url, timeout=90) as client:
        while True:
            try:
                text = input("您：").strip()
            except (EOFError, KeyboardInterrupt):
                break
            if text in ("/quit", "/exit"):
                break
            if not text:
                continue
            body = {"conversation": args.sender, "text": text, "client_id": uuid.uuid4().hex}
            try:
                answer = client.post("/api/messages", json=body)
            except httpx.HTTPError as exc:
                print(f"（连不上对话网关 {args.url}：{type(exc).__name__}）")
                continue
            data = answer.json() if answer.content else {}
            if answer.status_code != 200:
                print(f"（{data.get('message') or answer.status_code}）")
                continue
            for reply in data["replies"]:
                print(f"助手：{reply}")
            if data.get("notice") and data["notice"] != shown_notice:
                print(f"（{data['notice']}）")
            shown_notice = data.get("notice")


if __name__ == "__main__":
    main()
