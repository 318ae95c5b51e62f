"""REDIS_URL: one server or Sentinel's master (workorders/redis_url.py). A failover itself is
tests/cluster/test_redis_failover.py's."""

from __future__ import annotations

import re
import socket

import pytest
import redis

from workorders.redis_url import SentinelUrl, connect, parse_sentinel


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    url = "redis+sentinel://:s%40cret@10.0.0.21:26379,10.0.0.22,lb1:26380/linli/2"
    assert parse_sentinel(url) == SentinelUrl(
        sentinels=[("10.0.0.21", 26379), ("10.0.0.22", 26379), ("lb1", 26380)],
        service="linli",
        db=2,
        password="s@cret",
    )
    assert parse_sentinel("redis+sentinel://a/linli") == SentinelUrl(
        [("a", 26379)], "linli", 0, None
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://a:26379", "the path must be /<service>[/<db>]"),
        ("redis+sentinel://a/linli/x", "the path must be /<service>[/<db>]"),
        ("redis+sentinel://a/linli/0/1", "the path must be /<service>[/<db>]"),
        ("redis+sentinel://a:port/linli", "sentinel 'a:port' is not host[:port]"),
        ("redis+sentinel://a,,b/linli", "sentinel '' is not host[:port]"),
        ("redis+sentinel://a/linli?socket_timeout=1", "a Sentinel URL takes no query"),
        ("redis://a/0", "not a redis+sentinel:// URL"),
    ],
)
def test_a_bad_sentinel_url_says_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_sentinel(url)


def test_a_plain_url_is_one_server_whose_dead_connections_end_within_seconds() -> None:
    client = connect("redis://127.0.0.1:6379/15", socket_timeout=3)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6379, 15)
    assert kwargs["socket_timeout"] == 3
    assert kwargs["socket_connect_timeout"] == 2
    assert kwargs["socket_keepalive"] is True
    assert kwargs["socket_keepalive_options"][socket.TCP_USER_TIMEOUT] == 10_000
    assert client.ping() is True


def test_a_sentinel_url_asks_the_sentinels_for_the_master() -> None:
    client = connect("redis+sentinel://127.0.0.1:1/linli/3", socket_timeout=1)
    assert client.connection_pool.service_name == "linli"
    assert client.connection_pool.connection_kwargs["db"] == 3
    with pytest.raises(redis.sentinel.MasterNotFoundError):  # no sentinel listens on port 1
        client.ping()
