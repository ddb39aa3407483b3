"""The bridge's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge


class _BridgeMetrics:
    def __init__(self) -> None:
        self.publishes = Counter(
            "flask_chat_juggernaut_publishes", "Publishes read from the juggernaut channel."
        )
        self.dropped = Counter(
            "flask_chat_juggernaut_dropped",
            "Publishes on juggernaut dropped as invalid.",
            ["reason"],
        )
        self.deliveries = Counter(
            "flask_chat_juggernaut_deliveries", "Legacy-channel messages written to clients."
        )
        self.refused = Counter(
            "flask_chat_juggernaut_refused_subscriptions",
            "Subscriptions to legacy channels the client may not read.",
        )
        self.limited = Counter(
            "flask_chat_juggernaut_limited_frames",
            "Legacy-channel frames dropped (legacy clients) or refused (native clients) over "
            "a per-connection limit: the frame rate or the number of subscriptions.",
            ["reason"],
        )
        self.refused_connections = Counter(
            "flask_chat_juggernaut_refused_connections",
            "socket.io handshakes and websockets refused (origin not allowed, no handshake).",
            ["reason"],
        )
        self.polls = Counter(
            "flask_chat_juggernaut_polls",
            "socket.io polling requests answered (GET: a poll, POST: client packets).",
            ["transport", "method"],
        )
        self.polling_sessions = Gauge(
            "flask_chat_juggernaut_polling_sessions",
            "socket.io polling sessions whose subscriptions this process holds.",
        )
        self.translated = Counter(
            "flask_chat_juggernaut_translated", "Legacy publishes turned into chat messages."
        )


BRIDGE_METRICS = _BridgeMetrics()
