"""Unit tests of catch-up (flask_chat.catchup.replay and the stores it reads): messages
sent with ``chat.send_message`` on a real Redis, replayed to a real Connection over a
socket pair, the frames read off its peer."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import GROUPS
from flask import Flask
from units import Pairs, Peer

from flask_chat import Chat, GroupInfo, Message, catchup, protocol
from flask_chat.connection import Connection
from flask_chat.ids import format_id

AppFactory = Callable[..., Flask]
#: What a replay wrote: the message events, then the closing ``catchup`` frame.
Replayed = tuple[list[bytes], dict[str, Any]]


@pytest.fixture
def pairs() -> Iterator[Pairs]:
    made = Pairs()
    yield made
    made.close()


def chat_of(app: Flask) -> Iterator[Chat]:
    with app.app_context():
        yield app.extensions["chat"]


@pytest.fixture
def chat(app_factory: AppFactory) -> Iterator[Chat]:
    yield from chat_of(app_factory(CHAT_PERSISTENCE=False))


@pytest.fixture(params=[True, False], ids=["member-caches", "shared-group-stores"])
def either_chat(app_factory: AppFactory, request: pytest.FixtureRequest) -> Iterator[Chat]:
    """Group messages copied into online members' caches, or read from the group's store."""
    yield from chat_of(
        app_factory(CHAT_PERSISTENCE=False, CHAT_GROUP_MEMBER_CACHES=request.param)
    )


def online(chat: Chat, *user_ids: int) -> None:
    """Mark users online as a live websocket would (group copies go to online members)."""
    for user_id in user_ids:
        chat.state.presence.connect(user_id, f"test-{user_id}")


def replay(chat: Chat, conn: Connection, peer: Peer, after: str) -> Replayed:
    """Replay to ``conn``: (the message events its peer got, the closing catchup frame)."""
    catchup.replay(chat.state, conn, after)
    got: list[bytes] = []
    while True:
        payload = peer.text()
        if payload.startswith(b'{"type":"catchup"'):
            assert peer.pending() == b""
            done: dict[str, Any] = json.loads(payload)
            return got, done
        got.append(payload)


def events(messages: list[Message]) -> list[bytes]:
    return [protocol.message_event(m) for m in messages]


def position_ago(seconds: float) -> str:
    return format_id(int((time.time() - seconds) * 1000), 0)


def conversation(chat: Chat) -> list[Message]:
    """Alice (1), bob (2) and carol (3): 1:1 messages both ways between alice and bob,
    interleaved with messages to the team (group 5: all three) and to duo (6: bob, carol)."""
    return [
        chat.send_message(1, "2_User", "alice to bob"),
        chat.send_message(3, "5_Group", "carol to the team"),
        chat.send_message(2, "1_User", "bob to alice"),
        chat.send_message(3, "6_Group", "carol to duo"),
        chat.send_message(2, "5_Group", "bob to the team"),
        chat.send_message(1, "2_User", "alice to bob again"),
    ]


def test_a_replay_yields_exactly_the_later_messages_in_id_order(
    either_chat: Chat, pairs: Pairs
) -> None:
    chat = either_chat
    online(chat, 1, 2, 3)  # online members get copies when caches hold them
    sent = conversation(chat)
    assert [m.id for m in sent] == sorted(m.id for m in sent)
    if chat.state.config.group_member_caches:
        # Bob holds the team's messages twice (his copy, the group's store): once each.
        assert "5_Group" in chat.state.cache.conversation_ids(2)
    seen_by = {
        1: [m for m in sent if "duo" not in m.message_text],
        2: sent,
        3: [m for m in sent if m.conversation.is_group],
    }
    groups = {1: [5], 2: [5, 6], 3: [5, 6]}
    for user_id, theirs in seen_by.items():
        conn, peer = pairs(user_id, groups=groups[user_id])
        got, done = replay(chat, conn, peer, position_ago(60))
        assert got == events(theirs), user_id
        assert done == {"type": "catchup", "recovered": True, "count": len(theirs)}
        # From each message of theirs: exactly the ones after it.
        for i, message in enumerate(theirs):
            got, done = replay(chat, conn, peer, message.id)
            assert got == events(theirs[i + 1 :]), (user_id, i)
            assert done["recovered"] is True and done["count"] == len(theirs) - i - 1


def test_nothing_is_replayed_from_the_latest_id(chat: Chat, pairs: Pairs) -> None:
    sent = conversation(chat)
    conn, peer = pairs(2, groups=[5, 6])
    for after in (sent[-1].id, position_ago(-60)):  # the latest, and a position after it
        assert replay(chat, conn, peer, after) == (
            [],
            {"type": "catchup", "recovered": True, "count": 0},
        )


def test_more_than_the_catchup_limit_is_not_recovered(
    app_factory: AppFactory, pairs: Pairs
) -> None:
    for chat in chat_of(app_factory(CHAT_PERSISTENCE=False, CHAT_CATCHUP_LIMIT=3)):
        sent = [chat.send_message(1, "2_User", str(i)) for i in range(4)]
        sent.append(chat.send_message(3, "5_Group", "one more, from the group"))
        conn, peer = pairs(2, groups=[5])
        not_recovered: Replayed = ([], {"type": "catchup", "recovered": False, "count": 0})
        assert replay(chat, conn, peer, sent[0].id) == not_recovered  # 4 missed, over 3
        got, done = replay(chat, conn, peer, sent[1].id)  # 3 missed: at the limit
        assert got == events(sent[2:]) and done["recovered"] is True


def test_a_position_older_than_the_retention_is_not_recovered(
    app_factory: AppFactory, pairs: Pairs
) -> None:
    for chat in chat_of(app_factory(CHAT_PERSISTENCE=False, CHAT_CATCHUP_RETENTION=3600)):
        sent = chat.send_message(1, "2_User", "hi")
        conn, peer = pairs(2, groups=[5])
        not_recovered: Replayed = ([], {"type": "catchup", "recovered": False, "count": 0})
        assert replay(chat, conn, peer, position_ago(2 * 3600)) == not_recovered
        assert replay(chat, conn, peer, "1000000000000-0000") == not_recovered
        assert replay(chat, conn, peer, position_ago(600)) == (
            events([sent]),
            {"type": "catchup", "recovered": True, "count": 1},
        )


def test_a_position_whose_successors_were_trimmed_is_not_recovered(
    app_factory: AppFactory, pairs: Pairs
) -> None:
    for chat in chat_of(app_factory(CHAT_PERSISTENCE=False, CHAT_HISTORY_LIMIT=3)):
        sent = [chat.send_message(1, "2_User", str(i)) for i in range(5)]
        conn, peer = pairs(2)
        assert replay(chat, conn, peer, sent[0].id)[1]["recovered"] is False
        got, done = replay(chat, conn, peer, sent[1].id)  # the 3 kept are all it missed
        assert got == events(sent[2:]) and done["recovered"] is True


def test_a_group_the_user_has_left_is_not_replayed(
    either_chat: Chat, pairs: Pairs, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = either_chat
    online(chat, 1, 2, 3)
    before = chat.send_message(3, "5_Group", "while bob is in")
    # The host app takes bob out of the team; the hub's membership event updates his
    # connection's groups (tested in test_unit_hub), which decide what is replayed.
    monkeypatch.setitem(GROUPS, 5, GroupInfo(5, "team", (1, 3)))
    conn, peer = pairs(2, groups=[6])
    secret = chat.send_message(3, "5_Group", "after bob left")
    still = chat.send_message(1, "2_User", "alice to bob")
    got, done = replay(chat, conn, peer, before.id)
    assert protocol.message_event(secret) not in got
    assert got == events([still]) and done["recovered"] is True


def test_live_frames_held_during_a_replay_follow_it_without_duplicates(
    chat: Chat, pairs: Pairs
) -> None:
    first = chat.send_message(1, "2_User", "before the position")
    missed = chat.send_message(1, "2_User", "missed")
    conn, peer = pairs(2)
    conn.hold()  # as the websocket does before joining the hub's channels
    # Live while the replay is read: one message the replay also carries, one event.
    conn.deliver(protocol.ws_frame(protocol.message_event(missed)))
    conn.deliver(protocol.ws_frame(protocol.typing(1, "2_User")))
    catchup.replay(chat.state, conn, first.id, held=True)
    assert peer.text() == protocol.message_event(missed)
    assert peer.event() == {"type": "catchup", "recovered": True, "count": 1}
    assert peer.text() == protocol.typing(1, "2_User")
    assert peer.pending() == b""
    # Released: live frames go straight out again.
    conn.deliver(protocol.ws_frame(protocol.presence(1, True)))
    assert peer.text() == protocol.presence(1, True)
