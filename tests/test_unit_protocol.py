"""Unit tests of the wire format (flask_chat.protocol): the client frame parser's
envelope checks and exact error codes, and the exact bytes of the server frames.
The last tests check the one limit the parser relies on its caller for: the size of a
client message, enforced by the connection before any text reaches the parser."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from units import Pairs, client_frame, until

from flask_chat import ChatError, Message, ValidationError, protocol
from flask_chat.conversations import ConversationKey
from flask_chat.protocol import InvalidFrame, parse_client_frame

MESSAGE_ID = "1764291234567-0003"
SENT_AT = "2025-11-28T00:53:54.567Z"


def message(to: str = "2_User", text: str = "hi") -> Message:
    return Message(MESSAGE_ID, ConversationKey.parse(to), 1, text, None, SENT_AT)


def refused(text: str, extra: tuple[str, ...] = ()) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        parse_client_frame(text, extra)
    return caught.value


# -- the parser: what it accepts ------------------------------------------------------

VALID_FRAMES: list[dict[str, Any]] = [
    {"type": "send", "to": "2_User", "message_text": "hi", "ref": 1, "key": "k-1"},
    {"type": "typing", "to": "5_Group"},
    {"type": "read", "to": "2_User", "id": MESSAGE_ID, "ref": "r"},
    {"type": "catchup", "after": MESSAGE_ID},
    {"type": "window", "conversation": "2_User", "state": "open"},
    {"type": "ping"},
]


def test_every_client_frame_type_is_listed_and_accepted() -> None:
    assert {f["type"] for f in VALID_FRAMES} == set(protocol.CLIENT_TYPES)
    for frame in VALID_FRAMES:
        assert parse_client_frame(json.dumps(frame)) == frame


def test_the_parser_checks_the_envelope_only_and_passes_fields_through() -> None:
    """Fields are the handlers' business: of any type, and extra keys, come back as they are."""
    frame = {"type": "send", "to": 5, "message_text": ["x"], "extra": {"a": None}}
    assert parse_client_frame(json.dumps(frame)) == frame
    assert parse_client_frame('  {"type": "ping"}\n') == {"type": "ping"}
    assert parse_client_frame('{"type": "ping", "type": "ping"}') == {"type": "ping"}


@pytest.mark.parametrize(
    "ref",
    ["r", "", "x" * 64, 0, -1, 10**63, "é" * 64, None],
    ids=["short", "empty", "64-chars", "zero", "negative", "64-digits", "64-non-ascii", "null"],
)
def test_valid_refs(ref: Any) -> None:
    assert parse_client_frame(json.dumps({"type": "ping", "ref": ref}))["ref"] == ref


def test_frame_types_of_add_ons_are_accepted_when_registered() -> None:
    extra = ("subscribe", "unsubscribe")
    assert parse_client_frame('{"type": "subscribe", "channel": "c"}', extra) == {
        "type": "subscribe",
        "channel": "c",
    }
    assert parse_client_frame('{"type": "send"}', extra)["type"] == "send"
    err = refused('{"type": "subscribe", "ref": 3}')
    assert isinstance(err, InvalidFrame) and err.code == "unknown_type" and err.ref == 3
    # The refusal names what this server takes, the add-ons' types too.
    assert "subscribe, unsubscribe" in refused('{"type": "meta"}', extra).message


# -- the parser: what it refuses, with which code --------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "{",
        '{"type": "ping",}',
        "{'type': 'ping'}",
        '{"type": "ping"} x',
        "[" * 100_000,  # deeper than the interpreter's stack
        '{"type": "ping", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",  # closed, still too deep
    ],
    ids=["empty", "word", "unclosed", "trailing-comma", "single-quotes", "trailing-data",
         "deep-open", "deep-closed"],
)
def test_text_that_is_not_json_is_invalid_json(text: str) -> None:
    err = refused(text)
    assert err.code == "invalid_json" and err.field is None
    assert not isinstance(err, InvalidFrame)  # nothing was read: there is no ref to echo
    assert protocol.error(err) == (
        b'{"type":"error","error":"invalid_json","message":"The frame is not valid JSON."}'
    )


def test_a_huge_integer_is_refused_not_a_crash() -> None:
    # Python 3.11+ refuses to parse integers of over 4300 digits (invalid_json); 3.10
    # parses it, and the ref is then too long.
    err = refused('{"type": "ping", "ref": ' + "1" * 5000 + "}")
    assert err.code in ("invalid_json", "invalid_field")


@pytest.mark.parametrize("text", ["[]", '[{"type": "ping"}]', "1", '"ping"', "null", "true", "NaN"])
def test_json_that_is_not_an_object_is_invalid_frame(text: str) -> None:
    err = refused(text)
    assert (err.code, err.field) == ("invalid_frame", None)


