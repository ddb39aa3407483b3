"""Mapping legacy histories to flask-chat messages: the history check, pairing copies,
the legacy id scheme, and where a FileStore keeps a key."""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone

import pytest
from flask_chat_migrations.errors import NotAHistory, OutOfRange
from flask_chat_migrations.history import LegacyMessage, parse_history
from flask_chat_migrations.legacy_ids import ConversationId, LegacyIds
from flask_chat_migrations.merge import PAPERCLIP_ID, copy_of, merge, sender_from_image
from flask_chat_migrations.sources import KeyTemplate, filestore_path

from flask_chat.ids import is_valid_id

HERE = os.path.dirname(os.path.abspath(__file__))


def m(text: str, direction: str, image: str | None = None) -> LegacyMessage:
    return LegacyMessage(text, direction, image)


def test_a_history_is_parsed_and_anything_else_named() -> None:
    convs = parse_history({"2_User": {"type": "User", "messages": [
        {"message_text": "hi", "type": "sent", "image": None}]}, "5_Group": {"messages": []}})
    assert [str(c.key) for c in convs] == ["2_User", "5_Group"]
    assert convs[0].messages == (m("hi", "sent"),)
    bad = {
        "an Array": [],
        "conversation key 'x'": {"x": {}},
        "2_User has type 'Group'": {"2_User": {"type": "Group", "messages": []}},
        "message 1 of 2_User has message_text nil": {"2_User": {"messages": [{"type": "sent"}]}},
        "message 1 of 2_User has image an Integer": {
            "2_User": {"messages": [{"message_text": "x", "type": "sent", "image": 3}]}},
    }
    for detail, value in bad.items():
        with pytest.raises(NotAHistory, match=re.escape(detail)):
            parse_history(value)


def test_two_copies_of_a_chat_merge_into_one_sequence() -> None:
    """alice has all six; bob's cache was cleared after the first two."""
    chat = [(1, "hi bob"), (2, "hi alice"), (1, "lunch?"), (2, "ok"), (1, "ok"), (2, "see you")]
    alice = [m(t, "sent" if s == 1 else "received", f"/img/{s}") for s, t in chat]
    bob = [m(t, "sent" if s == 2 else "received", f"/img/{s}") for s, t in chat[2:]]
    both = [copy_of(1, alice, 2), copy_of(2, bob, 1)]
    for copies in (both, both[::-1]):
        merged = merge(copies)
        assert [(x.sender, x.text) for x in merged.messages] == chat
        assert merged.positions == {1: [0, 1, 2, 3, 4, 5], 2: [2, 3, 4, 5]}


def test_messages_with_the_same_text_from_different_senders_stay_apart() -> None:
    alice = [m("ok", "sent"), m("ok", "received")]
    bob = [m("ok", "sent"), m("ok", "received")]  # bob's "ok" first, then alice's
    merged = merge([copy_of(1, alice, 2), copy_of(2, bob, 1)])
    assert len(merged.messages) == 3  # one "ok" is in both copies; never alice's as bob's
    for owner, copy in ((1, alice), (2, bob)):
        positions = merged.positions[owner]
        assert positions == sorted(positions)
        for message, position in zip(copy, positions, strict=True):
            sender = owner if message.direction == "sent" else 3 - owner
            assert merged.messages[position].sender == sender


def test_a_group_message_gets_its_sender_from_the_senders_own_copy() -> None:
    alice = [m("morning", "sent", "/a"), m("hello", "received", "/c-as-seen-by-alice"),
             m("standup", "received", "/b")]
    carol = [m("morning", "received", "/a"), m("hello", "sent", "/c")]
    merged = merge([copy_of(3, carol, None), copy_of(1, alice, None)])
    assert [(x.text, x.sender, x.image) for x in merged.messages] == [
        ("morning", 1, "/a"), ("hello", 3, "/c"), ("standup", None, "/b")]
    pattern = re.compile(PAPERCLIP_ID)
    assert sender_from_image(pattern, "/system/users/avatars/000/012/345/thumb/x.png") == 12345
    assert sender_from_image(pattern, "/assets/default.png") == 0
    assert sender_from_image(None, "/system/users/avatars/000/000/003/x.png") == 0


def test_legacy_ids_keep_order_never_collide_and_stay_in_the_past() -> None:
    ids = LegacyIds()
    seen: dict[str, ConversationId] = {}
    conversations = [ConversationId.pair(a, b) for a in range(1, 40) for b in range(a, 40)]
    conversations += [ConversationId("group", g) for g in range(1, 200)]
    conversations += [ConversationId("copy", g, u) for g in range(1, 30) for u in range(1, 30)]
    for conv in conversations:
        numbered = ids.message_ids(conv, 3)
        assert numbered == sorted(numbered) and all(is_valid_id(i) for i in numbered)
        for i in numbered:
            assert seen.setdefault(i, conv) == conv, f"{conv} and {seen[i]} share {i}"
    assert ConversationId.pair(5, 2) == ConversationId.pair(2, 5)
    epoch = int(datetime(2012, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
    # users 1 and 2: code 2 * 3 / 2 + 1 = 4, lane 0: the 12th millisecond
    assert ids.message_ids(ConversationId.pair(1, 2), 2) == [f"{epoch + 12}-0000",
                                                             f"{epoch + 12}-0001"]
    assert ids.message_ids(ConversationId.pair(409_000, 410_000), 1)[0] < "1577836800000"
    with pytest.raises(OutOfRange):
        ids.message_ids(ConversationId.pair(1, 420_000), 1)
    with pytest.raises(OutOfRange):
        ids.message_ids(ConversationId.pair(1, 2), 10_001)
    earlier = LegacyIds(epoch=datetime(1990, 1, 1, tzinfo=timezone.utc))
    assert earlier.message_ids(ConversationId.pair(1, 700_000), 1)[0] < "1577836800000"


def test_key_templates_and_filestore_paths() -> None:
    template = KeyTemplate("chat_history_{id}", namespace="app")
    assert template.key(7) == "app:chat_history_7"
    assert template.user_id("app:chat_history_7") == 7
    assert template.user_id("app:chat_history_x") is None
    assert template.user_id("other:chat_history_7") is None
    assert KeyTemplate("{id}", "we[ird]").pattern() == r"we\[ird\]:*"
    # The paths Rails' FileStore used in the fixtures.
    assert filestore_path("1") == os.path.join("032", "320", "1")
    assert filestore_path("17") == os.path.join("069", "9B0", "17")
    assert filestore_path("chat:1") == os.path.join("26B", "620", "chat%3A1")
    for rel in (filestore_path("4"), filestore_path("chat:4")):
        root = "rails-cache/filestore-rails32" if ":" not in rel and "%" not in rel else \
            "ruby-cases/filestore-as61-ns"
        assert os.path.exists(os.path.join(HERE, "fixtures", root, rel)), rel
    with pytest.raises(ValueError):
        KeyTemplate("no id here")
