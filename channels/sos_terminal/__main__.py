"""Run the SOS terminal: on a Raspberry Pi, or simulated with the keyboard as the button.

    .venv/bin/python -m channels.sos_terminal --simulate          # against `make run`'s API
    .venv/bin/python -m channels.sos_terminal --device-id sos-0007  # on the device itself

Credentials (device id and secret) come from LINLI_TERMINAL_ID / LINLI_TERMINAL_SECRET, else
from <state-dir>/<device id>.json. The simulator, when it has none, provisions the demo
terminal through the API with a demo staff account and keeps the secret in var/ (mode 600).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from channels.sos_terminal.audio import RecordingSink, SoundDeviceSink
from channels.sos_terminal.device import DeviceConfig, SosTerminal
from channels.sos_terminal.queue import EventQueue, QueuedEvent
from channels.sos_terminal.signing import Credentials, Signer
from channels.sos_terminal.transport import Transport

ROOT = Path(__file__).resolve().parents[2]
DEMO_PASSWORD = "linli-demo-2026"
LIGHTS = {
    "sending": "闪烁（正在发送求助）",
    "confirmed": "常亮（服务器已确认）",
    "fault": "快闪（发送失败，请直接打电话）",
    "off": "熄灭",
}

log = logging.getLogger("channels.sos_terminal")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m channels.sos_terminal", description="一键呼叫终端（SOS terminal）"
    )
    parser.add_argument(
        "--simulate", action="store_true", help="mock pins; the keyboard is the button"
    )
    parser.add_argument("--api", default=os.environ.get("WORKORDERS_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--device-id", default=os.environ.get("LINLI_TERMINAL_ID", "sos-0000"))
    parser.add_argument("--state-dir", type=Path, default=ROOT / "var" / "sos-terminal")
    parser.add_argument("--button-pin", type=int, default=17)
    parser.add_argument("--led-pin", type=int, default=27)
    parser.add_argument("--no-heartbeat", action="store_true")
    parser.add_argument("--staff-user", default="admin", help="simulator: who provisions")
    parser.add_argument("--resident-id", type=int, help="simulator: provision for this resident")
    return parser


def credentials(args: argparse.Namespace) -> Credentials | None:
    secret = os.environ.get("LINLI_TERMINAL_SECRET")
    if secret:
        return Credentials(args.device_id, secret)
    path = args.state_dir / f"{args.device_id}.json"
    return Credentials.load(path) if path.exists() else None


def provision(args: argparse.Namespace) -> Credentials:
    """Register the simulated device as the demo staff would, and keep its secret locally."""
    password = os.environ.get("LINLI_DEMO_PASSWORD", DEMO_PASSWORD)
    with httpx.Client(base_url=args.api, timeout=10) as http:
        login = http.post("/auth/token", json={"username": args.staff_user, "password": password})
        if login.status_code != 200:
            raise SystemExit(f"登录 {args.staff_user} 失败：{login.json().get('message')}")
        http.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        resident_id = args.resident_id
        if resident_id is None:
            found = http.get(
                "/residents/lookup", params={"kind": "terminal", "value": args.device_id}
            )
            if found.status_code != 200:
                raise SystemExit(
                    f"没有居民关联终端 {args.device_id}；请用 --resident-id 指定居民。"
                )
            resident_id = found.json()["id"]
        made = http.post(
            "/terminals", json={"device_id": args.device_id, "resident_id": resident_id}
        )
        if made.status_code == 409 and made.json().get("code") == "terminal_exists":
            terminal_id = made.json()["details"]["terminal_id"]
            made = http.post(f"/terminals/{terminal_id}/secret")
        if made.status_code not in (200, 201):
            raise SystemExit(f"登记终端失败：{made.json().get('message')}")
        creds = Credentials(args.device_id, made.json()["secret"])
    path = args.state_dir / f"{args.device_id}.json"
    creds.save(path)
    print(f"已为居民 #{resident_id} 登记终端 {args.device_id}，密钥保存在 {path}")
    return creds


def _api_up(url: str) -> bool:
    try:
        return httpx.get(f"{url.rstrip('/')}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def simulate(args: argparse.Namespace) -> None:
    from gpiozero.pins.mock import MockFactory

    up = _api_up(args.api)
    creds = credentials(args)
    if creds is None:
        if not up:
            raise SystemExit(
                f"服务器 {args.api} 没有响应，也没有终端密钥。先在另一个终端运行 make run，再试。"
            )
        creds = provision(args)
    factory = MockFactory()
    config = DeviceConfig(button_pin=args.button_pin, led_pin=args.led_pin)

    def confirmed(entry: QueuedEvent, body: dict[str, Any]) -> None:
        print(
            f"  ✅ 服务器已确认：工单 #{body.get('order_id')}（{body.get('status')}）", flush=True
        )

    terminal = SosTerminal(
        config,
        EventQueue(args.state_dir / f"{args.device_id}.queue.db"),
        Transport(args.api, Signer(creds)),
        pin_factory=factory,
        sink=RecordingSink(echo=True),
        speak=lambda text: print(f"  🔊 {text}", flush=True),
        on_talk=lambda: print(
            "  🎙 短按：开始和邻里助手对话（语音会话由热线接入后在此接通）", flush=True
        ),
        on_light=lambda mode: print(f"  💡 指示灯：{LIGHTS.get(mode, mode)}", flush=True),
        on_confirmed=confirmed,
    )
    terminal.start(heartbeat=not args.no_heartbeat)
    pin = factory.pin(args.button_pin)
    print(f"一键呼叫终端模拟器：设备 {creds.device_id}，服务器 {args.api}")
    if not up:
        print("  （服务器现在没有响应：求助会先存在本机，连上后自动送出。make run 启动服务器。）")
    waiting = terminal.queue.depth()
    if waiting:
        print(f"  本机还有 {waiting} 条求助没送出，正在重试。")
    print(
        "按键（输入后回车）：\n"
        "  回车  短按：和助手说话\n"
        "  s     连按三次：求助\n"
        "  h     长按 2 秒：求助\n"
        "  t     现在播放每月自检提醒（之后短按一次即自检）\n"
        "  q     退出",
        flush=True,
    )

    def press(seconds: float) -> None:
        pin.drive_low()
        time.sleep(seconds)
        pin.drive_high()

    try:
        for line in sys.stdin:
            key = line.strip().lower()
            if key == "q":
                break
            if key == "":
                press(0.15)
            elif key == "s":
                for _ in range(3):
                    press(0.12)
                    time.sleep(0.15)
            elif key == "h":
                press(config.hold_seconds + 0.3)
            elif key == "t":
                terminal.check_self_test(force=True)
            else:
                print("  ？ 回车、s、h、t 或 q", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        left = terminal.queue.depth()
        if left:
            print(f"  还有 {left} 条求助没送出：保存在本机，下次启动后继续发送。")
        terminal.close()


def run_device(args: argparse.Namespace) -> None:
    creds = credentials(args)
    if creds is None:
        raise SystemExit(
            "没有终端密钥：设置 LINLI_TERMINAL_ID 和 LINLI_TERMINAL_SECRET，"
            f"或把登记时得到的密钥放在 {args.state_dir}/<设备编号>.json。"
        )
    terminal = SosTerminal(
        DeviceConfig(button_pin=args.button_pin, led_pin=args.led_pin),
        EventQueue(args.state_dir / f"{creds.device_id}.queue.db"),
        Transport(args.api, Signer(creds)),
        sink=SoundDeviceSink(),
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    terminal.start(heartbeat=not args.no_heartbeat)
    log.info("SOS terminal %s running against %s", creds.device_id, args.api)
    stop.wait()
    terminal.close()


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.simulate else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.simulate:
        simulate(args)
    else:
        run_device(args)


if __name__ == "__main__":
    main()
