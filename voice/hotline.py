"""The hotline: the community's telephone number answered by the assistant.

    .venv/bin/python -m voice.hotline            # SIP on udp 127.0.0.1:5070; settings below
    baresip: /dial sip:hotline@127.0.0.1:5070

A PBX or SIP trunk routes the number to this process (voice/sip). Each call gets a `CallFlow`
(voice/call_flow.py): greeting, speech recognition (voice/asr.py), the dialogue core through
the voice channel (channels/voice.py, the caller's number as identity), synthesis
(voice/tts.py), keypad menu, transfer to staff, and at the end a call record
(`POST /calls`, transcript masked) with the orders the call made.

Settings come from the environment (`HotlineSettings.from_env`):

| variable | default | meaning |
|---|---|---|
| `HOTLINE_SIP_HOST` / `HOTLINE_SIP_PORT` | `127.0.0.1` / `5070` | where SIP listens (UDP) |
| `HOTLINE_TRUSTED_PEERS` | `127.0.0.1,::1` | PBX/trunk hosts or CIDRs: calls without auth |
| `HOTLINE_SIP_REALM` | `linli` | digest realm terminals authenticate in |
| `HOTLINE_TLS_CERT` / `HOTLINE_TLS_KEY` | – | PEM certificate chain and key: SIP over TLS too |
| `HOTLINE_TLS_PORT` | `5071` | TLS listener (with a certificate); its calls use SRTP |
| `HOTLINE_ADVERTISED_HOST` | the bound address | address put in Contact/SDP (NAT, 0.0.0.0) |
| `HOTLINE_RTP_PORTS` | any | RTP port range, e.g. `20000-20999` (firewalls) |
| `HOTLINE_ASR` | `auto` | Vosk + Whisper's second opinion, or Whisper alone without Vosk |
| `WHISPER_WORKERS` / `WHISPER_THREADS` | `2` / `1` | Whisper processes and threads each |
| `HOTLINE_SCRIPT` | – | scripted: a file of transcripts, one per line, used in order |
| `HOTLINE_TRAILING_SILENCE` | `1.2` | quiet that ends an utterance (elders pause; 0.7 is brisker) |
| `RASA_URL` | `http://127.0.0.1:5005` | the dialogue core |
| `WORKORDERS_URL`, `LINLI_TOKEN_HOTLINE` | `http://127.0.0.1:8000`, – | API for call records |
| `HOTLINE_STAFF_EXTENSION` | – | staff phone (`8001` at the calling PBX, or a SIP URI) |
| `HOTLINE_TRANSFER` | `refer` | `refer` (bridge when REFER fails) or `bridge` |
| `HOTLINE_TRANSFER_TIMEOUT` | `20` | seconds staff have to answer |
| `LINLI_OFFICE_HOURS` | `mon-fri 08:30-17:30` | when staff answer (the API reads it too) |
| `HOTLINE_MAX_FAILURES` | `3` | misunderstood turns, then we ask for a person (a safety net) |
| `HOTLINE_SILENCE_SECONDS` | `6` | quiet before a re-prompt |
| `HOTLINE_FILLER_DELAY` | `0.6` | a turn slower than this gets a filler ("请稍等…") |
| `HOTLINE_KEEP_AUDIO` | `0` | `1`: keep the caller's audio under `HOTLINE_AUDIO_DIR` |
| `HOTLINE_MAX_CALLS` | `32` | calls at once; more get 486 Busy |
| `HOTLINE_METRICS_PORT` / `_HOST` | `0` (off) / `127.0.0.1` | Prometheus (voice/metrics.py) |
| `HOTLINE_TRUNK` | – | `host:port` of the SIP trunk/PBX that family phones are dialled through |
| `HOTLINE_OUTBOUND` | `1` | `0`: place no calls of our own (SOS callbacks, family notifications) |
| `REDIS_URL` | `redis://127.0.0.1:6379/0` | where its own calls stand, shared by the hosts |
| `LINLI_REDIS_PREFIX` | `linli` | those keys are `<prefix>:hotline:…` (voice/outbound_state.py) |
| `HOTLINE_LEASE_SECONDS` | `10` | a dead host's own calls are taken over this long after |

Who may call (voice/sip/admission.py): a trusted peer, for any number it sends; an SOS
terminal (`terminal-…`) only with SIP digest, from whatever host, with the password derived
from its provisioned secret (`workorders.signing.sip_password`); the hotline fetches the HA1
for its realm from the API (`GET /terminals/sip-digest`, svc-hotline). Anyone else gets 403.
RTP is taken only from the address the SDP negotiated (voice/sip/rtp.py). Terminals on networks
Linli does not control call over TLS (`sip:hotline@host:5071;transport=tls`), and such calls
use SRTP with SDES keys (voice/sip/srtp.py); plain RTP is refused on TLS and SRTP on UDP.
With TLS configured, a terminal from an untrusted host over UDP is refused (403).
`Hotline.stats()` counts admissions, refusals and dropped RTP.

Calls of its own (voice/outbound.py): after an SOS from a terminal it calls the terminal back,
and it phones family contacts the escalation chain names, through `HOTLINE_TRUNK`. Of several
hotline hosts the one holding a lease in Redis places them, and another takes over when it dies.

A caller (a number, or an SOS terminal) has one conversation with the dialogue core, the same on
every call (channels/voice.py `conversation_key`): a caller whose line dropped, or whose hotline
host died, calls again and goes on where the conversation was, on any hotline host. A call that
ended with a hand-over to staff leaves the next call to start anew. Behind Kamailio
(docs/deployment.md), `HOTLINE_TRUSTED_PEERS` is Kamailio's address alone.

The dialogue core itself hands over after two misunderstood turns in a row
(actions/conversation.py); `HOTLINE_MAX_FAILURES` only matters if that ever changes.

Privacy: no audio is kept unless `HOTLINE_KEEP_AUDIO=1` (and the API must allow it too:
`KEEP_CALL_AUDIO`); transcripts are masked here (workorders.crypto `mask_text`: phone and ID
numbers, written or spoken) before they leave the process, and the API masks them again;
logs carry masked numbers only (the masking log filter of workorders/logs.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from channels.voice import DialogueClient, caller_channel, caller_identity
from voice import metrics
from voice.asr import (
    ELDERLY,
    Endpointing,
    ModelError,
    Recogniser,
    ScriptedRecogniser,
)
from voice.audio import TELEPHONE_RATE, write_wav
from voice.call_flow import CallFlow, CallResult
from voice.complete import RequestJudge
from voice.outbound import Outbound
from voice.outbound_state import SharedState
from voice.recognisers import CHOICES, open_recogniser
from voice.recognisers import close as close_recogniser
from voice.sip import Call, EndReason, SipEndpoint
from voice.sip.admission import LOOPBACK, Admission, Lookup, LookupUnavailable, networks
from voice.sip.stream import server_context
from voice.tts import Synthesizer
from workorders.client import ApiError, ApiUnavailable, WorkOrdersClient
from workorders.contract import TERMINAL_SIP_PREFIX, IdentityKind
from workorders.crypto import mask_text
from workorders.office_hours import OfficeHours
from workorders.redis_url import connect

log = logging.getLogger("voice.hotline")

ROOT = Path(__file__).resolve().parent.parent
TEXT_LIMIT = 2000  # characters per transcript line the API takes
KEEP_FINISHED = 64  # finished calls kept in memory (tests, the bench, a debugger)


ASR_CHOICES = (*CHOICES, "scripted")


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class HotlineSettings:
    """Everything the hotline can be told (see the table in the module docstring)."""

    sip_host: str = "127.0.0.1"
    sip_port: int = 5070
    trusted_peers: tuple[str, ...] = LOOPBACK
    realm: str = "linli"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_port: int = 5071
    advertised_host: str | None = None
    rtp_ports: tuple[int, int] | None = None
    asr: str = "auto"
    script: Path | None = None
    trailing_silence: float = ELDERLY.trailing_silence
    rasa_url: str = "http://127.0.0.1:5005"
    api_url: str = "http://127.0.0.1:8000"
    api_token: str = ""
    staff_extension: str | None = None
    transfer_mode: str = "refer"
    transfer_timeout: float = 20.0
    office_hours: OfficeHours = field(default_factory=OfficeHours)
    max_failures: int = 3
    silence_timeout: float = 6.0
    filler_delay: float = 0.6
    still_working_every: float = 6.0
    keep_audio: bool = False
    audio_dir: Path = field(default_factory=lambda: ROOT / "var" / "calls")
    max_calls: int = 32
    metrics_port: int = 0  # Prometheus (voice/metrics.py); 0: not served
    metrics_host: str = "127.0.0.1"
    trunk: str | None = None
    outbound: bool = True
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "linli"
    lease_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.asr not in ASR_CHOICES:
            raise ValueError(
                f"HOTLINE_ASR must be one of {', '.join(ASR_CHOICES)}, not {self.asr!r}"
            )
        if self.transfer_mode not in ("refer", "bridge"):
            raise ValueError(
                f"HOTLINE_TRANSFER must be refer or bridge, not {self.transfer_mode!r}"
            )
        if self.silence_timeout <= 0 or self.filler_delay < 0 or self.max_failures < 1:
            raise ValueError("silence timeout must be positive, filler delay not negative")
        if self.lease_seconds < 1:
            raise ValueError(f"HOTLINE_LEASE_SECONDS must be 1 or more, not {self.lease_seconds}")
        try:
            networks(self.trusted_peers)
        except ValueError as exc:
            raise ValueError(f"HOTLINE_TRUSTED_PEERS: {exc}") from None
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("HOTLINE_TLS_CERT and HOTLINE_TLS_KEY go together")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> HotlineSettings:
        env = os.environ if env is None else env
        ports = env.get("HOTLINE_RTP_PORTS")
        rtp_ports = None
        if ports:
            low, _, high = ports.partition("-")
            rtp_ports = (int(low), int(high or low))
        zone = env.get("LINLI_TIMEZONE", "Asia/Shanghai")
        settings = cls(
            sip_host=env.get("HOTLINE_SIP_HOST", cls.sip_host),
            sip_port=int(env.get("HOTLINE_SIP_PORT", cls.sip_port)),
            trusted_peers=tuple(
                peer.strip()
                for peer in env.get("HOTLINE_TRUSTED_PEERS", ",".join(LOOPBACK)).split(",")
                if peer.strip()
            ),
            realm=env.get("HOTLINE_SIP_REALM", cls.realm),
            tls_cert=Path(env["HOTLINE_TLS_CERT"]) if env.get("HOTLINE_TLS_CERT") else None,
            tls_key=Path(env["HOTLINE_TLS_KEY"]) if env.get("HOTLINE_TLS_KEY") else None,
            tls_port=int(env.get("HOTLINE_TLS_PORT", cls.tls_port)),
            advertised_host=env.get("HOTLINE_ADVERTISED_HOST") or None,
            rtp_ports=rtp_ports,
            asr=env.get("HOTLINE_ASR", cls.asr).strip().lower(),
            script=Path(env["HOTLINE_SCRIPT"]) if env.get("HOTLINE_SCRIPT") else None,
            trailing_silence=float(env.get("HOTLINE_TRAILING_SILENCE", ELDERLY.trailing_silence)),
            rasa_url=env.get("RASA_URL", cls.rasa_url),
            api_url=env.get("WORKORDERS_URL", cls.api_url),
            api_token=env.get("LINLI_TOKEN_HOTLINE", ""),
            staff_extension=env.get("HOTLINE_STAFF_EXTENSION") or None,
            transfer_mode=env.get("HOTLINE_TRANSFER", cls.transfer_mode).strip().lower(),
            transfer_timeout=float(env.get("HOTLINE_TRANSFER_TIMEOUT", cls.transfer_timeout)),
            office_hours=OfficeHours.parse(
                env.get("LINLI_OFFICE_HOURS", "mon-fri 08:30-17:30"), zone
            ),
            max_failures=int(env.get("HOTLINE_MAX_FAILURES", cls.max_failures)),
            silence_timeout=float(env.get("HOTLINE_SILENCE_SECONDS", cls.silence_timeout)),
            filler_delay=float(env.get("HOTLINE_FILLER_DELAY", cls.filler_delay)),
            keep_audio=_flag(env.get("HOTLINE_KEEP_AUDIO")),
            audio_dir=Path(env.get("HOTLINE_AUDIO_DIR", ROOT / "var" / "calls")),
            max_calls=int(env.get("HOTLINE_MAX_CALLS", cls.max_calls)),
            metrics_port=int(env.get("HOTLINE_METRICS_PORT", cls.metrics_port)),
            metrics_host=env.get("HOTLINE_METRICS_HOST", cls.metrics_host),
            trunk=env.get("HOTLINE_TRUNK") or None,
            outbound=_flag(env.get("HOTLINE_OUTBOUND", "1")),
            redis_url=env.get("REDIS_URL", cls.redis_url),
            redis_prefix=env.get("LINLI_REDIS_PREFIX", cls.redis_prefix),
            lease_seconds=float(env.get("HOTLINE_LEASE_SECONDS", cls.lease_seconds)),
        )
        return replace(settings, **overrides)


class Hotline:
    """The `on_call` of the SIP endpoint: one `CallFlow` per call, then its record.

    `recogniser` serves every call; `recogniser_for(call)` instead picks one per call (tests
    script each caller separately). `clock` says what time it is for office hours (tests call
    "at night"); records always carry the real time.
    """

    def __init__(
        self,
        *,
        settings: HotlineSettings,
        synthesizer: Synthesizer,
        dialogue: DialogueClient,
        recogniser: Recogniser | None = None,
        recogniser_for: Callable[[Call], Recogniser] | None = None,
        api: WorkOrdersClient | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if (recogniser is None) == (recogniser_for is None):
            raise ValueError("give either a recogniser or recogniser_for")
        self.settings = settings
        self.synthesizer = synthesizer
        self.dialogue = dialogue
        self.api = api
        self._recogniser = recogniser
        self._recogniser_for = recogniser_for
        self._clock = clock
        # By SIP Call-ID, live ones and the last KEEP_FINISHED finished ones.
        self.flows: dict[str, CallFlow] = {}
        self.records: dict[str, dict[str, Any]] = {}  # bodies sent to POST /calls
        self.stored: dict[str, dict[str, Any]] = {}  # what the API answered
        self._arrived = asyncio.Event()
        self._answered: dict[str, None] = {}  # ids of calls that reached __call__ (ordered)
        self.calls_answered = 0  # since start (`_answered` forgets old calls)
        self.endpoint: SipEndpoint | None = None  # set by `open_endpoint`
        self.outbound: Outbound | None = None  # set by `serve` when this host may place calls
        # Whether a caller's words are a whole request yet (ends utterances at a short pause).
        self.judge = RequestJudge(dialogue.rasa_url)

    def now(self) -> datetime:
        return self._clock() if self._clock else datetime.now(timezone.utc)

    def stats(self) -> dict[str, int]:
        """Counters for monitoring: calls answered, and the SIP endpoint's admissions,
        refusals and dropped RTP (see `SipEndpoint.stats`)."""
        counted = self.endpoint.stats() if self.endpoint is not None else {}
        return {"calls_answered": self.calls_answered, **counted}

    async def warm(self) -> int:
        """Render every prompt (normal and slower) at 8 kHz now, not during the first call."""
        return await self.synthesizer.warm(sample_rates=(TELEPHONE_RATE,))

    # --- calls ---------------------------------------------------------------------------

    async def __call__(self, call: Call) -> None:
        """An incoming call: a phone, or an SOS terminal's short press."""
        kind, _ = caller_identity(call.party)
        if kind is IdentityKind.terminal:
            await self.converse(call, "greeting_terminal", keypad=False)
        else:
            await self.converse(call)

    async def converse(
        self, call: Call, greeting: str = "greeting", *, keypad: bool = True
    ) -> CallResult:
        """The conversation on an answered call, in or out, then its record. `keypad`: the
        other end has keys to press (a phone, not an SOS terminal)."""
        self._answered[call.call_id] = None
        self.calls_answered += 1
        if self._recogniser is not None:
            recogniser = self._recogniser
        else:
            assert self._recogniser_for is not None
            recogniser = self._recogniser_for(call)
        flow = CallFlow(self, call, recogniser, greeting, keypad)
        self.flows[call.call_id] = flow
        self._arrived.set()
        log.info("call from %s answered", call.caller_masked)
        result = await flow.run()
        log.info(
            "call from %s ended: %s, %d orders, %d lines",
            call.caller_masked,
            result.outcome,
            len(result.order_ids),
            len(result.transcript),
        )
        try:
            await self.record(call, result)
        finally:
            self._forget_old()
        return result

    def _forget_old(self) -> None:
        """A hotline runs for months: keep only the newest finished calls in memory."""
        finished = [i for i, f in self.flows.items() if f.result.ended_at is not None]
        for call_id in finished[:-KEEP_FINISHED]:
            self.flows.pop(call_id, None)
        for table in (self.records, self.stored):
            for call_id in list(table)[:-KEEP_FINISHED]:
                del table[call_id]
        for call_id in list(self._answered)[: -KEEP_FINISHED * 16]:
            del self._answered[call_id]

    def on_ended(self, call: Call) -> None:
        """Calls given up while ringing never reach `__call__`; they leave a record too."""
        if call.call_id in self._answered or call.direction != "inbound":
            return
        if call.end_reason in (EndReason.CANCELLED, EndReason.NO_ACK):
            now = datetime.now(timezone.utc)
            result = CallResult(started_at=now, ended_at=now, outcome="abandoned")
            with contextlib.suppress(RuntimeError):  # no loop: the endpoint is closing
                asyncio.get_running_loop().create_task(self.record(call, result))

    async def wait_flow(self, caller: str | None = None, timeout: float = 15.0) -> CallFlow:
        """The flow of the next call (from `caller`), once it has been answered."""

        async def find() -> CallFlow:
            while True:
                for flow in self.flows.values():
                    if caller is None or flow.call.party == caller:
                        return flow
                self._arrived.clear()
                await self._arrived.wait()

        return await asyncio.wait_for(find(), timeout)

    # --- the record ----------------------------------------------------------------------

    async def record(self, call: Call, result: CallResult) -> dict[str, Any] | None:
        """POST /calls (idempotent by call id; retried while the API is unreachable)."""
        resident_id, order_ids = await self._resident_and_orders(call, result)
        body = record_body(call, result, resident_id, order_ids)
        if result.audio and self.settings.keep_audio:
            body["audio_path"] = str(self._keep_audio(result.audio))
        self.records[call.call_id] = body
        if self.api is None:
            log.warning("no LINLI_TOKEN_HOTLINE: the call record was not stored")
            return None
        for attempt in range(4):
            try:
                stored = await self.api.record_call(body)
            except ApiUnavailable:
                await asyncio.sleep(0.5 * 2**attempt)
                continue
            except ApiError as exc:
                if exc.code == "audio_not_kept" and "audio_path" in body:
                    body.pop("audio_path")  # the API keeps no recordings: the record matters
                    continue
                log.error("call record of %s refused: %s", call.caller_masked, exc.code)
                return None
            self.stored[call.call_id] = stored
            return stored
        log.error("call record of %s not stored: the API is unreachable", call.caller_masked)
        return None

    async def _resident_and_orders(
        self, call: Call, result: CallResult
    ) -> tuple[int | None, list[int]]:
        """Who called (looked up now: a stranger may have registered during the call) and
        the orders the call made: those the dialogue reported, and any other order of this
        resident from the hotline since the call began (the callback order of a hand-over)."""
        order_ids = list(result.order_ids)
        if self.api is None or not call.party:
            return None, order_ids
        channel = caller_channel(call.party).value
        try:
            resident = await self.api.find_resident(*caller_identity(call.party))
            if resident is None:
                return None, order_ids
            since = result.started_at - timedelta(seconds=2)
            for order in await self.api.orders_of(resident["id"]):
                created = datetime.fromisoformat(order["created_at"])
                if order.get("channel") == channel and created >= since:
                    order_ids.append(int(order["id"]))
        except (ApiError, ApiUnavailable, KeyError, ValueError) as exc:
            log.warning("call %s: resident or orders not found: %s", call.caller_masked, exc)
            return None, order_ids
        return int(resident["id"]), sorted(set(order_ids))

    def _keep_audio(self, audio: bytearray) -> Path:
        """The caller's side as a WAV only the service user can read."""
        self.settings.audio_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        path = self.settings.audio_dir / f"{stamp}-{uuid.uuid4().hex[:12]}.wav"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(write_wav(bytes(audio), TELEPHONE_RATE))
        return path


