"""Chat with the running assistant from a terminal, through Rasa's REST channel.

.venv/bin/python -m channels.chat_cli [--url http://127.0.0.1:5005] [--sender me]
"""

from __future__ import annotations

import argparse
import uuid

import httpx


def main() -> None:
    parser = argparse.ArgumentParser(description="邻里助手：在终端里对话")
    parser.add_argument("--url", default="http://127.0.0.1:5005")
    parser.add_argument(
        "--sender",
        default=f"terminal-{uuid.uuid4().hex[:8]}",
        help="conversation id; also taken as the WeChat openid of the resident",
    )
    args = parser.parse_args()
    print("邻里助手（输入 /quit 退出）")
    with httpx.Client(timeout=60) as client:
        while True:
            try:
                text = input("您：").strip()
            except (EOFError, KeyboardInterrupt):
                break
            if text in ("/quit", "/exit"):
                break
            if not text:
                continue
            reply = client.post(
                f"{args.url}/webhooks/rest/webhook", json={"sender": args.sender, "message": text}
            )
            reply.raise_for_status()
            for message in reply.json():
                if message.get("text"):
                    print(f"助手：{message['text']}")


if __name__ == "__main__":
    main()
