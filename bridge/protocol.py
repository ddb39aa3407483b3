"""The Juggernaut 2.1 wire formats, in one module: what Rails publishes on
``juggernaut``, what a browser receives, the events published back, and socket.io 0.8
frames. The reference is ``docs/juggernaut-protocol.md`` (the legacy contract)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
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


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps(obj: Any) -> str:
    """JSON.stringify's output: compact, non-ASCII raw, "/" not escaped, and a lone
    surrogate (valid in a JSON string, not in UTF-8) escaped as ``\\udxxx`` as Node does,
    so the text can always be encoded. NaN and infinities raise ValueError: they are not
    JSON (:func:`loads` never produces them)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if not text.isascii() and _LONE_SURROGATE.search(text):
        text = _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _js_float(text: str) -> float | None:
    # JSON.parse reads 1e400 as Infinity, which JSON.stringify writes as null.
    value = float(text)
    return value if math.isfinite(value) else None


def _js_int(text: str) -> int | None:
    # The same for an integer too big for a double (and Python's int() has a digit limit).
    if len(text) > 308 and math.isinf(float(text)):
        return None
    return int(text)


def loads(raw: bytes | str) -> Any:
    """JSON.parse as Node's Juggernaut ran it: bytes are UTF-8 (invalid sequences become
    U+FFFD, as in node redis), a BOM or NaN/Infinity is an error, numbers too big for a
    double become null. Raises ValueError (RecursionError for absurd nesting)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else raw
    return json.loads(text, parse_constant=_not_json, parse_float=_js_float, parse_int=_js_int)


def js_truthy(value: Any) -> bool:
    """JavaScript truthiness of a JSON value: [] and {} are true, "" and 0 are false."""
    if value is None or value is False or value == "":
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0
    return True


def js_channels(doc: dict[str, Any]) -> list[Any]:
    """``Array.makeArray(message.channels || message.channel)``, as Juggernaut reads the
    channels of a publish and of a client's subscribe: a string is one channel, an array
    is copied, anything else (a number, an object) is no channel."""
    value = doc.get("channels")
    if not js_truthy(value):
        value = doc.get("channel")
    if not js_truthy(value):
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return list(value)
    return []


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
        doc = loads(raw)
    except ValueError:
        raise InvalidPublish("not JSON") from None
    except RecursionError:
        raise InvalidPublish("nested too deep") from None
    if not isinstance(doc, dict):
        raise InvalidPublish("not a JSON object")
    # Channels that are not strings (Node would use String(value)) are left out.
    names = [c for c in js_channels(doc) if isinstance(c, str)]
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


def channel_key(channel: str | None) -> str:
    """The channel a subscribe without a channel (None) joins: Juggernaut's "undefined"."""
    return "undefined" if channel is None else channel


def distinct_channels(channels: Iterable[str | None]) -> list[str | None]:
    """One name per channel, in the order first subscribed (a client that subscribed
    twice gets a single unsubscribe)."""
    seen: dict[str, str | None] = {}
    for channel in channels:
        seen.setdefault(channel_key(channel), channel)
    return list(seen.values())


def unsubscribe_payloads(session_id: str, channels: Iterable[str | None], meta: Any) -> list[str]:
    """The ``juggernaut:unsubscribe`` payloads of a session that ended: one per channel."""
    return [event_payload("unsubscribe", session_id, meta, channel=channel)
            for channel in distinct_channels(channels)]


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
