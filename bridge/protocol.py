"""The Juggernaut 2.1 wire formats, in one module: what Rails publishes on
``juggernaut``, what a browser receives, the events published back, and socket.io 0.8
frames. The reference is ``docs/juggernaut-protocol.md`` (the legacy contract)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PUBLISH_CHANNEL = "juggernaut"
EVENT_CHANNELS = {
    "subscribe": "juggernaut:subscribe",
    "unsubscribe": "juggernaut:unsubscribe",
    "custom": "juggernaut:custom",
}

#: Marks what flask-chat mirrored out to ``juggernaut`` so it is never taken back in.
ORIGIN_KEY = "_flask_chat"

# No meta at all is not the same as an explicit null: Node's JSON.stringify drops keys
# whose value is undefined, and keeps null.
NO_META: Any = object()


def dumps(obj: Any) -> str:
    # JSON.stringify's output: compact, non-ASCII raw, "/" not escaped.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Publish:
    """One parsed publish: the channels it goes to (duplicates kept, as Juggernaut
    does), the session ids it skips, and the message body every recipient gets."""

    channels: list[str]
    exclude: frozenset[str]
    body: dict[str, Any]
    origin: str | None

    def message_for(self, channel: str) -> dict[str, Any]:
        """What a browser subscribed to ``channel`` receives: the publish without
        ``channels``, with ``channel`` (in place if it was there, else last)."""
        message = dict(self.body)
        message["channel"] = channel
        return message


class InvalidPublish(ValueError):
    pass


def parse_publish(raw: bytes | str) -> Publish:
    """Parse a ``juggernaut`` publish with the Node server's exact semantics."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidPublish("not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidPublish("not a JSON object")
    channels = doc.get("channels")
    if not channels:
        channels = doc.get("channel")
    if isinstance(channels, str):
        names = [channels]
    elif isinstance(channels, list):
        names = [c for c in channels if isinstance(c, str)]
    else:
        names = []  # a number, boolean or object counts as no channels
    exclude: frozenset[str]
    raw_except = doc.get("except")
    if isinstance(raw_except, str):
        exclude = frozenset([raw_except])
    elif isinstance(raw_except, list):
        exclude = frozenset(e for e in raw_except if isinstance(e, str))
    else:
        exclude = frozenset()  # a number is silently ignored, as in Juggernaut
    body = {k: v for k, v in doc.items() if k != "channels"}
    origin = doc.get(ORIGIN_KEY)
    return Publish(names, exclude, body, origin if isinstance(origin, str) else None)


def event_payload(kind: str, session_id: str, meta: Any, channel: str | None = None,
                  data: Any = NO_META) -> str:
    """A ``juggernaut:subscribe|unsubscribe|custom`` payload, keys in Node's order:
    ``channel, meta, session_id`` or ``meta, session_id, data``; ``meta`` left out when
    the client never sent any, kept when it sent null."""
    body: dict[str, Any] = {}
    if kind in ("subscribe", "unsubscribe"):
        if channel is not None:  # a subscribe with no channel has no channel key
            body["channel"] = channel
    if meta is not NO_META:
        body["meta"] = meta
    body["session_id"] = session_id
    if kind == "custom" and data is not NO_META:
        body["data"] = data
    return dumps(body)


# -- socket.io 0.8 (protocol 1) -------------------------------------------------------

HEARTBEAT_TIMEOUT = 15
CLOSE_TIMEOUT = 25
HEARTBEAT_INTERVAL = 20

FRAME_CONNECT = "1::"
FRAME_HEARTBEAT = "2::"
FRAME_DISCONNECT = "0::"


def message_frame(message: dict[str, Any] | str) -> str:
    return "3:::" + (message if isinstance(message, str) else dumps(message))


def parse_frame(frame: str) -> tuple[str, str]:
    """(type, data) of a socket.io frame ``type:id:endpoint[:data]``."""
    parts = frame.split(":", 3)
    if len(parts) < 3:
        raise ValueError("not a socket.io frame")
    return parts[0], parts[3] if len(parts) == 4 else ""