@pytest.mark.parametrize(
    "ref",
    [{"a": 1}, [1], 1.5, "x" * 65, 10**64, -(10**63), "é" * 65],
    ids=["object", "list", "float", "65-chars", "65-digits", "65-with-sign", "65-non-ascii"],
)
def test_invalid_refs_are_invalid_field(ref: Any) -> None:
    for kind in ("ping", "nope"):  # the ref is checked before the type
        err = refused(json.dumps({"type": kind, "ref": ref}))
        assert (err.code, err.field) == ("invalid_field", "ref")
        assert not isinstance(err, InvalidFrame)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"type": None},
        {"type": "nope"},
        {"type": "Send"},
        {"type": " send"},
        {"type": 1},
        {"type": ["send"]},
        {"type": {"send": 1}},
        {"type": "pong"},  # server frames are not client frames
        {"type": "message"},
        {"kind": "send"},
    ],
    ids=lambda body: json.dumps(body),
)
def test_unknown_types_are_refused_echoing_the_ref(body: dict[str, Any]) -> None:
    for ref in ("r1", 7, None):
        frame = dict(body) if ref is None else {**body, "ref": ref}
        err = refused(json.dumps(frame))
        assert isinstance(err, InvalidFrame)
        assert (err.code, err.field, err.ref) == ("unknown_type", "type", ref)


def test_the_unknown_type_error_frame_exactly() -> None:
    err = refused('{"type": "nope", "ref": "r1"}')
    assert protocol.error(err, getattr(err, "ref", None)) == (
        b'{"type":"error","error":"unknown_type","message":"Unknown frame type; expected one '
        b'of send, typing, read, catchup, window, ping.","field":"type","ref":"r1"}'
    )


@pytest.mark.parametrize("ref", [True, False])
def test_a_boolean_ref_is_invalid_field(ref: bool) -> None:
    err = refused(json.dumps({"type": "ping", "ref": ref}))
    assert (err.code, err.field) == ("invalid_field", "ref")


@pytest.mark.parametrize("kind", ["send", "nope"])
def test_every_accepted_ref_can_be_echoed(kind: str) -> None:
    text = '{"type": "' + kind + '", "ref": "\\ud800"}'
    try:
        frame = parse_client_frame(text)
    except ChatError as err:
        protocol.error(err, getattr(err, "ref", None))  # the answer to a refusal
    else:
        protocol.ack(frame["ref"], message())  # the answer to a send


# -- server frames: exact bytes --------------------------------------------------------


def test_websocket_framing_bytes() -> None:
    assert protocol.ws_frame(b"hi") == b"\x81\x02hi"
    assert protocol.ws_frame(b"") == b"\x81\x00"
    assert protocol.ws_frame(b"x" * 125)[:2] == b"\x81\x7d"
    assert protocol.ws_frame(b"x" * 126) == b"\x81\x7e\x00\x7e" + b"x" * 126
    assert protocol.ws_frame(b"x" * 65535)[:4] == b"\x81\x7e\xff\xff"
    big = protocol.ws_frame(b"x" * 65536)
    assert big[:10] == b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00" and len(big) == 65546
    assert protocol.ws_frame(b"", protocol.OP_PING) == b"\x89\x00"
    assert protocol.ws_frame(b"p", protocol.OP_PONG) == b"\x8a\x01p"


def test_close_frame_bytes() -> None:
    assert protocol.close_frame(protocol.CLOSE_NORMAL) == b"\x88\x02\x03\xe8"
    assert protocol.close_frame(protocol.CLOSE_LOGGED_OUT, "logged out") == (
        b"\x88\x0c\x11\x31logged out"
    )
    # A control frame carries at most 125 bytes: the code and 123 of the reason.
    long = protocol.close_frame(protocol.CLOSE_POLICY, "x" * 500)
    assert long[:4] == b"\x88\x7d\x03\xf0" and len(long) == 2 + 125


def test_message_event_bytes_are_compact_utf8_in_a_fixed_order() -> None:
    event = protocol.message_event(message(text='hé ☃ "q"\n'))
    assert event == (
        b'{"type":"message","id":"1764291234567-0003","sender_id":1,"to":"2_User",'
        b'"message_text":"h\xc3\xa9 \xe2\x98\x83 \\"q\\"\\n","image":null,'
        b'"sent_at":"2025-11-28T00:53:54.567Z"}'
    )
    assert event.startswith(protocol.MESSAGE_PREFIX)


def test_message_events_rebuilt_from_a_cache_are_the_live_bytes() -> None:
    """Catch-up rebuilds events from cache entries: each side's entry gives the same
    side-neutral bytes as the live event."""
    for to in ("2_User", "5_Group"):
        m = message(to)
        live = protocol.message_event(m)
        sent = m.cache_entry("sent")
        received = m.cache_entry("received")
        assert protocol.message_event_from_cache(1, to, sent) == live
        # The recipient holds a 1:1 message under the sender's key (1_User).
        theirs = "1_User" if to == "2_User" else to
        assert protocol.message_event_from_cache(2, theirs, received) == live