def record_body(
    call: Call, result: CallResult, resident_id: int | None, order_ids: list[int]
) -> dict[str, Any]:
    """The body of `POST /calls`; every transcript line masked before it leaves. A terminal's
    call has no caller number: the channel and the resident say whose it was."""
    kind, _ = caller_identity(call.party)
    return {
        "call_id": call.call_id,
        "channel": caller_channel(call.party).value,
        "caller": (call.party or None) if kind is IdentityKind.phone else None,
        "resident_id": resident_id,
        "started_at": result.started_at.isoformat(),
        "ended_at": (result.ended_at or result.started_at).isoformat(),
        "outcome": result.outcome or "abandoned",
        "transcript": [
            {
                "at": line.at.isoformat(),
                "speaker": line.speaker,
                "text": (mask_text(line.text) or "")[:TEXT_LIMIT],
                "confidence": line.confidence,
            }
            for line in result.transcript[:2000]
        ],
        "order_ids": order_ids[:50],
        "keypad": result.keypad[:200] or None,
        "transfer_target": result.transfer_target,
    }


# --- running it ---------------------------------------------------------------------------


def make_recogniser(settings: HotlineSettings) -> Recogniser:
    """The recogniser HOTLINE_ASR asks for (see the table above); ModelError, saying what to
    do, when its model is not usable."""
    endpointing = endpointing_for(settings)
    if settings.asr == "scripted":
        lines: list[str] = []
        if settings.script is not None:
            text = settings.script.read_text(encoding="utf-8")
            lines = [line.strip() for line in text.splitlines() if line.strip()]
        return ScriptedRecogniser(lines, endpointing=endpointing)
    return open_recogniser(settings.asr, endpointing)


