"""The hotline's Prometheus metrics, on a port of their own (HOTLINE_METRICS_PORT): the calls in
progress, the calls answered, what its SIP endpoint counted (admissions, refusals, dropped
RTP), and whether this host places the hotline's own calls (the lease). Read at each scrape
from the running hotline, on the metrics server's thread."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from voice.hotline import Hotline


class HotlineCollector:
    def __init__(self, hotline: Hotline) -> None:
        self.hotline = hotline

    def collect(self) -> Iterator[Metric]:
        endpoint = self.hotline.endpoint
        calls = GaugeMetricFamily(
            "linli_hotline_calls", "Calls in progress (HOTLINE_MAX_CALLS at most; more get 486)"
        )
        calls.add_metric([], len(endpoint.calls) if endpoint is not None else 0)
        yield calls
        yield CounterMetricFamily(
            "linli_hotline_calls_answered",
            "Calls answered since the hotline started",
            value=self.hotline.calls_answered,
        )
        sip = CounterMetricFamily(
            "linli_hotline_sip", "What the SIP endpoint counted since start", labels=["what"]
        )
        for what, count in sorted(self.hotline.stats().items()):
            if what != "calls_answered":
                sip.add_metric([what], count)
        yield sip
        outbound = self.hotline.outbound
        if outbound is not None:
            held = GaugeMetricFamily(
                "linli_hotline_outbound_lease_held",
                "1 on the hotline host that places the own calls (SOS callbacks, family, 回访)",
            )
            held.add_metric([], 1.0 if outbound.holding else 0.0)
            yield held


def registry(hotline: Hotline) -> CollectorRegistry:
    collectors = CollectorRegistry()
    collectors.register(HotlineCollector(hotline))
    return collectors


def serve(hotline: Hotline, host: str, port: int) -> None:
    """GET /metrics on a thread of its own."""
    start_http_server(port, addr=host, registry=registry(hotline))
    logging.getLogger(__name__).info("metrics on http://%s:%d/metrics", host, port)
