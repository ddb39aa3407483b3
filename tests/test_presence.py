"""Presence: the grace before offline, batched announcements, the online snapshot.

Real servers (the demo, and ``presence_app.py`` for a big group), real Redis, real
websocket clients. Where a test shows that something is *not* announced, it waits for a
later event of the same instance instead of for a while: a sentinel user who closes
after the user under test, whose grace therefore runs out later, and whose offline is
published by the same instance after the user under test was decided (one batch at a
time, in order). Nothing here asserts speed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from conftest import Start
from helpers import Client, DemoServer, connect, http_json, login_cookie, wait_for

from flask_chat.keys import Keys
from flask_chat.presence import Presence

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(HERE, "presence_app.py")
KEYS = Keys("chat")


# -- helpers ---------------------------------------------------------------------------------


def presence_frames(client: Client, since: int = 0) -> list[dict[str, Any]]:
    frames = [f for f in client.frames[since:] if f.get("type") == "presence"]
    for f in frames:
        # The one shape: batches of ids, in order, each user on one side at most.
        assert set(f) == {"type", "online", "offline"}, f
        for side in (f["online"], f["offline"]):
            assert all(isinstance(i, int) for i in side) and side == sorted(set(side)), f
        assert f["online"] or f["offline"], f
        assert not set(f["online"]) & set(f["offline"]), f
    return frames


def mentions(client: Client, user_id: int, since: int) -> list[dict[str, Any]]:
    return [
        f for f in presence_frames(client, since)
        if user_id in f["online"] or user_id in f["offline"]
    ]


def view(client: Client, me: int) -> set[int]:
    """Who ``client`` believes is online: its last snapshot, then the presence frames
    after it, in order (what chat.js does)."""
    online: set[int] = set()
    for f in client.frames:
        if f.get("type") == "online":
            online = set(f["users"])
        elif f.get("type") == "presence":
            online |= set(f["online"])
            online -= set(f["offline"])
    online.discard(me)
    return online


def wait_view(client: Client, me: int, expected: set[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while view(client, me) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"user {me} sees {sorted(view(client, me))}, not {expected}")
        client._recv_one(0.2)


def wait_presence_after(
    client: Client, since: int, user_id: int, online: bool, timeout: float = 10
) -> None:
    """Wait for a presence frame about ``user_id`` among the frames from ``since`` on."""
    side = "online" if online else "offline"
    deadline = time.monotonic() + timeout
    while not any(user_id in f[side] for f in presence_frames(client, since)):
        if time.monotonic() > deadline:
            raise AssertionError(f"no presence {side} for {user_id}: {client.frames[since:]}")
        client._recv_one(0.2)


def released(r: redis.Redis, user_id: int) -> Callable[[], bool]:
    """The server has dropped every connection of the user (their close was handled)."""
    return lambda: r.zcard(KEYS.connections(user_id)) == 0


def online_ids(server: DemoServer, name: str) -> list[int]:
    status, page = http_json(
        server.port, "GET", "/chats/online_users", cookie=login_cookie(server.port, name)
    )
    assert status == 200, page
    return [u["id"] for u in page["users"]]


def sentinel(server: DemoServer, clients: Any, observers: list[Client]) -> None:
    """Carol comes and goes for real on ``server``; returns once every observer saw her
    go: by then that instance decided about everyone who closed before her."""
    carol = connect(clients, server, "carol")
    carol.close()
    for observer in observers:
        observer.wait_presence(3, False, timeout=30)


def member(port: int, user_id: int) -> Client:
    """A member of presence_app.py's big group, connected (hello and snapshot in)."""
    client = Client(port, headers=[f"X-Test-User: {user_id}"])
    client.wait_type("hello")
    client.wait_type("online")
    return client


# -- the grace -------------------------------------------------------------------------------