def endpointing_for(settings: HotlineSettings) -> Endpointing:
    """The elders' endpointing with the configured trailing silence."""
    return replace(ELDERLY, trailing_silence=settings.trailing_silence)


def terminal_digests(api: WorkOrdersClient | None) -> Lookup:
    """HA1 of an SOS terminal's SIP password, from the API; None for anyone else."""

    async def lookup(user: str, realm: str) -> dict[str, str] | None:
        kind, device_id = caller_identity(user)
        if kind is not IdentityKind.terminal or api is None:
            return None
        try:
            found = await api.terminal_sip_digest(device_id, realm)
        except (ApiError, ApiUnavailable) as exc:
            raise LookupUnavailable(str(exc)) from exc
        if found is None or found.get("username") != user:
            return None
        return {str(k): str(v) for k, v in found["ha1"].items()}

    return lookup


def open_endpoint(
    hotline: Hotline, settings: HotlineSettings, api: WorkOrdersClient | None
) -> SipEndpoint:
    """The hotline's SIP endpoint: trusted peers, digest for terminals, its settings."""
    admission = Admission(
        trusted=settings.trusted_peers,
        must_authenticate=lambda user: user.startswith(TERMINAL_SIP_PREFIX),
        lookup=terminal_digests(api),
        realm=settings.realm,
        encrypted_from_untrusted=settings.tls_cert is not None,
    )
    endpoint = SipEndpoint(
        hotline,
        on_ended=hotline.on_ended,
        host=settings.sip_host,
        port=settings.sip_port,
        advertised_host=settings.advertised_host,
        rtp_port_range=settings.rtp_ports,
        max_calls=settings.max_calls,
        admission=admission,
        tls=server_context(settings.tls_cert, settings.tls_key)
        if settings.tls_cert is not None and settings.tls_key is not None
        else None,
        tls_port=settings.tls_port,
    )
    hotline.endpoint = endpoint
    return endpoint


