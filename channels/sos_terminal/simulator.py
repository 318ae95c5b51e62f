"""The simulated terminal: mock GPIO pins, a finger that presses them with real timing, and a
panel that shows what a person in the room would see and hear.

Shared by the keyboard simulator (`--simulate`) and the headless one (`--control-port`,
control.py): the device program itself (device.py) is the same as on a Raspberry Pi.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from channels.sos_terminal.audio import RecordingSink
from channels.sos_terminal.device import DeviceConfig, SosTerminal
from channels.sos_terminal.queue import EventQueue, QueuedEvent
from channels.sos_terminal.signing import Credentials, Signer
from channels.sos_terminal.transport import Transport
from channels.sos_terminal.voice_line import (
    ANSWERED,
    DIALING,
    ENDED,
    TALKING,
    UNREACHABLE,
    AudioDevice,
    RecordedAudio,
    SoundDeviceAudio,
    VoiceLine,
    VoiceLineConfig,
    has_sound_card,
)

if TYPE_CHECKING:
    from gpiozero.pins.mock import MockFactory

ROOT = Path(__file__).resolve().parents[2]
DEMO_PASSWORD = "linli-demo-2026"
LIGHTS = {
    "sending": "闪烁（正在发送求助）",
    "confirmed": "常亮（服务器已确认）",
    "fault": "快闪（发送失败，请直接打电话）",
    "off": "熄灭",
    "talking": "慢闪（正在和邻里助手通话）",
}
VOICE_STATES = {
    DIALING: "短按：正在接通邻里助手……",
    ANSWERED: "社区热线打来电话，已自动接听",
    TALKING: "通话中（再短按一次挂断）",
    ENDED: "通话结束",
    UNREACHABLE: "接不通语音热线",
}
# A short press, and the pause between the three presses of an SOS: well inside the device's
# press gap (0.6 s) and triple window (1.5 s), as a person's quick presses are.
TAP_SECONDS = 0.15
TRIPLE_TAP_SECONDS = 0.12
TRIPLE_PAUSE_SECONDS = 0.15
HOLD_MARGIN_SECONDS = 0.3


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
    print(f"已为居民 #{resident_id} 登记终端 {args.device_id}，密钥保存在 {path}", flush=True)
    return creds


def api_up(url: str) -> bool:
    try:
        return httpx.get(f"{url.rstrip('/')}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class Panel:
    """What a person in the room would see and hear: printed as it happens (the keyboard
    simulator's screen, make run's log) and kept for the control server's GET /state."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.light = "off"
        self.spoken: deque[str] = deque(maxlen=20)
        self.last_answer: dict[str, Any] | None = None
        self.confirmed = 0
        self.talks = 0
        self.voice = "idle"

    def speak(self, text: str) -> None:
        with self._lock:
            self.spoken.append(text)
        print(f"  🔊 {text}", flush=True)

    def show_light(self, mode: str) -> None:
        with self._lock:
            self.light = mode
        print(f"  💡 指示灯：{LIGHTS.get(mode, mode)}", flush=True)

    def on_confirmed(self, entry: QueuedEvent, body: dict[str, Any]) -> None:
        with self._lock:
            self.last_answer, self.confirmed = body, self.confirmed + 1
        print(
            f"  ✅ 服务器已确认：工单 #{body.get('order_id')}（{body.get('status')}）", flush=True
        )

    def on_voice(self, state: str) -> None:
        if state == DIALING:
            with self._lock:
                self.talks += 1
        self.voice = state
        print(f"  🎙 {VOICE_STATES.get(state, state)}", flush=True)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "light": self.light,
                "light_text": LIGHTS.get(self.light, self.light),
                "last_spoken": self.spoken[-1] if self.spoken else None,
                "spoken": list(self.spoken),
                "last_answer": self.last_answer,
                "confirmed": self.confirmed,
                "talks": self.talks,
                "voice": self.voice,
            }


class Finger:
    """Presses the mock button with real timing, one gesture at a time (one finger)."""

    def __init__(self, factory: MockFactory, config: DeviceConfig) -> None:
        self._pin = factory.pin(config.button_pin)
        self._hold = config.hold_seconds + HOLD_MARGIN_SECONDS
        self._lock = threading.Lock()

    def _down_up(self, seconds: float) -> None:
        self._pin.drive_low()
        time.sleep(seconds)
        self._pin.drive_high()

    def press(self) -> None:
        """One short press: talk to the assistant (or the self-test when it was asked for)."""
        with self._lock:
            self._down_up(TAP_SECONDS)

    def triple(self) -> None:
        """Three quick presses: SOS."""
        with self._lock:
            for _ in range(3):
                self._down_up(TRIPLE_TAP_SECONDS)
                time.sleep(TRIPLE_PAUSE_SECONDS)

    def hold(self) -> None:
        """Held past the 2 s hold time: SOS."""
        with self._lock:
            self._down_up(self._hold)


def voice_line(
    args: argparse.Namespace, creds: Credentials, audio: Callable[[], AudioDevice]
) -> VoiceLine:
    """The terminal's telephone to the hotline, listening for the callback."""
    line = VoiceLine(
        VoiceLineConfig(
            args.hotline, sip_host="0.0.0.0", sip_port=args.sip_port, ca_file=args.hotline_ca
        ),
        creds.device_id,
        audio,
        secret=creds.secret,
    )
    line.start()
    return line


def build(args: argparse.Namespace, creds: Credentials, panel: Panel) -> tuple[SosTerminal, Finger]:
    """The device program on mock pins, started; its light, speech and answers go to `panel`.
    A short press calls the hotline: through the sound card when there is one, otherwise
    with a silent microphone (the hotline then offers its keypad menu)."""
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    config = DeviceConfig(button_pin=args.button_pin, led_pin=args.led_pin)
    terminal = SosTerminal(
        config,
        EventQueue(args.state_dir / f"{args.device_id}.queue.db"),
        Transport(args.api, Signer(creds)),
        pin_factory=factory,
        sink=RecordingSink(echo=True),
        speak=panel.speak,
        on_light=panel.show_light,
        on_confirmed=panel.on_confirmed,
        on_voice=panel.on_voice,
    )
    if not args.no_voice:
        terminal.use_voice(
            voice_line(args, creds, SoundDeviceAudio if has_sound_card() else RecordedAudio)
        )
    terminal.start(heartbeat=not args.no_heartbeat)
    return terminal, Finger(factory, config)
