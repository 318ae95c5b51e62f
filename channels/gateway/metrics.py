"""The gateway's Prometheus metrics: how long residents wait for an answer, and how many wait.

Served on a port of its own (GATEWAY_METRICS_PORT), not on the gateway's, which the balancer
puts on the internet for the web chat and WeChat. The work's state (orders, SLA clocks,
handoffs, SOS) is the scheduler's to report (workorders/metrics.py).
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry()
# Seconds: a chat answer is good under 0.3 s and late after a few; WeChat gives up at 5 s.
_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)

TURN_SECONDS = Histogram(
    "linli_gateway_turn_seconds",
    "A resident's message until the gateway has the answer (waiting, the dialogue, the API)",
    ["channel"],
    buckets=_BUCKETS,
    registry=REGISTRY,
)
DIALOGUE_SECONDS = Histogram(
    "linli_dialogue_turn_seconds",
    "The dialogue's (Rasa's) turn, as the gateway waits for it",
    ["channel"],
    buckets=_BUCKETS,
    registry=REGISTRY,
)
TURNS_RUNNING = Gauge(
    "linli_gateway_turns_running", "Turns with the dialogue now", registry=REGISTRY
)
TURNS_WAITING = Gauge(
    "linli_gateway_turns_waiting",
    "Messages waiting for a turn slot (GATEWAY_MAX_TURNS are with the dialogue)",
    registry=REGISTRY,
)


def serve(host: str, port: int) -> None:
    """GET /metrics on a thread of its own."""
    start_http_server(port, addr=host, registry=REGISTRY)
    logging.getLogger(__name__).info("metrics on http://%s:%d/metrics", host, port)
