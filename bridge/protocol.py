"""The Juggernaut 2.1 wire formats, in one module: what Rails publishes on
``juggernaut``, what a browser receives, the events published back, and socket.io 0.8
frames. The reference is ``docs/juggernaut-protocol.md`` (the legacy contract)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from json.encoder import encode_basestring as _encode_string  # non-ASCII raw, as JS
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

# What in json.dumps' output may differ from JSON.stringify's, conservatively (text in
# strings may match too; that only costs the slower, exact path): a float that repr
# writes as "1.0" or with an exponent ("1e-07", "1e+16"), a run of 16 digits (an
# integer a double cannot hold exactly), an integer-like key (V8 orders those first).
_MAYBE_NOT_JS = re.compile(r'[0-9](?:\.0(?![0-9])|[eE])|[0-9]{16}|"(?:0|[1-9][0-9]*)":')
_MAX_SAFE = 2**53
_MAX_INDEX = 2**32 - 2  # the largest array index: V8 puts such keys first, ascending


def dumps(obj: Any) -> str:
    """``JSON.stringify(obj)`` as Node writes it, byte for byte: compact, non-ASCII raw,
    "/" not escaped; numbers are doubles written by JavaScript's Number-to-String (``1``
    for 1.0, ``1e-7``, ``100000000000000000000``, an integer past 2**53 rounded, ``0``
    for -0); an object's integer-like keys (array indices) come first in ascending
    order, then the others in insertion order, as V8 keeps them; a lone surrogate
    (valid in a JSON string, not in UTF-8) is escaped as ``\\udxxx``, so the text can
    always be encoded. NaN and infinities raise ValueError: they are not JSON
    (:func:`loads` never produces them)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if _MAYBE_NOT_JS.search(text):
        parts: list[str] = []
        _js_encode(obj, parts)
        text = "".join(parts)
    if not text.isascii() and _LONE_SURROGATE.search(text):
        text = _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text


def _is_index(key: str) -> bool:
    return key.isdigit() and key.isascii() and (key == "0" or key[0] != "0") and (
        len(key) < 10 or int(key) <= _MAX_INDEX)


def _js_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, (bool, int, float)):
        return js_string(key)  # what json.dumps does with such keys, in JS's spelling
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _js_encode(value: Any, out: list[str]) -> None:
    # The exact path of dumps(): recursion as deep as the data's (loads refused what
    # would not fit in the recursion limit; RecursionError otherwise).
    if isinstance(value, str):
        out.append(_encode_string(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, (int, float)):
        out.append(js_number(value))
    elif isinstance(value, dict):
        items = [(_js_key(k), v) for k, v in value.items()]
        if any(_is_index(k) for k, _ in items):
            first = sorted(((k, v) for k, v in items if _is_index(k)), key=lambda kv: int(kv[0]))
            items = first + [(k, v) for k, v in items if not _is_index(k)]
        out.append("{")
        for i, (key, item) in enumerate(items):
            if i:
                out.append(",")
            out.append(_encode_string(key))
            out.append(":")
            _js_encode(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _js_encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def js_number(value: float) -> str:
    """JavaScript's Number::toString of a number (an int is made a double first, as
    JSON.parse reads it): the shortest digits that read back as the same double (what
    Python's repr finds too), written positionally from 1e-6 up to 1e21, else with an
    exponent (``1e-7``, ``1.5e+300``). NaN and infinities raise ValueError."""
    if isinstance(value, int):
        if -_MAX_SAFE <= value <= _MAX_SAFE:
            return str(int(value))  # exact (a bool or an int subclass: its number)
        try:
            value = float(value)
        except OverflowError:
            raise ValueError("an integer too big for a double is not a JSON number") from None
    if not math.isfinite(value):
        raise ValueError("NaN and infinities are not JSON")
    if value == 0:
        return "0"  # -0 too
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + (int(exponent) if exponent else 0)  # digits[:point] . rest
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k, n = len(digits), point
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    e = n - 1
    exp = f"e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + (digits if k == 1 else digits[0] + "." + digits[1:]) + exp


def js_string(value: Any) -> str:
    """``String(value)`` of a JSON value: the property key Node looks a channel up by
    (``42`` and ``4.2e1`` are the channel "42"; an array is joined with commas, null
    inside it as nothing; an object is "[object Object]")."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return js_number(value)
    if isinstance(value, (list, tuple)):
        return ",".join("" if v is None else js_string(v) for v in value)
    return "[object Object]"


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
    does), the session ids it skips, and the message body every recipient gets.

    ``channels`` are the names Node looked each listed channel up by (``String(value)``:
    ``Juggernaut.publish(42, ...)`` goes to the channel "42"), ``values`` what it listed
    (what a browser receives as ``channel``: the number 42)."""

    channels: list[str]
    exclude: frozenset[str]
    body: dict[str, Any]
    origin: str | None
    values: tuple[Any, ...]

    def targets(self) -> list[tuple[str, Any]]:
        """(channel name, value listed) for every listed channel, in order."""
        return list(zip(self.channels, self.values, strict=True))

    def first_values(self) -> dict[str, Any]:
        """Each channel listed, once, with the value it was first listed as."""
        first: dict[str, Any] = {}
        for name, value in self.targets():
            first.setdefault(name, value)
        return first

    def message_for(self, value: Any) -> dict[str, Any]:
        """What a browser subscribed to the channel listed as ``value`` receives: the
        publish without ``channels``, with ``channel`` (in place if it was there, else
        last) set to that value (a string, or what else was listed: the number 42)."""
        message = dict(self.body)
        message["channel"] = value
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
    # Node looks each listed channel up as a property key, String(value): the number 42
    # is the channel "42" (what the gem publishes for Juggernaut.publish(42, ...)), and
    # the browser gets the value listed, 42, as its "channel".
    values = tuple(js_channels(doc))
    try:
        names = [js_string(v) for v in values]
    except RecursionError:
        raise InvalidPublish("nested too deep") from None
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
    return Publish(names, exclude, body, origin if isinstance(origin, str) else None, values)


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

FRAME_CONNECT = "1::"


def parse_frame(frame: str) -> tuple[str, str]:
    """(type, data) of a socket.io frame ``type:id:endpoint[:data]``."""
    parts = frame.split(":", 3)
    if len(parts) < 3:
        raise ValueError("not a socket.io frame")
    return parts[0], parts[3] if len(parts) == 4 else ""