async def serve(settings: HotlineSettings, recogniser: Recogniser, stop: asyncio.Event) -> None:
    synthesizer = Synthesizer()
    dialogue = DialogueClient(settings.rasa_url)
    api = WorkOrdersClient(settings.api_url, settings.api_token) if settings.api_token else None
    if api is None:
        log.warning("LINLI_TOKEN_HOTLINE is not set: calls will leave no record")
    hotline = Hotline(
        settings=settings,
        synthesizer=synthesizer,
        dialogue=dialogue,
        recogniser=recogniser,
        api=api,
    )
    try:
        ready = await hotline.warm()
        log.info("%d prompts synthesised", ready)
        if not await dialogue.healthy():  # Rasa takes a minute to load under `make run`
            log.warning("the dialogue core at %s does not answer yet", settings.rasa_url)
        async with open_endpoint(hotline, settings, api) as endpoint:
            if settings.metrics_port:
                metrics.serve(hotline, settings.metrics_host, settings.metrics_port)
            print(
                f"Linli hotline on udp {settings.sip_host}:{endpoint.port}"
                + (f", tls :{endpoint.tls_port}" if endpoint.tls is not None else "")
                + " "
                f"(ASR {type(recogniser).__name__}, dialogue {settings.rasa_url}; trusted peers "
                f"{','.join(settings.trusted_peers)}, terminals by digest); Ctrl-C stops",
                flush=True,
            )
            if api is not None and settings.outbound:
                state = SharedState(
                    connect(settings.redis_url, socket_timeout=2),
                    f"{settings.redis_prefix}:hotline",
                    settings.lease_seconds,
                )
                outbound = Outbound(
                    hotline,
                    endpoint,
                    api,
                    trunk=settings.trunk,
                    state=state,
                )
                hotline.outbound = outbound
                try:
                    await outbound.run(stop)
                finally:
                    state.client.close()
            else:
                await stop.wait()
            log.info("hotline counters: %s", hotline.stats())
    finally:
        hotline.judge.close()
        await dialogue.aclose()
        if api is not None:
            await api.aclose()
        synthesizer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="邻里助手语音热线 (SIP)")
    parser.add_argument("--host", help="SIP/RTP bind address (HOTLINE_SIP_HOST)")
    parser.add_argument("--port", type=int, help="SIP UDP port (HOTLINE_SIP_PORT, 5070)")
    parser.add_argument("--advertise", help="address for Contact/SDP (HOTLINE_ADVERTISED_HOST)")
    parser.add_argument("--asr", choices=ASR_CHOICES, help="HOTLINE_ASR (auto)")
    parser.add_argument("--script", type=Path, help="scripted ASR: transcripts, one a line")
    parser.add_argument("--staff", help="staff extension or SIP URI (HOTLINE_STAFF_EXTENSION)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    from workorders.logs import setup as setup_logging  # masks numbers in every log line

    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    given = {
        "sip_host": args.host,
        "sip_port": args.port,
        "advertised_host": args.advertise,
        "asr": args.asr,
        "script": args.script,
        "staff_extension": args.staff,
    }
    try:
        settings = HotlineSettings.from_env(**{k: v for k, v in given.items() if v is not None})
        recogniser = make_recogniser(settings)
    except ModelError as exc:
        print(
            f"voice.hotline: cannot start: {exc}\n"
            "  To try the hotline without the Chinese model, run it with HOTLINE_ASR=scripted "
            "(keypad menu; HOTLINE_SCRIPT=file for scripted transcripts).",
            file=sys.stderr,
        )
        return 2
    except (ValueError, OSError) as exc:
        print(f"voice.hotline: cannot start: {exc}", file=sys.stderr)
        return 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(settings, recogniser, stop)

    try:
        asyncio.run(run())
    finally:
        close_recogniser(recogniser)
    return 0


if __name__ == "__main__":
    sys.exit(main())
