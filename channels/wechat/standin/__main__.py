"""python -m channels.wechat.standin --port PORT --callback URL: a WeChat official account's
server on loopback (WeChat's /cgi-bin API, pushes to the channel's callback, a phone page at /).

The account's secrets (WECHAT_TOKEN, WECHAT_AES_KEY, WECHAT_APP_ID, WECHAT_APP_SECRET,
WECHAT_MODE) come from the environment or var/linli.env, the same the channel reads."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from channels.wechat.standin.app import create_app
from channels.wechat.standin.settings import Mode, StandinSettings


def main() -> None:
    settings = StandinSettings()
    parser = argparse.ArgumentParser(
        prog="python -m channels.wechat.standin", description="微信公众号服务器替身（本机）"
    )
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--callback", default=settings.callback, help="the channel's endpoint")
    parser.add_argument("--mode", choices=[m.value for m in Mode], default=settings.mode.value)
    parser.add_argument("--original-id", default=settings.original_id, help="gh_ + 12 hex")
    parser.add_argument("--token-ttl", type=int, default=settings.token_ttl_seconds)
    parser.add_argument(
        "--cutoff", type=float, default=settings.cutoff_seconds, help="seconds (WeChat: 5)"
    )
    parser.add_argument(
        "--retries", type=int, default=settings.retries, help="after the first try (WeChat: 3)"
    )
    args = parser.parse_args()
    settings = settings.copy(
        update={
            "host": args.host,
            "port": args.port,
            "callback": args.callback,
            "mode": Mode(args.mode),
            "original_id": args.original_id,
            "token_ttl_seconds": args.token_ttl,
            "cutoff_seconds": args.cutoff,
            "retries": args.retries,
        }
    )
    problems = settings.problems()
    if problems:
        sys.exit("wechat stand-in: " + "; ".join(problems))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger(__name__).info(
        "WeChat stand-in for %s (%s mode) pushing to %s",
        settings.original_id, settings.mode.value, settings.callback,
    )  # fmt: skip
    uvicorn.run(create_app(settings), host=args.host, port=args.port, timeout_graceful_shutdown=3)


if __name__ == "__main__":
    main()