def test_a_page_navigation_within_the_grace_is_neither_offline_nor_online(
    start: Start, clients: Any, r: redis.Redis
) -> None:
    server = start(CHAT_PRESENCE_GRACE=5)
    alice = connect(clients, server, "alice")
    bob = connect(clients, server, "bob")
    alice.wait_presence(2, True)
    mark = len(alice.frames)

    bob.close()  # the page goes away...
    wait_for(released(r, 2), what="bob's connection dropped")
    # ...and during the grace bob is still online for everyone, the list included.
    assert online_ids(server, "alice") == [2]
    bob = connect(clients, server, "bob")  # ...and the next page connects
    assert bob.of_type("online")[-1]["users"] == [1]

    sentinel(server, clients, [alice])
    assert mentions(alice, 2, mark) == []
    assert online_ids(server, "alice") == [2]
    # Bob's entry is his new connection's lease, not the grace that ran out.
    score = r.zscore(KEYS.online(), "2")
    assert score is not None and score > time.time(), score


def test_moving_to_another_instance_within_the_grace_does_not_flap(
    start: Start, clients: Any, r: redis.Redis
) -> None:
    a = start(CHAT_PRESENCE_GRACE=5)
    b = start(CHAT_PRESENCE_GRACE=5)
    on_b = connect(clients, b, "alice")
    on_a = connect(clients, a, "alice")  # a second tab, on the other instance
    bob = connect(clients, a, "bob")
    for observer in (on_a, on_b):
        observer.wait_presence(2, True)
    marks = len(on_a.frames), len(on_b.frames)

    bob.close()
    wait_for(released(r, 2), what="bob's connection on A dropped")
    bob = connect(clients, b, "bob")  # the next page is served by B

    sentinel(a, clients, [on_a, on_b])  # A decides about bob before carol
    assert mentions(on_a, 2, marks[0]) == []
    assert mentions(on_b, 2, marks[1]) == []
    assert online_ids(a, "alice") == [2]


def test_a_real_disconnect_is_offline_after_the_grace_exactly_once(
    start: Start, clients: Any, r: redis.Redis
) -> None:
    # Short TTLs: both instances' reapers run often, racing the instance that settles.
    grace = 2.0
    a = start(CHAT_PRESENCE_TTL=4, CHAT_PRESENCE_GRACE=grace)
    b = start(CHAT_PRESENCE_TTL=4, CHAT_PRESENCE_GRACE=grace)
    on_a = connect(clients, a, "alice")
    on_b = connect(clients, b, "alice")
    bob = connect(clients, b, "bob")
    for observer in (on_a, on_b):
        observer.wait_presence(2, True)
    marks = len(on_a.frames), len(on_b.frames)

    closed = time.time()
    bob.close()
    for observer in (on_a, on_b):
        observer.wait_presence(2, False, timeout=30)
    # Not before the grace was over (a lower bound, not a speed).
    assert time.time() - closed >= grace

    sentinel(b, clients, [on_a, on_b])
    for observer, mark in zip((on_a, on_b), marks, strict=True):
        frames = mentions(observer, 2, mark)
        assert [2 in f["offline"] for f in frames] == [True], frames
    assert online_ids(a, "alice") == []
    assert r.zscore(KEYS.online(), "2") is None


def test_no_grace_means_offline_at_once(start: Start, clients: Any, r: redis.Redis) -> None:
    server = start(CHAT_PRESENCE_GRACE=0)
    alice = connect(clients, server, "alice")
    bob = connect(clients, server, "bob")
    alice.wait_presence(2, True)
    mark = len(alice.frames)
    bob.close()
    alice.wait_presence(2, False)
    again = len(alice.frames)
    bob = connect(clients, server, "bob")
    wait_presence_after(alice, again, 2, True)
    assert [2 in f["online"] for f in mentions(alice, 2, mark)] == [False, True]


# -- batches and the snapshot ----------------------------------------------------------------


