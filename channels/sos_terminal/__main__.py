"""Run the SOS terminal: on a Raspberry Pi, or simulated (keyboard, or headless with an HTTP
control port for make run and scripts).

    .venv/bin/python -m channels.sos_terminal --simulate          # against `make run`'s API
    .venv/bin/python -m channels.sos_terminal --control-port 8095   # headless: curl presses
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
from pathlib import Path

from channels.sos_terminal.audio import SoundDeviceSink
from channels.sos_terminal.device import DeviceConfig, SosTerminal
from channels.sos_terminal.queue import EventQueue
from channels.sos_terminal.signing import Signer
from channels.sos_terminal.simulator import (
    ROOT,
    Panel,
    api_up,
    build,
    credentials,
    provision,
    voice_line,
)
from channels.sos_terminal.transport import Transport
from channels.sos_terminal.voice_line import SoundDeviceAudio

log = logging.getLogger("channels.sos_terminal")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m channels.sos_terminal", description="一键呼叫终端（SOS terminal）"
    )
    parser.add_argument(
        "--simulate", action="store_true", help="mock pins; the keyboard is the button"
    )
    parser.add_argument(
        "--control-port",
        type=int,
        nargs="?",
        const=8095,
        metavar="PORT",
        help="mock pins, no keyboard: an HTTP control server on 127.0.0.1:PORT (default 8095) "
        "with POST /press, /sos, /hold and GET /state (for make run and scripts)",
    )
    parser.add_argument("--api", default=os.environ.get("WORKORDERS_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--device-id", default=os.environ.get("LINLI_TERMINAL_ID", "sos-0000"))
    parser.add_argument("--state-dir", type=Path, default=ROOT / "var" / "sos-terminal")
    parser.add_argument("--button-pin", type=int, default=17)
    parser.add_argument("--led-pin", type=int, default=27)
    parser.add_argument("--no-heartbeat", action="store_true")
    parser.add_argument(
        "--hotline",
        default=os.environ.get("LINLI_HOTLINE_URI", "sip:hotline@127.0.0.1:5070"),
        help="the hotline a short press calls (LINLI_HOTLINE_URI)",
    )
    parser.add_argument(
        "--hotline-ca",
        type=Path,
        default=os.environ.get("LINLI_HOTLINE_CA") or None,
        help="CA file that signed the hotline's TLS certificate (LINLI_HOTLINE_CA), for "
        "--hotline sip:…;transport=tls",
    )
    parser.add_argument(
        "--sip-port",
        type=int,
        default=int(os.environ.get("LINLI_TERMINAL_SIP_PORT", "0")),
        help="UDP port for calls (0: any; the heartbeat tells the server where to call back)",
    )
    parser.add_argument("--no-voice", action="store_true", help="no voice line: presses only")
    parser.add_argument("--staff-user", default="admin", help="simulator: who provisions")
    parser.add_argument("--resident-id", type=int, help="simulator: provision for this resident")
    return parser


def simulate(args: argparse.Namespace) -> None:
    up = api_up(args.api)
    creds = credentials(args)
    if creds is None:
        if not up:
            raise SystemExit(
                f"服务器 {args.api} 没有响应，也没有终端密钥。先在另一个终端运行 make run，再试。"
            )
        creds = provision(args)
    terminal, finger = build(args, creds, Panel())
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
    try:
        for line in sys.stdin:
            key = line.strip().lower()
            if key == "q":
                break
            if key == "":
                finger.press()
            elif key == "s":
                finger.triple()
            elif key == "h":
                finger.hold()
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
    if not args.no_voice:
        terminal.use_voice(voice_line(args, creds, SoundDeviceAudio))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    terminal.start(heartbeat=not args.no_heartbeat)
    log.info("SOS terminal %s running against %s", creds.device_id, args.api)
    stop.wait()
    terminal.close()


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    simulated = args.simulate or args.control_port is not None
    logging.basicConfig(
        level=logging.WARNING if simulated else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.control_port is not None:
        from channels.sos_terminal.control import serve

        serve(args)
    elif args.simulate:
        simulate(args)
    else:
        run_device(args)


if __name__ == "__main__":
    main()
