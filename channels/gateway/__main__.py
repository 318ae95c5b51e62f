"""python -m channels.gateway [--host 127.0.0.1] [--port 8010]  (defaults from the environment)"""

from __future__ import annotations

import argparse
import logging

import uvicorn

from channels.gateway import metrics
from channels.gateway.app import create_app
from channels.gateway.settings import get_settings


def main() -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description="邻里助手：对话网关（网页聊天 /chat/）")
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if settings.metrics_port:
        metrics.serve(settings.metrics_host, settings.metrics_port)
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        # Open web chat streams never end by themselves: do not wait long for them.
        timeout_graceful_shutdown=3,
    )


if __name__ == "__main__":
    main()