def test_a_crowd_connecting_at_once_is_announced_in_batches(
    start: Start, r: redis.Redis
) -> None:
    size = 60
    server = start(script=APP, GROUP_SIZE=str(size), CHAT_PRESENCE_GRACE=0.5)
    observer = member(server.port, 1)
    assert observer.of_type("online")[-1]["users"] == []
    others = range(2, size + 1)
    with ThreadPoolExecutor(max_workers=len(others)) as pool:
        crowd = dict(zip(others, pool.map(lambda uid: member(server.port, uid), others),
                         strict=True))
    try:
        everyone = set(range(1, size + 1))
        wait_view(observer, 1, everyone - {1})
        frames = presence_frames(observer)
        # Each came online once (the observer may hear of its own arrival), and many
        # shared a frame.
        came = [uid for f in frames for uid in f["online"]]
        assert sorted(uid for uid in came if uid != 1) == list(others), came
        assert came.count(1) <= 1, came
        assert all(not f["offline"] for f in frames), frames
        assert max(len(f["online"]) for f in frames) > 1, frames
        # Every member, whatever the moment of its snapshot, ends up with the same truth.
        for uid, client in crowd.items():
            wait_view(client, uid, everyone - {uid})
        mark = len(observer.frames)

        for client in crowd.values():
            client.close()
        wait_view(observer, 1, set())
        went = [uid for f in presence_frames(observer, mark) for uid in f["offline"]]
        assert sorted(went) == list(others), went
        assert all(not f["online"] for f in presence_frames(observer, mark))
        wait_for(lambda: r.zrange(KEYS.online(), 0, -1) == ["1"], what="only 1 online")
    finally:
        observer.close()
        for client in crowd.values():
            client.close()


# -- the online list, in process -------------------------------------------------------------


def test_the_grace_on_the_online_list(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    presence = Presence(client, KEYS, ttl=60, grace=30)
    try:
        assert presence.connect(2, "one")
        assert not presence.connect(2, "two")
        assert presence.release(2, "one") is None  # "two" is still there
        expires = presence.release(2, "two")
        assert expires is not None and expires > time.time() + 25
        assert presence.is_online(2)  # for the grace
        assert presence.settle([2]) == []  # not over yet
        assert not presence.connect(2, "three")  # back in time: no online transition
        assert presence.release(2, "three") is not None
        # Over (moved forward by hand): off the list, for one caller only.
        client.zadd(KEYS.online(), {"2": time.time() - 1}, xx=True)
        assert presence.settle([2, 2]) == [2]
        assert presence.settle([2]) == []
        assert not presence.is_online(2)
        assert presence.connect(2, "four")  # a real comeback
    finally:
        client.close()


def test_a_connect_racing_a_release_keeps_the_user_online(redis_url: str) -> None:
    """Instance A counted no live connection and lowers the entry just after instance B
    registered a new one: settling finds B's connection and restores its lease."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    presence = Presence(client, KEYS, ttl=60, grace=3)
    try:
        presence.connect(2, "on-b")
        lease = client.zscore(KEYS.online(), "2")
        client.zadd(KEYS.online(), {"2": time.time() - 1}, xx=True)  # A's late lowering
        assert presence.settle([2]) == []
        assert client.zscore(KEYS.online(), "2") == lease
        assert presence.is_online(2)
        # The reaper does the same.
        client.zadd(KEYS.online(), {"2": time.time() - 1}, xx=True)
        assert presence.reap() == []
        assert client.zscore(KEYS.online(), "2") == lease
    finally:
        client.close()


def test_the_grace_fits_in_the_ttl(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert Presence(client, KEYS, ttl=30, grace=3).grace == 3
        # At most the lease, so that a close seen by an instance that then dies is
        # still announced within the TTL by the others' reapers.
        assert Presence(client, KEYS, ttl=2, grace=3).grace == 1.5
        assert Presence(client, KEYS, ttl=30).grace == 0
    finally:
        client.close()