def test_other_server_frames_bytes() -> None:
    assert protocol.hello(1, "abc", 25.0) == (
        b'{"type":"hello","user_id":1,"connection_id":"abc","ping_interval":25.0}'
    )
    assert protocol.ack("r", message()) == (
        b'{"type":"ack","ref":"r","message":{"id":"1764291234567-0003","conversation":'
        b'"2_User","message_text":"hi","type":"sent","image":null,"sender_id":1,'
        b'"sent_at":"2025-11-28T00:53:54.567Z"}}'
    )
    assert protocol.ack(None, message()).startswith(b'{"type":"ack","ref":null,')
    err = ValidationError("Bad.", code="invalid_field", field="to")
    assert protocol.error(err) == (
        b'{"type":"error","error":"invalid_field","message":"Bad.","field":"to"}'
    )
    # A ref of 0 is a ref: it is echoed.
    assert protocol.error(ChatError("No.", code="x"), 0) == (
        b'{"type":"error","error":"x","message":"No.","ref":0}'
    )
    assert protocol.catchup_done(True, 3) == b'{"type":"catchup","recovered":true,"count":3}'
    assert protocol.catchup_done(False, 0) == b'{"type":"catchup","recovered":false,"count":0}'
    assert protocol.presence([2], [3]) == b'{"type":"presence","online":[2],"offline":[3]}'
    assert protocol.online_snapshot([2, 3]) == b'{"type":"online","users":[2,3]}'
    assert protocol.online_snapshot([]) == b'{"type":"online","users":[]}'
    assert protocol.typing(1, "2_User") == b'{"type":"typing","user_id":1,"to":"2_User"}'
    assert protocol.read_mark(1, "5_Group", MESSAGE_ID) == (
        b'{"type":"read","user_id":1,"to":"5_Group","id":"1764291234567-0003"}'
    )
    assert protocol.window("2_User", "open") == (
        b'{"type":"window","conversation":"2_User","state":"open"}'
    )
    assert protocol.membership(5, False) == b'{"type":"membership","group_id":5,"member":false}'
    assert protocol.reconnect() == b'{"type":"reconnect"}'
    assert protocol.LOGOUT == b'{"type":"logout"}'
    assert protocol.PONG == b'{"type":"pong"}'


def test_message_ids_are_read_off_events_and_frames_without_parsing() -> None:
    for text in ("hi", "x" * 200, "y" * 70_000):  # the three header sizes
        event = protocol.message_event(message(text=text))
        assert protocol.payload_message_id(event) == MESSAGE_ID
        assert protocol.frame_message_id(protocol.ws_frame(event)) == MESSAGE_ID
    for other in (protocol.presence(2, True), protocol.LOGOUT, protocol.membership(5, True)):
        assert protocol.payload_message_id(other) is None
        assert protocol.frame_message_id(protocol.ws_frame(other)) is None
    # A frame whose text mentions a message event further in is not a message event.
    quoted = protocol.typing(1, "2_User")[:-1] + b',"x":' + protocol.message_event(message()) + b"}"
    assert protocol.frame_message_id(protocol.ws_frame(quoted)) is None


# -- the size limit in front of the parser (the connection's) --------------------------


@pytest.fixture
def pairs() -> Iterator[Pairs]:
    made = Pairs()
    yield made
    made.close()


def test_a_message_over_the_limit_is_closed_with_1009_and_never_parsed(pairs: Pairs) -> None:
    texts: list[str] = []
    conn, peer = pairs(1, on_text=lambda c, text: texts.append(text), max_message=1024)
    at_limit = '{"type":"ping","pad":"' + "x" * (1024 - 24) + '"}'
    assert len(at_limit) == 1024
    peer.send(client_frame(at_limit.encode()))
    until(lambda: texts, what="the message at the limit")
    peer.send(client_frame(b"x" * 1025))
    assert peer.close_code() == protocol.CLOSE_TOO_BIG
    assert texts == [at_limit]


def test_fragments_count_towards_the_limit_together(pairs: Pairs) -> None:
    texts: list[str] = []
    conn, peer = pairs(1, on_text=lambda c, text: texts.append(text), max_message=1024)
    peer.send(client_frame(b'{"type":"ping","x":"' + b"x" * 600, fin=False))
    peer.send(client_frame(b"x" * 600 + b'"}', opcode=protocol.OP_CONTINUATION))
    assert peer.close_code() == protocol.CLOSE_TOO_BIG
    assert texts == []
