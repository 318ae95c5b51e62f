"""WeChat official-account messages (`/wechat`): translated into the gateway's `Incoming`, and
the answer sent back within WeChat's five seconds. It translates, never decides.

    GET  /wechat   the URL check (echostr)
    POST /wechat   a push: text, voice, a menu click, subscribe … (channels/wechat/protocol.py)

**Five seconds, always.** WeChat waits 5 s for an answer, then retries (same MsgId) three times
and finally shows the resident "该公众号暂时无法提供服务". So every push is answered within
`WECHAT_PASSIVE_SECONDS` (0.8): with the dialogue's answer as a passive reply when it is ready by
then, otherwise with an empty `success`; the answer then goes as a customer-service message as
soon as it is ready (channels/gateway/wechat_push.py). The resident never has to write again.

**Exactly once.** The first push of a message starts its turn (a Redis `SET NX` on the push's
key: MsgId + sender + CreateTime, since MsgId alone collides); a retry, also one arriving while
the turn still runs, only waits for that turn's answer. The answer goes out once: whoever first
claims it (a push still inside its wait, or the turn after every wait has passed) sends it,
passively or by customer-service message, never both. The gateway's own guard by `client_id`
keeps the dialogue and the API from seeing the message twice in any case.

Kept in Redis under `<prefix>:gateway:wechat:` for a day at most: the turn marker, its answer,
the latest wait's end and the claim. A gateway that dies in the middle of a turn loses that
turn's answer (WeChat's retries stop after ~20 s); the message itself is recorded in the API.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, Response

from channels.gateway.deps import Services, services
from channels.gateway.service import Gateway, GatewayError, Incoming, Outcome
from channels.gateway.settings import GatewaySettings
from channels.gateway.store import Store
from channels.gateway.wechat_notify import Notifier
from channels.gateway.wechat_push import Pusher
from channels.wechat import menu
from channels.wechat.api import WeChatApi, WeChatError, WeChatUnavailable
from channels.wechat.protocol import Inbound, Protocol, ProtocolError
from channels.wechat.voice import Transcriber, TranscriptionError
from workorders.client import ApiError, ApiUnavailable, WorkOrdersClient
from workorders.contract import Channel, IdentityKind

log = logging.getLogger(__name__)

MAX_TEXT = 2000  # what the API keeps of one message
EMPTY = "您发来的消息是空的。有什么需要，直接打字、发语音，或者点下面的菜单。"
TOO_LONG = "这条消息太长了（最多2000个字）。请分几次发，或者直接说要办什么事。"
IMAGE = "收到您的图片了。有什么需要，请打字或发语音告诉我，也可以点下面的菜单。"
PHOTO_KEPT = "照片收到了，已经附在您的报修单（{order_id}号）上，师傅上门前会先看一下。"
LOCATION = "收到您的位置了。要办什么事，请打字或发语音告诉我。"
LINK = "收到您分享的链接了。我看不了链接的内容，要办什么事，请直接告诉我。"
UNSUPPORTED = "这种消息我还看不懂。请打字或者发语音告诉我要办什么事，也可以点下面的菜单。"
VOICE_UNHEARD = "这条语音我没听清。请再说一遍，或者打字告诉我。"
MENU_GONE = "这个菜单已经换了，请点新的菜单，或者直接告诉我要办什么事。"
SORRY = "系统出了点问题，您的消息没能处理。请稍后再发一次；有急事请直接拨打120，或者打社区热线。"
SUBSCRIBED = "（关注了公众号）"
TURN_TTL = 24 * 3600
POLL_SECONDS = 0.05
# The end of the latest wait, kept as the maximum of all the waits of one message.
_EXTEND = """
local now = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > now then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
return redis.call('GET', KEYS[1])
"""

router = APIRouter(tags=["wechat"])


class Turns:
    """The Redis side of "exactly once" (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.redis = store.redis
        self.prefix = store._key("wechat")

    def _key(self, what: str, push: str) -> str:
        return f"{self.prefix}:{what}:{push}"

    async def begin(self, push: str) -> bool:
        return bool(await self.redis.set(self._key("turn", push), "1", nx=True, ex=TURN_TTL))

    async def extend_wait(self, push: str, until: float) -> None:
        await self.redis.eval(_EXTEND, 1, self._key("wait", push), repr(until), TURN_TTL)

    async def wait_ends(self, push: str) -> float:
        return float(await self.redis.get(self._key("wait", push)) or 0)

    async def put_answer(self, push: str, text: str) -> None:
        await self.redis.set(self._key("answer", push), text, ex=TURN_TTL)

    async def answer(self, push: str) -> str | None:
        return await self.redis.get(self._key("answer", push))

    async def claim(self, push: str, how: str) -> bool:
        """The one right to send this message's answer."""
        return bool(await self.redis.set(self._key("claim", push), how, nx=True, ex=TURN_TTL))


class WeChatChannel:
    def __init__(
        self,
        protocol: Protocol,
        gateway: Gateway,
        store: Store,
        pusher: Pusher,
        transcriber: Transcriber | None,
        passive_seconds: float,
        notifier: Notifier | None = None,
    ) -> None:
        self.protocol, self.gateway, self.store, self.pusher = protocol, gateway, store, pusher
        self.transcriber, self.passive_seconds = transcriber, passive_seconds
        # Order news, family members' alerts and their acknowledgements (wechat_notify.py).
        self.notifier = notifier
        self.turns = Turns(store)
        self._answers: dict[str, asyncio.Future[str]] = {}  # turns running in this process
        self._tasks: set[asyncio.Task[None]] = set()

    async def keep_menu(self) -> None:
        """Create the custom menu once WeChat answers (1, 2, 4 … 300 s apart until then)."""
        pause = 1.0
        while True:
            try:
                await menu.ensure_menu(self.pusher.api)
                return
            except (WeChatError, WeChatUnavailable) as exc:
                log.warning("wechat: menu not created (%s); again in %.0f s", exc, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 300.0)

    def conversation_key(self, openid: str) -> str:
        """The openid never appears in keys, events or logs."""
        raw = f"{self.protocol.app_id}:{openid}".encode()
        return "wx-" + hashlib.sha256(raw).hexdigest()[:32]

    async def receive(self, inbound: Inbound, encrypted: bool) -> str:
        """The body to answer this push with, within `passive_seconds`."""
        ends = time.time() + self.passive_seconds
        push = inbound.dedup_key
        first = await self.turns.begin(push)
        if first:  # any message opens WeChat's 48 h window again (counted once, not per retry)
            await self.pusher.reach.touched(inbound)
        quick = self._quick_answer(inbound)
        if quick is not None:
            return self.protocol.reply(inbound, quick, encrypted) if quick else "success"
        if self.gateway.busy:  # a backlog: the answer cannot come in time, say so at once
            ends = time.time()
        await self.turns.extend_wait(push, ends)
        if first:
            answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._answers[push] = answer
            task = asyncio.create_task(self._turn(inbound, push, answer), name="wechat-turn")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        text = await self._wait_answer(push, ends)
        if text and time.time() < ends and await self.turns.claim(push, "passive"):
            return self.protocol.reply(inbound, text, encrypted)
        return "success"

    async def _wait_answer(self, push: str, ends: float) -> str | None:
        answer = self._answers.get(push)
        if answer is not None:  # this process runs the turn: wait for it directly
            try:
                return await asyncio.wait_for(asyncio.shield(answer), max(ends - time.time(), 0))
            except asyncio.TimeoutError:
                return None
        while True:  # another process (or an earlier push here, since finished) ran it
            text = await self.turns.answer(push)
            if text is not None or time.time() + POLL_SECONDS >= ends:
                return text
            await asyncio.sleep(POLL_SECONDS)

    async def _turn(self, inbound: Inbound, push: str, answer: asyncio.Future[str]) -> None:
        """The message through the dialogue, once; then its answer goes out, by whoever claims
        it first: a push still waiting (passively) or this turn once every wait has ended."""
        arrived = time.time()
        try:
            try:
                text = await self._answer(inbound)
            except Exception:  # the resident still gets an answer, and the log the cause
                log.exception("wechat: a turn failed")
                text = SORRY
            await self.turns.put_answer(push, text)
            answer.set_result(text)
            while (left := await self.turns.wait_ends(push) - time.time()) > 0:
                await asyncio.sleep(left + POLL_SECONDS)
            key = self.conversation_key(inbound.openid)
            await self.pusher.report(key, inbound.openid)
            if text and await self.turns.claim(push, "custom"):
                await self.pusher.send_answer(key, inbound.openid, text)
            # The resident's message opened the window again: replies held back go now.
            await self.pusher.deliver_held(key, arrived)
        finally:
            self._answers.pop(push, None)
            if not answer.done():
                answer.set_result(SORRY)

    async def _answer(self, inbound: Inbound) -> str:
        if inbound.kind == "text" and self.notifier is not None:
            # A family member's "1" to an elder's SOS alert is their acknowledgement, not a
            # message for the dialogue (where a bare 1 would be a rating).
            acknowledged = await self.notifier.acknowledge(inbound.openid, inbound.get("Content"))
            if acknowledged is not None:
                return acknowledged
        if inbound.kind == "image":
            return await self._photo(inbound)
        incoming = await self._incoming(inbound)
        if isinstance(incoming, str):
            return incoming
        await self.store.remember(incoming.key, openid=inbound.openid)
        try:
            outcome = await self.gateway.handle(incoming)
        except GatewayError as exc:
            return exc.message
        resident_id = (await self.store.conversation(incoming.key)).get("resident_id")
        if resident_id and self.notifier is not None:  # linked: their orders' news comes here
            await self.notifier.learned(resident_id, inbound.openid)
        return answer_text(outcome)

    async def _photo(self, inbound: Inbound) -> str:
        """A picture: the API keeps it with the resident's repair reported just before (its
        rule); otherwise nothing is kept and the resident gets a kind answer."""
        key = self.conversation_key(inbound.openid)
        try:
            data, content_type = await self.pusher.api.download_media(inbound.get("MediaId"))
            attached = await self.pusher.workorders.attach_photo(key, data, content_type)
        except (WeChatError, WeChatUnavailable, ApiError, ApiUnavailable) as exc:
            log.info("wechat: a picture not kept (%s)", exc)
            return IMAGE
        return PHOTO_KEPT.format(order_id=attached["order_id"])

    def _quick_answer(self, inbound: Inbound) -> str | None:
        """What needs no dialogue: "" for nothing at all, None when the dialogue must answer."""
        kind, event = inbound.kind, inbound.event
        if kind == "text":
            text = inbound.get("Content")
            if not text:
                return EMPTY
            return TOO_LONG if len(text) > MAX_TEXT else None
        if kind in ("voice", "image"):  # an image may belong to a repair just reported
            return None
        if kind == "event":
            if event == "subscribe" or (event == "click" and menu.for_key(inbound.get("EventKey"))):
                return None
            if event == "click":
                return MENU_GONE
            return ""  # unsubscribe (nobody can read a reply), view, location reports …
        return {"location": LOCATION, "link": LINK}.get(kind, UNSUPPORTED)

    async def _incoming(self, inbound: Inbound) -> Incoming | str:
        key = self.conversation_key(inbound.openid)
        intent: str | None = None
        if inbound.kind == "text":
            text = inbound.get("Content")
        elif inbound.kind == "voice":
            text = await self._hear(inbound)
            if not text:
                return VOICE_UNHEARD
            text = text[:MAX_TEXT]
        elif inbound.event == "subscribe":
            text, intent = SUBSCRIBED, "/greet"
        else:
            found = menu.for_key(inbound.get("EventKey"))
            assert found is not None  # _quick_answer let only known keys through
            text, intent = found
        return Incoming(
            key=key,
            channel=Channel.wechat,
            can_push=True,
            text=text,
            client_id=f"wx-{inbound.dedup_key}",
            intent=intent,
            identity=(IdentityKind.wechat_openid, inbound.openid),
        )

    async def _hear(self, inbound: Inbound) -> str:
        """WeChat's own recognition when the account has it on, else Linli's recogniser."""
        heard = inbound.get("Recognition").rstrip("。.！!？? ")
        if heard or self.transcriber is None:
            return heard
        try:
            audio, _ = await self.pusher.api.download_media(inbound.get("MediaId"))
            return await self.transcriber.transcribe(audio, inbound.get("Format") or "amr")
        except TranscriptionError as exc:
            log.warning("wechat: a voice message not recognised (%s)", exc)
            return ""


def answer_text(outcome: Outcome) -> str:
    """The dialogue's replies and the service notice, as the one message WeChat shows."""
    return "\n".join(line for line in (*outcome.replies, outcome.notice or "") if line.strip())


def make_channel(
    settings: GatewaySettings,
    redis: aioredis.Redis,
    gateway: Gateway,
    store: Store,
    workorders: WorkOrdersClient,
) -> WeChatChannel:
    protocol = Protocol(
        settings.wechat_token.get_secret_value(),
        settings.wechat_app_id,
        settings.wechat_aes_key.get_secret_value() or None,
    )
    api = WeChatApi(
        settings.wechat_api_base,
        settings.wechat_app_id,
        settings.wechat_app_secret.get_secret_value(),
        redis,
        f"{settings.redis_prefix}:wechat",
        timeout=settings.api_timeout_seconds,
    )
    pusher = Pusher(api, workorders, store, settings.wechat_reply_template or None)
    notifier = Notifier(api, workorders, store, settings.wechat_status_template or None)
    return WeChatChannel(
        protocol, gateway, store, pusher, Transcriber(), settings.wechat_passive_seconds, notifier
    )


def channel(request: Request, s: Services = Depends(services)) -> WeChatChannel:
    found: WeChatChannel | None = getattr(request.app.state, "wechat", None)
    if found is None:
        raise GatewayError(503, "wechat_off", "WeChat is not configured here (WECHAT_TOKEN).")
    return found


@router.get("/wechat", response_class=PlainTextResponse)
async def url_check(request: Request, ch: WeChatChannel = Depends(channel)) -> Response:
    try:
        return PlainTextResponse(ch.protocol.verify_url(dict(request.query_params)))
    except ProtocolError as exc:
        log.warning("wechat: URL check refused (%s)", exc.reason)
        return PlainTextResponse("refused", status_code=exc.status)


@router.post("/wechat", response_class=PlainTextResponse)
async def push(request: Request, ch: WeChatChannel = Depends(channel)) -> Response:
    try:
        inbound, encrypted = ch.protocol.read(dict(request.query_params), await request.body())
    except ProtocolError as exc:
        log.warning("wechat: push refused (%s)", exc.reason)
        return PlainTextResponse("refused", status_code=exc.status)
    body = await ch.receive(inbound, encrypted)
    return Response(body, media_type="application/xml" if body.startswith("<") else "text/plain")
