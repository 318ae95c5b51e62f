"""Everything WeChat's servers would remember, in memory: the clock, access tokens, followers
and their inboxes, the 48-hour customer-service window, subscription grants, media, the menu."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

GRACE_SECONDS = 300  # a replaced access_token keeps working this long (WeChat's rotation)
WINDOW_SECONDS = 48 * 3600  # customer-service messages: within 48 h of the user's last action
SENDS_PER_INTERACTION = 5  # ... and at most 5 of them per action (the 6th: 45047)
MEDIA_SECONDS = 3 * 24 * 3600  # temporary media live 3 days
FORCE_REFRESH_SPACING = 30  # stable_token force_refresh: at most once per 30 s, else no effect


class Clock:
    """Real time plus an offset the tests move forward (the 48 h window, token expiry)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


@dataclass
class Token:
    value: str
    kind: str  # "token" (/cgi-bin/token) or "stable" (/cgi-bin/stable_token)
    expires_at: float
    revoked_at: float | None = None  # from then on 40001 (replaced), before expiry's 42001


class Tokens:
    """The two isolated kinds of access_token and their rotation rules."""

    def __init__(self, clock: Clock, ttl: int) -> None:
        self.clock, self.ttl = clock, ttl
        self.by_value: dict[str, Token] = {}
        self.latest: dict[str, Token] = {}
        self.last_force_refresh = -1e18
        self.issued: Counter[str] = Counter()

    def _new(self, kind: str) -> Token:
        token = Token(secrets.token_urlsafe(96), kind, self.clock.now() + self.ttl)
        self.by_value[token.value] = token
        self.latest[kind] = token
        self.issued[kind] += 1
        return token

    def issue(self) -> Token:
        """/cgi-bin/token: always a new one; the previous ones stay valid 5 more minutes."""
        now = self.clock.now()
        for token in self.by_value.values():
            if token.kind == "token" and token.revoked_at is None:
                token.revoked_at = min(token.expires_at, now + GRACE_SECONDS)
        return self._new("token")

    def stable(self, force_refresh: bool) -> Token:
        """/cgi-bin/stable_token: the same token while it has more than 5 minutes left (then a
        new one, the old one valid to its end); force_refresh revokes it at once, but only once
        per 30 s (a second force within 30 s returns the current token)."""
        now = self.clock.now()
        current = self.latest.get("stable")
        usable = current is not None and self.check(current.value) == 0
        if force_refresh and now - self.last_force_refresh >= FORCE_REFRESH_SPACING:
            self.last_force_refresh = now
            if current is not None and current.revoked_at is None:
                current.revoked_at = now
            return self._new("stable")
        if current is not None and usable and current.expires_at - now > GRACE_SECONDS:
            return current
        return self._new("stable")

    def check(self, value: str | None) -> int:
        """0, or WeChat's errcode for this access_token."""
        if not value:
            return 41001
        token = self.by_value.get(value)
        now = self.clock.now()
        if token is None or (token.revoked_at is not None and token.revoked_at <= now):
            return 40001
        if token.expires_at <= now:
            return 42001
        return 0

    def expire_all(self) -> None:
        """Control: every token has reached its end (42001)."""
        for token in self.by_value.values():
            token.expires_at = min(token.expires_at, self.clock.now())

    def revoke_all(self) -> None:
        """Control: every token is replaced for good (40001), as after a leak."""
        for token in self.by_value.values():
            token.revoked_at = self.clock.now()

    def rotate(self) -> None:
        """Control: another server called /cgi-bin/token (ours get the 5-minute grace)."""
        self.issue()


@dataclass
class InboxItem:
    seq: int
    via: str  # passive | custom | template | subscribe | error_notice
    text: str | None
    at: float
    data: Any = None
    template_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "via": self.via,
            "text": self.text,
            "data": self.data,
            "template_id": self.template_id,
            "at": self.at,
        }


@dataclass
class User:
    openid: str
    following: bool = True
    last_interaction: float | None = None
    sends_left: int = 0
    grants: Counter[str] = field(default_factory=Counter)
    inbox: list[InboxItem] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def interacted(self, at: float) -> None:
        """A message, a menu click or a follow opens the window for 5 more messages."""
        self.last_interaction = at
        self.sends_left = SENDS_PER_INTERACTION

    def receive(self, via: str, text: str | None, at: float, **extra: Any) -> InboxItem:
        item = InboxItem(len(self.inbox) + 1, via, text, at, **extra)
        self.inbox.append(item)
        self.changed.set()
        self.changed = asyncio.Event()
        return item

    async def wait_after(self, after: int, seconds: float) -> list[InboxItem]:
        """The inbox items past `after`, waiting up to `seconds` for the first one."""
        if len(self.inbox) <= after and seconds > 0:
            event = self.changed
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), seconds)
        return self.inbox[after:]

    def as_json(self, now: float) -> dict[str, Any]:
        window = (
            None
            if self.last_interaction is None
            else max(0.0, self.last_interaction + WINDOW_SECONDS - now)
        )
        return {
            "openid": self.openid,
            "following": self.following,
            "last_interaction": self.last_interaction,
            "window_seconds_left": window,
            "sends_left": self.sends_left if window else 0,
            "grants": dict(self.grants),
            "inbox_size": len(self.inbox),
        }


@dataclass
class Media:
    data: bytes
    content_type: str
    filename: str
    created_at: float


@dataclass
class State:
    clock: Clock
    tokens: Tokens
    users: dict[str, User] = field(default_factory=dict)
    media: dict[str, Media] = field(default_factory=dict)
    menu: dict[str, Any] | None = None
    sends: Counter[str] = field(default_factory=Counter)
    errcodes: Counter[int] = field(default_factory=Counter)
    next_msg_id: int = field(default_factory=lambda: 24 * 10**15 + secrets.randbelow(10**15))

    @classmethod
    def create(cls, token_ttl: int) -> State:
        clock = Clock()
        return cls(clock, Tokens(clock, token_ttl))

    def user(self, openid: str) -> User:
        """The user, made a follower on first sight (they followed before the stand-in ran)."""
        if openid not in self.users:
            self.users[openid] = User(openid)
        return self.users[openid]

    def msg_id(self) -> int:
        self.next_msg_id += 1
        return self.next_msg_id

    def add_media(self, data: bytes, content_type: str, extension: str) -> str:
        media_id = secrets.token_urlsafe(48)
        filename = f"{media_id}.{extension}"
        self.media[media_id] = Media(data, content_type, filename, self.clock.now())
        return media_id

    def get_media(self, media_id: str) -> Media | None:
        media = self.media.get(media_id)
        if media is None or self.clock.now() - media.created_at > MEDIA_SECONDS:
            return None
        return media

    def stats(self) -> dict[str, Any]:
        return {
            "tokens_issued": {
                "token": self.tokens.issued["token"],
                "stable_token": self.tokens.issued["stable"],
            },
            "sends": {k: self.sends[k] for k in ("custom", "template", "subscribe")},
            "invalid_token_answers": self.errcodes[40001],
            "errcodes": {str(k): v for k, v in sorted(self.errcodes.items())},
            "users": len(self.users),
            "clock_offset_seconds": self.clock.offset,
        }
