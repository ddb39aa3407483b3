"""Unit tests of the per-process hub (flask_chat.hub.Hub): a real redis-server, real
connected socket pairs in flask_chat.connection.Connection, the hub's own subscriber.

The test process is not monkey-patched; the subscriber's socket is made cooperative the
way ``monkey.patch_all`` makes it in production, so its read loop runs whenever a test
waits (``until``, ``settle``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence

import gevent
import gevent.socket
import pytest
import redis
from flask import Flask
from units import Pairs, Peer, until

from flask_chat import Chat, protocol
from flask_chat.connection import Connection
from flask_chat.hub import Hub

Make = Callable[..., tuple[Connection, Peer]]


@pytest.fixture
def app(app_factory: Callable[..., Flask]) -> Flask:
    return app_factory(CHAT_PERSISTENCE=False)


@pytest.fixture
def chat(app: Flask) -> Iterator[Chat]:
    with app.app_context():
        yield app.extensions["chat"]


@pytest.fixture
def hub(chat: Chat, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    hub = Hub(chat.state)
    # Cooperative sockets for the subscriber only, as monkey.patch_all gives it in
    # production (patching the whole test process would change every other test).
    monkeypatch.setattr(sys.modules[type(hub.subscriber).__module__], "socket", gevent.socket)
    hub.start()
    assert hub.subscriber.wait_connected(10)
    yield hub
    hub.drain(timeout=0)
    gevent.sleep(0.01)  # let the killed greenlets end and close their sockets


@pytest.fixture
def make(hub: Hub) -> Iterator[Make]:
    """A connection of ``user_id`` on a socket pair, registered on ``channels`` and
    subscribed there (``add=False``: only made); the hub forgets it when it ends."""
    pairs = Pairs()

    def make(
        user_id: int, channels: Sequence[bytes] = (), groups: list[int] | None = None,
        add: bool = True,
    ) -> tuple[Connection, Peer]:
        conn, peer = pairs(user_id, on_close=hub.remove, groups=groups)
        if add:
            subscribed = hub.add(conn, channels)
            assert subscribed is None or subscribed.wait(10)
        return conn, peer

    yield make
    pairs.close()


def subscribers(r: redis.Redis, channel: bytes) -> int:
    """How many Redis connections are subscribed to ``channel``."""
    count: int = r.pubsub_numsub(channel.decode())[0][1]
    return count


def settle(hub: Hub) -> None:
    """Wait until the hub has dispatched every event published before this call: Redis
    answers the subscriber's PING after the messages queued ahead of it, and writes to a
    socket pair are done when ``write`` returns."""
    # One Redis server here, so the plain subscriber (a cluster's has no single PING).
    assert hub.subscriber.confirm().wait(10)  # type: ignore[union-attr]


# -- subscriptions follow local membership --------------------------------------------


def test_the_first_member_subscribes_and_the_last_one_out_unsubscribes(
    hub: Hub, make: Make, r: redis.Redis
) -> None:
    channel = hub.user_channel(1)
    assert subscribers(r, channel) == 0
    first, _ = make(1, add=False)
    subscribed = hub.add(first, [channel])
    assert subscribed is not None and subscribed.wait(10)
    assert subscribers(r, channel) == 1
    assert hub.channels[channel] == {first} and first.channels == {channel}
    second, second_peer = make(1, add=False)
    assert hub.add(second, [channel]) is None  # nothing new to subscribe
    assert hub.by_user[1] == {first, second}

    hub.remove(first)
    assert hub.channels[channel] == {second} and first.channels == set()
    r.publish(channel.decode(), b'{"type":"still"}')  # the subscription is still there
    assert second_peer.text() == b'{"type":"still"}'
    assert subscribers(r, channel) == 1

    hub.remove(second)
    assert channel not in hub.channels and 1 not in hub.by_user
    until(lambda: subscribers(r, channel) == 0, what="the unsubscribe")


def test_join_and_leave_change_only_the_channels_named(
    hub: Hub, make: Make, r: redis.Redis
) -> None:
    user, group = hub.user_channel(1), hub.group_channel(5)
    conn, _ = make(1, [user])
    joined = hub.join(conn, [group, group])  # named twice: one subscription
    assert joined is not None and joined.wait(10)
    assert conn.channels == {user, group} and subscribers(r, group) == 1
    hub.leave(conn, [hub.group_channel(6)])  # never joined: nothing happens
    hub.leave(conn, [group])
    assert conn.channels == {user} and group not in hub.channels
    until(lambda: subscribers(r, group) == 0, what="the group's unsubscribe")
    settle(hub)
    assert subscribers(r, user) == 1


# -- delivery ---------------------------------------------------------------------------


def test_an_event_is_written_once_to_every_local_member_with_the_same_bytes(
    hub: Hub, make: Make, chat: Chat, r: redis.Redis
) -> None:
    team = hub.group_channel(5)
    tab1, peer1 = make(1, [hub.user_channel(1), team], groups=[5])
    tab2, peer2 = make(1, [hub.user_channel(1), team], groups=[5])
    bob, bob_peer = make(2, [hub.user_channel(2), team], groups=[5])
    duo, duo_peer = make(3, [hub.user_channel(3), hub.group_channel(6)], groups=[6])

    one = chat.send_message(2, "1_User", "to alice")  # on alice's and bob's channels
    group = chat.send_message(3, "5_Group", "to the team")
    settle(hub)
    one_frame = protocol.ws_frame(protocol.message_event(one))
    group_frame = protocol.ws_frame(protocol.message_event(group))
    for peer in (peer1, peer2, bob_peer):
        assert peer.pending() == one_frame + group_frame
    assert duo_peer.pending() == b""  # carol is on neither channel with this connection
    assert hub.last_id == group.id.encode()

    r.publish(hub.group_channel(6).decode(), protocol.typing(2, "6_Group"))
    settle(hub)
    assert duo_peer.pending() == protocol.ws_frame(protocol.typing(2, "6_Group"))
    assert peer1.pending() == peer2.pending() == bob_peer.pending() == one_frame + group_frame


def test_a_removed_connection_gets_nothing_more(hub: Hub, make: Make, r: redis.Redis) -> None:
    ended: list[Connection] = []
    hub.close_callbacks.append(ended.append)
    channel = hub.user_channel(1)
    gone, gone_peer = make(1, [channel])
    kept, kept_peer = make(1, [channel])
    hub.remove(gone)
    hub.remove(gone)  # once is enough: the callbacks ran once
    assert ended == [gone]
    assert gone.id not in hub.connections and gone.channels == set()
    r.publish(channel.decode(), protocol.presence([2], []))
    settle(hub)
    assert kept_peer.text() == protocol.presence([2], [])
    assert gone_peer.pending() == b""
    assert not gone.closed  # removing is not closing: the socket is the caller's


def test_a_connection_that_ends_leaves_the_hub(hub: Hub, make: Make, r: redis.Redis) -> None:
    channel = hub.user_channel(1)
    conn, peer = make(1, [channel])
    peer.close()  # the client goes away: the connection reads the end, aborts, is removed
    until(lambda: conn.id not in hub.connections, what="the hub to forget the connection")
    assert 1 not in hub.by_user and channel not in hub.channels
    until(lambda: subscribers(r, channel) == 0, what="the unsubscribe")


def test_events_on_a_handled_channel_go_to_the_handler_not_to_sockets(
    hub: Hub, make: Make, r: redis.Redis
) -> None:
    """The add-on hook (the Juggernaut bridge's channel)."""
    got: list[bytes] = []
    channel = b"addon:channel"
    hub.handle_channel(channel, got.append)
    conn, peer = make(1, [channel])
    until(lambda: subscribers(r, channel) == 1, what="the handler's subscription")
    r.publish(channel.decode(), b"legacy")
    settle(hub)
    assert got == [b"legacy"] and peer.pending() == b""


# -- events that change connections ----------------------------------------------------


def test_membership_events_move_a_connection_between_group_channels(
    hub: Hub, make: Make, chat: Chat, r: redis.Redis
) -> None:
    own = hub.user_channel(1)
    duo = hub.group_channel(6)
    alice, peer = make(1, [own, hub.group_channel(5)], groups=[5])
    addon, addon_peer = make(0, [own])  # an add-on's connection on alice's channel

    chat.group_membership_changed(6, added=[1])
    assert peer.event() == {"type": "membership", "group_id": 6, "member": True}
    assert duo in alice.channels and alice.data["groups"] == [5, 6]
    assert duo not in addon.channels and addon.data["groups"] == []
    until(lambda: subscribers(r, duo) == 1, what="the new group's subscription")
    chat.group_membership_changed(6, added=[1])  # told twice: still one membership
    assert peer.event()["member"] is True
    assert alice.data["groups"] == [5, 6]

    sent = chat.send_message(2, "6_Group", "welcome")
    assert peer.text() == protocol.message_event(sent)

    chat.group_membership_changed(6, removed=[1])
    assert peer.event() == {"type": "membership", "group_id": 6, "member": False}
    assert duo not in alice.channels and alice.data["groups"] == [5]
    until(lambda: subscribers(r, duo) == 0, what="the group's unsubscribe")
    chat.send_message(2, "6_Group", "after alice left")
    settle(hub)
    assert peer.pending() == b""
    # The add-on's connection saw the membership frames and nothing else changed for it.
    assert addon.channels == {own}
    assert addon_peer.pending() == b"".join(
        protocol.ws_frame(protocol.membership(6, member))
        for member in (True, True, False)
    )


def test_logout_closes_the_users_connections_with_4401(
    hub: Hub, make: Make, chat: Chat, r: redis.Redis
) -> None:
    own = hub.user_channel(1)
    tabs = [make(1, [own, hub.group_channel(5)], groups=[5]) for _ in range(2)]
    addon, addon_peer = make(0, [own])
    bob, bob_peer = make(2, [hub.user_channel(2), hub.group_channel(5)], groups=[5])

    chat.logout(1)
    for _, peer in tabs:
        assert peer.text() == protocol.LOGOUT
        assert peer.close_code() == protocol.CLOSE_LOGGED_OUT
        peer.wait_eof()
    # The add-on's connection was the user's too: closed, without the logout frame.
    opcode, payload = addon_peer.frame()
    assert opcode == protocol.OP_CLOSE and payload[:2] == b"\x11\x31"
    settle(hub)
    assert bob_peer.pending() == b"" and not bob.closed

    for _, peer in tabs + [(addon, addon_peer)]:
        peer.close()
    until(lambda: 1 not in hub.by_user and own not in hub.channels, what="the hub to let go")
    until(lambda: subscribers(r, own) == 0, what="the unsubscribe")
    assert set(hub.connections) == {bob.id}
    assert hub.channels[hub.group_channel(5)] == {bob}


def test_every_connection_catches_up_after_the_subscriber_reconnects(
    hub: Hub, make: Make, chat: Chat, r: redis.Redis
) -> None:
    alice, peer = make(1, [hub.user_channel(1)])
    seen = chat.send_message(2, "1_User", "live")
    assert peer.event()["id"] == seen.id
    r.client_kill_filter(_type="pubsub")
    missed = chat.send_message(2, "1_User", "while the subscriber may be away")
    # Unasked: a replay from the last id the hub saw, then the catchup frame.
    frames = []
    while True:
        frames.append(peer.event())
        if frames[-1]["type"] == "catchup":
            break
    assert frames[-1]["recovered"] is True
    assert missed.id in [f.get("id") for f in frames]
    until(lambda: subscribers(r, hub.user_channel(1)) == 1, what="the resubscribe")


def test_a_channel_left_and_joined_again_at_once_survives_a_reconnect(
    hub: Hub, make: Make, r: redis.Redis
) -> None:
    channel = hub.user_channel(1)
    conn, peer = make(1, [channel])
    other = hub.user_channel(2)
    make(2, [other])
    # A user's last tab closes and a new one joins before Redis answered the unsubscribe.
    hub.leave(conn, [channel])
    joined = hub.join(conn, [channel])
    assert joined is not None and joined.wait(10)
    settle(hub)
    assert subscribers(r, channel) == 1
    r.client_kill_filter(_type="pubsub")
    # Every channel is subscribed again in one command: once the other one is back, so is
    # this one, if the subscriber still holds it.
    until(lambda: subscribers(r, other) == 1, what="the resubscribe")
    settle(hub)
    assert subscribers(r, channel) == 1
