"""Redis clients from one `REDIS_URL`: one server, or the master a group of Sentinels names.

    redis://[:password@]host:port/db                                 one server (redis-py's URL)
    redis+sentinel://[:password@]host:port,host:port/service[/db]    Sentinel's master `service`

Every service (API, scheduler, gateway, actions, Rasa's stores) makes its clients here, so a
deployment with Sentinel changes one setting. A Sentinel client asks the sentinels for the
master each time it opens a connection and drops connections to a server that is no longer the
master, so after a failover its next command reaches the promoted replica; commands in between
fail with a ConnectionError, which every caller already treats as "Redis is down for now".

redis-py has Sentinel clients but no URL for them, and the packages that parse one are
unmaintained and synchronous only: hence the parsing here. The password is the master's; the
sentinels are asked without one.

Every connection notices a dead server (a host gone without closing anything) within about
10 s: TCP keepalive probes an idle connection (a pub/sub listener, a long poll) and a user
timeout ends one whose command goes unanswered, where TCP alone would wait some 15 minutes.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

__all__ = ["SentinelUrl", "connect", "connect_async", "parse_sentinel"]

SENTINEL_SCHEME = "redis+sentinel://"
SENTINEL_PORT = 26379
DEFAULTS: dict[str, Any] = {
    "socket_connect_timeout": 2,
    "socket_keepalive": True,
    "socket_keepalive_options": {
        socket.TCP_KEEPIDLE: 5,
        socket.TCP_KEEPINTVL: 2,
        socket.TCP_KEEPCNT: 3,
        socket.TCP_USER_TIMEOUT: 10_000,  # ms
    },
}


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: list[tuple[str, int]]
    service: str
    db: int
    password: str | None


def parse_sentinel(url: str) -> SentinelUrl:
    """The parts of a `redis+sentinel://` URL; ValueError says what is wrong with it."""
    if not url.startswith(SENTINEL_SCHEME):
        raise ValueError(f"not a {SENTINEL_SCHEME} URL")
    rest = url[len(SENTINEL_SCHEME) :]
    if "?" in rest or "#" in rest:
        raise ValueError(f"{url!r}: a Sentinel URL takes no query; options come from the code")
    netloc, _, path = rest.partition("/")
    credentials, _, hosts = netloc.rpartition("@")
    password = unquote(credentials.partition(":")[2]) or None
    sentinels = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon:
            host, port = item.strip(), ""
        if not host or (port and not port.isdigit()):
            raise ValueError(f"{url!r}: sentinel {item!r} is not host[:port]")
        sentinels.append((host, int(port or SENTINEL_PORT)))
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(f"{url!r}: the path must be /<service>[/<db>]")
    return SentinelUrl(sentinels, parts[0], int(parts[1]) if len(parts) == 2 else 0, password)


def _sentinel_options(options: dict[str, Any]) -> dict[str, Any]:
    """Asking a sentinel must not wait longer than a command would."""
    keys = ("socket_timeout", *DEFAULTS)
    return {key: options[key] for key in keys if key in options}


def connect(url: str, **options: Any) -> redis.Redis:
    """A synchronous client; `options` are redis-py's (timeouts, decode_responses)."""
    options = {**DEFAULTS, **options}
    if not url.startswith(SENTINEL_SCHEME):
        return redis.Redis.from_url(url, **options)
    spec = parse_sentinel(url)
    group = Sentinel(spec.sentinels, sentinel_kwargs=_sentinel_options(options))
    return group.master_for(spec.service, db=spec.db, password=spec.password, **options)


def connect_async(url: str, **options: Any) -> aioredis.Redis:
    """The same for asyncio."""
    options = {**DEFAULTS, **options}
    if not url.startswith(SENTINEL_SCHEME):
        return aioredis.Redis.from_url(url, **options)
    spec = parse_sentinel(url)
    group = AsyncSentinel(spec.sentinels, sentinel_kwargs=_sentinel_options(options))
    return group.master_for(spec.service, db=spec.db, password=spec.password, **options)
