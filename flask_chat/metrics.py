"""Prometheus metrics (``prometheus_client``), multi-process aware.

With ``PROMETHEUS_MULTIPROC_DIR`` set (as for any multi-process prometheus_client
deployment: gunicorn workers, several instances on one host), every process writes its
samples there and the metrics route aggregates them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess


class _Metrics:
    def __init__(self) -> None:
        self.connections = Gauge(
            "flask_chat_connections", "Open websocket connections.", multiprocess_mode="livesum"
        )
        self.connects = Counter("flask_chat_connects", "Websocket connections accepted.")
        self.refused = Counter(
            "flask_chat_refused_connections", "Websocket connections refused.", ["reason"]
        )
        self.deliveries = Counter(
            "flask_chat_deliveries", "Frames written to local websockets by the hub."
        )
        self.events = Counter("flask_chat_pubsub_events", "Pub/sub events the hub received.")
        self.sends = Counter("flask_chat_messages_sent", "Messages stored and published.")
        self.send_latency = Histogram(
            "flask_chat_send_seconds",
            "Time to validate, store and publish one message.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.slow_disconnects = Counter(
            "flask_chat_slow_client_disconnects", "Clients cut off for an overfull send backlog."
        )
        self.rejected_frames = Counter(
            "flask_chat_rejected_frames", "Client frames refused with an error frame.", ["code"]
        )
        self.hub_reconnects = Counter(
            "flask_chat_hub_reconnects", "Times the hub's Redis subscriber reconnected."
        )
        self.presence_changes = Counter(
            "flask_chat_presence_changes", "Users going online or offline.", ["state"]
        )


METRICS = _Metrics()


def render() -> tuple[bytes, str]:
    """The exposition text for this process, or for all processes in multi-process mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
