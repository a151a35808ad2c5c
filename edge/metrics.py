"""Prometheus ``/metrics`` of a gateway: every counter of ``Gateway.counters``.

prometheus-client's own server runs in its thread; the collector reads the counters
when scraped (a short SQLite read), so nothing is kept twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily

PREFIX = "warelink_edge_"


class CountersCollector:
    def __init__(self, gateway: str, counters: Callable[[], dict[str, float]]) -> None:
        self.gateway = gateway
        self.counters = counters

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, value in self.counters().items():
            family = GaugeMetricFamily(PREFIX + name, name.replace("_", " "), labels=["gateway"])
            family.add_metric([self.gateway], value)
            yield family


async def serve_metrics(
    address: str, gateway: str, counters: Callable[[], dict[str, float]]
) -> None:
    """Serve until cancelled; ``address`` is host:port (port 0 picks a free one)."""
    host, _, port = address.rpartition(":")
    registry = CollectorRegistry()
    registry.register(CountersCollector(gateway, counters))
    server, thread = start_http_server(int(port), host or "127.0.0.1", registry)
    try:
        await asyncio.Event().wait()
    finally:
        server.shutdown()
        server.server_close()
        await asyncio.to_thread(thread.join, 5)
