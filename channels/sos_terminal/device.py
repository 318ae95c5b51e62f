"""The terminal: one big button, a light, a speaker and a microphone in an elderly resident's home.

The button (gpiozero `Button`, pull-up, pressed = low):

- held for 2 s or more → SOS (`hold`);
- three presses within ~1.5 s → SOS (`triple`), for those who cannot hold it;
- one short press (or two) → talk to the assistant: the `on_talk` hook, which `use_voice`
  points at the voice line (voice_line.py: a call to the hotline; a press during the call ends
  it); during a self-test, the press is the test instead.

An SOS is written to the persistent queue before anything else happens, then sent (signed) by
the sender thread, retried until the server confirms. The light blinks while sending and stays
on once confirmed, with the distinct confirmation chime and the server's spoken message. A
heartbeat goes out every few minutes; once a month, in the daytime, the device asks the
resident to press the button as a self-test.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from gpiozero import LED, Button
from gpiozero.pins import Factory

from channels.sos_terminal.audio import (
    CONFIRM_TONE,
    ERROR_TONE,
    PRESS_BEEP,
    AudioOut,
    AudioSink,
    SoundDeviceSink,
    Speak,
)
from channels.sos_terminal.queue import Backoff, EventQueue, QueuedEvent, Sender, event_body
from channels.sos_terminal.transport import Outcome, SendResult, Transport
from channels.sos_terminal.voice_line import ANSWERED, DIALING, ENDED, UNREACHABLE, VoiceLine
from workorders.contract import SosTrigger, TerminalEventType

log = logging.getLogger(__name__)

# What the device says. The server's own message wins where it sends one.
SPEECH = {
    "sending": "正在为您呼叫社区，请稍候。",
    "confirmed": "求助已收到，工作人员马上联系您，请不要着急。",
    "unconfirmed": "网络暂时不通，求助会在恢复后自动送出。如有危险，请直接拨打120。",
    "rejected": "求助没有发送成功，请直接拨打120或社区电话。",
    "talk_unavailable": "语音助手暂未开通。如需紧急求助，请按住按钮两秒。",
    "voice_unreachable": "现在接不通语音助手，请过一会儿再按。如需紧急求助，请按住按钮两秒。",
    "reminder": "每月自检提醒：请现在按一下大按钮，测试一键呼叫是否正常。",
    "self_test_ok": "自检成功，设备工作正常。",
    "self_test_failed": "自检没有成功，请联系社区工作人员检查设备。",
}
_REMINDED = "self_test_reminded_at"


@dataclass(frozen=True)
class DeviceConfig:
    button_pin: int = 17
    led_pin: int = 27
    hold_seconds: float = 2.0
    # Three presses within this long are an SOS.
    triple_window: float = 1.5
    # A press with no other following within this long is a single press (talk).
    press_gap: float = 0.6
    # Mechanical bounce of a big arcade button; one press must never count as three.
    bounce_seconds: float | None = 0.05
    heartbeat_seconds: float = 300.0
    # Take the interval the server asks for in its answer to a heartbeat.
    follow_server_heartbeat: bool = True
    confirm_light_seconds: float = 600.0
    # Say that the network is down when an SOS is not confirmed within this long.
    unconfirmed_warning_seconds: float = 20.0
    self_test_every: timedelta = timedelta(days=30)
    self_test_window_seconds: float = 120.0
    # Reminders only in the daytime (local hours [start, end)).
    reminder_hours: tuple[int, int] = (9, 20)
    reminder_check_seconds: float = 600.0
    timezone: str = "Asia/Shanghai"
    firmware: str = "linli-sos/1.0"


Light = Callable[[str], None]
Confirmed = Callable[[QueuedEvent, dict[str, Any]], None]


class SosTerminal:
    def __init__(
        self,
        config: DeviceConfig,
        queue: EventQueue,
        transport: Transport,
        *,
        pin_factory: Factory | None = None,
        sink: AudioSink | None = None,
        speak: Speak | None = None,
        on_talk: Callable[[], None] | None = None,
        on_light: Light | None = None,
        on_confirmed: Confirmed | None = None,
        on_voice: Callable[[str], None] | None = None,
        clock: Callable[[], datetime] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self.queue = queue
        self.transport = transport
        self.on_talk = on_talk
        self.on_light = on_light
        self.on_confirmed = on_confirmed
        self.on_voice = on_voice
        self.voice: VoiceLine | None = None
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.audio = AudioOut(sink or SoundDeviceSink(), speak)
        self.sender = Sender(
            queue,
            transport,
            on_delivered=self._delivered,
            on_rejected=self._rejected,
            backoff=backoff,
        )
        self.button = Button(
            config.button_pin,
            hold_time=config.hold_seconds,
            bounce_time=config.bounce_seconds,
            pin_factory=pin_factory,
        )
        self.led = LED(config.led_pin, pin_factory=pin_factory)
        self.light = "off"
        self.heartbeat_interval = config.heartbeat_seconds
        self.confirmed: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._presses: list[float] = []
        self._held = False
        self._gap_timer: threading.Timer | None = None
        self._timers: list[threading.Timer] = []
        self._warned: set[str] = set()
        self._self_test_until = 0.0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = time.monotonic()

    # --- life cycle ------------------------------------------------------------------------

    def start(self, *, heartbeat: bool = True, reminders: bool = True) -> None:
        self.button.when_pressed = self._on_press
        self.button.when_held = self._on_held
        self.button.when_released = self._on_release
        if self.queue.get_meta(_REMINDED) is None:  # a new device counts from its first day
            self.queue.set_meta(_REMINDED, self.clock().isoformat())
        if self.queue.pending(TerminalEventType.sos.value):
            self._set_light("sending")  # an SOS from before a restart is still on its way
        self.sender.start()
        for enabled, target, name in (
            (heartbeat, self._heartbeat_loop, "sos-heartbeat"),
            (reminders, self._reminder_loop, "sos-reminder"),
        ):
            if enabled:
                thread = threading.Thread(target=target, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            timers = [*self._timers, *([self._gap_timer] if self._gap_timer else [])]
        for timer in timers:
            timer.cancel()
        self.sender.stop()
        for thread in self._threads:
            thread.join(5)
        if self.voice is not None:
            self.voice.close()
        self.audio.flush(2)
        self.audio.close()
        self.button.close()
        self.led.close()

    # --- the button --------------------------------------------------------------------------

    def _on_press(self) -> None:
        with self._lock:
            self._held = False

    def _on_held(self) -> None:
        with self._lock:
            self._held = True
            self._presses.clear()
            self._cancel_gap()
        self.raise_sos(SosTrigger.hold)

    def _on_release(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self._held:  # the end of a long press, already an SOS
                self._held = False
                return
            self._presses = [t for t in self._presses if now - t <= self.config.triple_window]
            self._presses.append(now)
            self._cancel_gap()
            triple = len(self._presses) >= 3
            if triple:
                self._presses.clear()
            else:
                self._gap_timer = threading.Timer(self.config.press_gap, self._on_gap)
                self._gap_timer.daemon = True
                self._gap_timer.start()
        if triple:
            self.raise_sos(SosTrigger.triple)

    def _cancel_gap(self) -> None:
        if self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None

    def _on_gap(self) -> None:
        with self._lock:
            presses, self._presses = len(self._presses), []
            self._gap_timer = None
        if presses:
            self.short_press()

    def short_press(self) -> None:
        """Talk to the assistant; during a self-test, the press is the test."""
        if time.monotonic() < self._self_test_until:
            self._self_test_until = 0.0
            self.run_self_test()
            return
        if self.on_talk is None:
            self.audio.say(SPEECH["talk_unavailable"])
            return
        try:
            self.on_talk()
        except Exception:  # the voice session is someone else's; the button keeps working
            log.exception("talk hook failed")

    # --- talking to the assistant ----------------------------------------------------------

    def use_voice(self, line: VoiceLine) -> None:
        """Short presses call the hotline on `line`; how the call goes shows on the light and
        in sounds; heartbeats tell the server where to call the terminal back."""
        self.voice = line
        self.on_talk = line.talk
        line.on_state = self.voice_state

    def voice_state(self, state: str) -> None:
        """The light pulses slowly while a call is up; an SOS's light always wins."""
        if state in (DIALING, ANSWERED):
            if state == DIALING:
                self.audio.tone(PRESS_BEEP)
            if self.light == "off":
                self._set_light("talking")
        elif state in (ENDED, UNREACHABLE):
            if self.light == "talking":
                self._set_light("off")
            if state == UNREACHABLE:
                self.audio.tone(ERROR_TONE)
                self.audio.say(SPEECH["voice_unreachable"])
        if self.on_voice is not None:
            self.on_voice(state)

    # --- SOS --------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The device's time, corrected by what the server said its time was."""
        return datetime.fromtimestamp(self.transport.signer.now(), timezone.utc)

    def raise_sos(self, trigger: SosTrigger) -> QueuedEvent:
        """On disk first, then feedback, then sending: a crash after this line loses nothing."""
        event_id, body = event_body(TerminalEventType.sos.value, self.now(), trigger=trigger.value)
        entry = self.queue.put(event_id, TerminalEventType.sos.value, body)
        log.info("SOS (%s) queued as %s", trigger.value, event_id)
        self._set_light("sending")
        self.audio.tone(PRESS_BEEP)
        self.audio.say(SPEECH["sending"])
        self.sender.wake()
        self._later(self.config.unconfirmed_warning_seconds, self._still_unconfirmed, event_id)
        return entry

    def _delivered(self, entry: QueuedEvent, result: SendResult) -> None:
        if entry.type != TerminalEventType.sos.value:
            return
        self.confirmed.append((entry.event_id, result.body))
        if not self.queue.pending(TerminalEventType.sos.value):
            self._set_light("confirmed")
            self._later(self.config.confirm_light_seconds, self._confirmation_over)
        self.audio.tone(CONFIRM_TONE)
        self.audio.say(str(result.body.get("message") or SPEECH["confirmed"]))
        if self.on_confirmed is not None:
            self.on_confirmed(entry, result.body)

    def _rejected(self, entry: QueuedEvent, result: SendResult) -> None:
        if entry.type != TerminalEventType.sos.value or entry.event_id in self._warned:
            return
        self._warned.add(entry.event_id)
        self._set_light("fault")
        self.audio.tone(ERROR_TONE)
        self.audio.say(SPEECH["rejected"])

    def _still_unconfirmed(self, event_id: str) -> None:
        if self.queue.contains(event_id) and event_id not in self._warned:
            self._warned.add(event_id)
            self.audio.tone(ERROR_TONE)
            self.audio.say(SPEECH["unconfirmed"])

    def _confirmation_over(self) -> None:
        if self.light == "confirmed":
            self._set_light("off")

    def _set_light(self, mode: str) -> None:
        """off, sending (blink), confirmed (steady), fault (fast blink), talking (slow pulse)."""
        self.light = mode
        if mode == "sending":
            self.led.blink(on_time=0.25, off_time=0.25)
        elif mode == "talking":
            self.led.blink(on_time=1.0, off_time=1.0)
        elif mode == "fault":
            self.led.blink(on_time=0.1, off_time=0.1)
        elif mode == "confirmed":
            self.led.on()
        else:
            self.led.off()
        if self.on_light is not None:
            self.on_light(mode)

    def _later(self, seconds: float, function: Callable[..., None], *args: Any) -> None:
        timer = threading.Timer(seconds, function, args)
        timer.daemon = True
        with self._lock:
            self._timers = [t for t in self._timers if t.is_alive()]
            self._timers.append(timer)
        timer.start()

    # --- heartbeat ---------------------------------------------------------------------------

    def send_heartbeat(self) -> SendResult:
        """Direct, not queued: an old heartbeat delivered late would only mislead."""
        info: dict[str, Any] = {
            "firmware": self.config.firmware,
            "queue_depth": self.queue.depth(),
            "uptime_seconds": int(time.monotonic() - self._started),
        }
        if self.voice is not None and self.voice.contact:
            info["sip_contact"] = self.voice.contact
        _, body = event_body(TerminalEventType.heartbeat.value, self.now(), info=info)
        result = self.transport.send(body)
        asked = result.body.get("heartbeat_seconds")
        if result.outcome == Outcome.delivered and self.config.follow_server_heartbeat:
            if isinstance(asked, int) and asked > 0:
                self.heartbeat_interval = float(asked)
        elif result.outcome != Outcome.delivered:
            log.info("heartbeat not delivered: %s", result.error)
        return result

    def _heartbeat_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.send_heartbeat()
            except Exception:
                log.exception("heartbeat failed")
            self._stop.wait(self.heartbeat_interval)

    # --- monthly self-test ---------------------------------------------------------------------

    def check_self_test(self, *, force: bool = False) -> bool:
        """Speak the monthly reminder when it is due and daytime; then a press is the test."""
        now = self.clock()
        last = self.queue.get_meta(_REMINDED)
        if not force:
            if (
                last is not None
                and now - datetime.fromisoformat(last) < self.config.self_test_every
            ):
                return False
            start, end = self.config.reminder_hours
            if not start <= now.astimezone(ZoneInfo(self.config.timezone)).hour < end:
                return False
        self.queue.set_meta(_REMINDED, now.isoformat())
        self._self_test_until = time.monotonic() + self.config.self_test_window_seconds
        self.audio.tone(PRESS_BEEP)
        self.audio.say(SPEECH["reminder"])
        return True

    def run_self_test(self) -> None:
        """Button, network, server and speaker in one go; the answer is spoken either way."""
        threading.Thread(target=self._self_test, name="sos-self-test", daemon=True).start()

    def _self_test(self) -> None:
        _, body = event_body(TerminalEventType.self_test.value, self.now())
        result = self.transport.send(body)
        if result.outcome == Outcome.delivered:
            self.audio.tone(CONFIRM_TONE)
            self.audio.say(str(result.body.get("message") or SPEECH["self_test_ok"]))
        else:
            self.audio.tone(ERROR_TONE)
            self.audio.say(SPEECH["self_test_failed"])

    def _reminder_loop(self) -> None:
        while not self._stop.wait(self.config.reminder_check_seconds):
            try:
                self.check_self_test()
            except Exception:
                log.exception("self-test reminder failed")
