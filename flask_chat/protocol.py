"""The websocket wire format: every frame flask-chat sends or accepts, in one module.

Frames are JSON text messages; ``docs/protocol.md`` is their reference. A message frame
is side-neutral (``sender_id`` and ``to`` as the sender addressed it), so the same bytes
go to every recipient and every tab, live or in catch-up.

This module also builds the websocket framing itself (RFC 6455), because a fan-out
frames an event once and writes the same bytes to every socket.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from .entries import Message
from .errors import ChatError, ValidationError

# Opcodes (RFC 6455 section 5.2).
OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# Close codes (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013
#: Application close code (RFC 6455 reserves 4000-4999 for applications): the user
#: logged out, so this connection and its token are no longer valid.
CLOSE_LOGGED_OUT = 4401

#: Frame types a client may send.
CLIENT_TYPES = ("send", "typing", "read", "catchup", "window", "ping")


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


#: Every message event starts with these bytes (``message_event_from`` builds them in
#: this order), so the id can be read off an event without parsing its JSON.
MESSAGE_PREFIX = b'{"type":"message","id":"'
_ID_LENGTH = 18  # <13-digit ms>-<4-digit seq>, see ids.py


def payload_message_id(payload: bytes) -> str | None:
    """The id of a message event, or None for any other event."""
    if payload.startswith(MESSAGE_PREFIX):
        start = len(MESSAGE_PREFIX)
        return payload[start : start + _ID_LENGTH].decode("ascii", "replace")
    return None


def frame_message_id(frame: bytes) -> str | None:
    """The id of a message event inside a server frame built by :func:`ws_frame`."""
    start = frame.find(MESSAGE_PREFIX, 0, 10 + len(MESSAGE_PREFIX))
    if start < 0:
        return None
    start += len(MESSAGE_PREFIX)
    return frame[start : start + _ID_LENGTH].decode("ascii", "replace")


def ws_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One unmasked, unfragmented server frame."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return header + payload


def close_frame(code: int, reason: str = "") -> bytes:
    return ws_frame(struct.pack("!H", code) + reason.encode()[:123], OP_CLOSE)


# -- server -> client ------------------------------------------------------------------


def message_event(message: Message) -> bytes:
    return message_event_from(
        message.id,
        message.sender_id,
        str(message.conversation),
        message.message_text,
        message.image,
        message.sent_at,
    )


def message_event_from(
    message_id: str,
    sender_id: int,
    to: str,
    message_text: str,
    image: str | None,
    sent_at: str,
) -> bytes:
    return dumps(
        {
            "type": "message",
            "id": message_id,
            "sender_id": sender_id,
            "to": to,
            "message_text": message_text,
            "image": image,
            "sent_at": sent_at,
        }
    )


def message_event_from_cache(owner_id: int, conversation: str, entry: dict[str, Any]) -> bytes:
    """Rebuild the message frame from a cache entry: the same bytes as the live frame."""
    if conversation.endswith("_Group") or entry["type"] == "sent":
        to = conversation
    else:
        to = f"{owner_id}_User"
    return message_event_from(
        entry["id"],
        entry["sender_id"],
        to,
        entry["message_text"],
        entry["image"],
        entry["sent_at"],
    )


def hello(user_id: int, connection_id: str, ping_interval: float) -> bytes:
    return dumps(
        {
            "type": "hello",
            "user_id": user_id,
            "connection_id": connection_id,
            "ping_interval": ping_interval,
        }
    )


def error(err: ChatError, ref: Any = None) -> bytes:
    body: dict[str, Any] = {"type": "error", **err.to_dict()}
    if ref is not None:
        body["ref"] = ref
    return dumps(body)


def ack(ref: Any, message: Message) -> bytes:
    return dumps({"type": "ack", "ref": ref, "message": message.for_sender()})


def catchup_done(recovered: bool, count: int) -> bytes:
    return dumps({"type": "catchup", "recovered": recovered, "count": count})


def presence(online: list[int], offline: list[int]) -> bytes:
    """Who came online and who went offline (one frame for a whole batch of changes)."""
    return dumps({"type": "presence", "online": online, "offline": offline})


def online_snapshot(user_ids: list[int]) -> bytes:
    return dumps({"type": "online", "users": user_ids})


def typing(user_id: int, to: str) -> bytes:
    return dumps({"type": "typing", "user_id": user_id, "to": to})


def read_mark(user_id: int, to: str, message_id: str) -> bytes:
    return dumps({"type": "read", "user_id": user_id, "to": to, "id": message_id})


def window(conversation: str, state: str) -> bytes:
    return dumps({"type": "window", "conversation": conversation, "state": state})


def membership(group_id: int, member: bool) -> bytes:
    return dumps({"type": "membership", "group_id": group_id, "member": member})


def reconnect() -> bytes:
    return dumps({"type": "reconnect"})


#: Published on a user's channel when they log out: every instance closes that user's
#: connections (close code ``CLOSE_LOGGED_OUT``) after writing this frame.
LOGOUT = dumps({"type": "logout"})


PONG = dumps({"type": "pong"})


# -- client -> server ------------------------------------------------------------------


def _valid_ref(ref: object) -> bool:
    """A string (that can be echoed: no lone surrogate) or an integer (not a boolean,
    which Python counts as one), of at most 64 characters."""
    if isinstance(ref, str):
        try:
            ref.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return len(ref) <= 64
    return isinstance(ref, int) and not isinstance(ref, bool) and len(str(ref)) <= 64


def parse_client_frame(text: str, extra_types: tuple[str, ...] = ()) -> dict[str, Any]:
    """Decode and check the envelope of a client frame; fields are checked by handlers.
    ``extra_types`` are frame types add-ons (the Juggernaut bridge) handle."""
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        # RecursionError: JSON nested deeper than the interpreter's stack, a hostile frame.
        raise ValidationError("The frame is not valid JSON.", code="invalid_json") from None
    if not isinstance(frame, dict):
        raise ValidationError("A frame must be a JSON object.", code="invalid_frame")
    ref = frame.get("ref")
    if ref is not None and not _valid_ref(ref):
        raise ValidationError(
            "'ref' must be a string or number of at most 64 characters.",
            code="invalid_field",
            field="ref",
        )
    kind = frame.get("type")
    if kind not in CLIENT_TYPES and kind not in extra_types:
        raise InvalidFrame(
            f"Unknown frame type; expected one of {', '.join(CLIENT_TYPES + extra_types)}.",
            code="unknown_type",
            field="type",
            ref=ref,
        )
    return frame


class InvalidFrame(ValidationError):
    """A frame refused after its ``ref`` was read, so the error frame can echo it."""

    def __init__(self, message: str, *, code: str, field: str, ref: Any) -> None:
        super().__init__(message, code=code, field=field)
        self.ref = ref
