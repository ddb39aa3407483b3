"""Delivery guarantees under injected latency: two real app instances on one real Redis,
one of them behind a proxy that delays everything Redis says to it, and real websocket
clients that disconnect and reconnect with the highest message id they have seen.

A slow instance allocates an id, then (a round trip later) stores and publishes it;
meanwhile the fast instance allocates a higher id and publishes it first. A client that
saw the higher id and reconnects with it as its position must still get the lower one.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import websocket
from faults import DelayProxy
from flask import Flask
from helpers import (
    ROOT,
    Client,
    DemoServer,
    csrf_session,
    free_port,
    http_json,
    knows_online,
    login_cookie,
    wait_for,
)
from sqlalchemy import create_engine, select

from flask_chat.embedded import RedisServer
from flask_chat.models import messages


class Pair:
    """A fast instance straight on Redis and a slow one behind a :class:`DelayProxy`."""

    def __init__(self, **settings: Any) -> None:
        self.redis_server = RedisServer(port=free_port())
        self.redis_url = self.redis_server.start()
        self.redis = redis.Redis.from_url(self.redis_url, decode_responses=True)
        self.proxy = DelayProxy("127.0.0.1", int(self.redis_server.port or 0))
        self.fast = DemoServer(self.redis_url, **settings).start()
        self.slow = DemoServer(self.proxy.url, **settings).start()
        self.clients: list[Client] = []

    def connect(self, server: DemoServer, name: str, query: str = "") -> Client:
        client = Client(server.port, login_cookie(server.port, name), query)
        self.clients.append(client)
        client.wait_type("hello")
        client.wait_type("online")
        return client

    def last_id(self) -> tuple[str | None, str | None]:
        """The id allocator's state, read straight from Redis."""
        ms, seq = self.redis.hmget("chat:ids", ["ms", "seq"])
        return (None if ms is None else str(ms)), (None if seq is None else str(seq))

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for server in (self.fast, self.slow):
            server.stop()
        self.proxy.close()
        self.redis.close()
        self.redis_server.stop()


@pytest.fixture
def pair() -> Iterator[Callable[..., Pair]]:
    made: list[Pair] = []

    def make(**settings: Any) -> Pair:
        one = Pair(**settings)
        made.append(one)
        return one

    yield make
    for one in made:
        one.close()


def message_ids(client: Client) -> list[str]:
    return [f["id"] for f in client.of_type("message")]


@pytest.mark.parametrize("to", ["2_User", "5_Group"])
def test_a_lower_id_published_after_the_position_is_replayed(
    pair: Callable[..., Pair], to: str
) -> None:
    """alice's send through the slow instance gets its id first and is published last;
    bob, who saw carol's later message and reconnects with it, still gets alice's."""
    p = pair(CHAT_SEND_IN_ONE_STEP=False)  # the steps of a cluster
    bob = p.connect(p.fast, "bob")
    carol = p.connect(p.fast, "carol")
    cookie, csrf = csrf_session(p.slow.port, "alice")
    before = p.last_id()
    p.proxy.down = 1.0  # every reply from Redis to the slow instance comes a second late

    result: dict[str, Any] = {}

    def alice_sends() -> None:
        result["answer"] = http_json(
            p.slow.port, "POST", "/chats/send_message",
            {"to": to, "message_text": "slow and low"}, cookie, csrf,
        )

    sender = threading.Thread(target=alice_sends)
    sender.start()
    # Alice's id is allocated (the allocator moved) but her instance has not heard yet.
    wait_for(lambda: p.last_id() != before, what="alice's id to be allocated")
    carol.send({"type": "send", "to": to, "message_text": "fast and high", "ref": "c"})
    high = carol.wait_type("ack", ref="c")["message"]["id"]
    bob.wait_type("message", id=high)
    bob.close()
    p.proxy.down = 0.0  # the reply already held still comes late; the rest need not
    sender.join(timeout=30)
    status, low = result["answer"]
    assert status == 201, low
    assert low["id"] < high, "the scenario: alice's id is the lower one"
    assert low["id"] not in message_ids(bob), "the scenario: bob left before it came"

    again = p.connect(p.fast, "bob", f"?after={high}")
    done = again.wait_type("catchup")
    assert done["recovered"] is True
    assert low["id"] in message_ids(again), "catch-up missed a message below the position"
    # Anything else it replays is a duplicate of what bob had (a client drops those).
    assert set(message_ids(again)) <= {low["id"], high}



def test_a_late_message_trimmed_before_the_catch_up_makes_it_not_recovered(
    pair: Callable[..., Pair],
) -> None:
    """As above, but before bob is back alice's late message has been trimmed off his
    window (CHAT_HISTORY_LIMIT=1): catch-up cannot replay it and must say so."""
    p = pair(CHAT_HISTORY_LIMIT=1, CHAT_SEND_IN_ONE_STEP=False)  # the steps of a cluster
    bob = p.connect(p.fast, "bob")
    carol = p.connect(p.fast, "carol")
    alice_fast = p.connect(p.fast, "alice")
    cookie, csrf = csrf_session(p.slow.port, "alice")
    before = p.last_id()
    p.proxy.down = 1.0
    result: dict[str, Any] = {}

    def alice_sends() -> None:
        result["answer"] = http_json(
            p.slow.port, "POST", "/chats/send_message",
            {"to": "2_User", "message_text": "late"}, cookie, csrf,
        )

    sender = threading.Thread(target=alice_sends)
    sender.start()
    wait_for(lambda: p.last_id() != before, what="alice's id to be allocated")
    carol.send({"type": "send", "to": "2_User", "message_text": "position", "ref": "c"})
    position = carol.wait_type("ack", ref="c")["message"]["id"]
    bob.wait_type("message", id=position)
    bob.close()
    p.proxy.down = 0.0
    sender.join(timeout=30)
    status, late = result["answer"]
    assert status == 201 and late["id"] < position, late
    alice_fast.send({"type": "send", "to": "2_User", "message_text": "newer", "ref": "a"})
    newer = alice_fast.wait_type("ack", ref="a")["message"]["id"]
    assert cached(p.fast.port, "bob", "1_User", "late") == []  # trimmed off the window
    assert cached(p.fast.port, "bob", "1_User", "newer") == [newer]

    again = p.connect(p.fast, "bob", f"?after={position}")
    assert again.wait_type("catchup")["recovered"] is False


def test_concurrent_senders_on_a_slow_and_a_fast_instance_lose_nothing_across_reconnects(
    pair: Callable[..., Pair],
) -> None:
    """Alice sends through the slow instance (three tabs), carol through the fast one, to
    bob and to the group; bob, on the fast instance, keeps reconnecting with the highest
    id he has seen. At the end he has every message; live frames may come out of id
    order (counted and printed: a client orders by id), catch-ups always recover."""
    p = pair()
    bob_cookie = login_cookie(p.fast.port, "bob")
    bob = Client(p.fast.port, bob_cookie)
    p.clients.append(bob)
    bob.wait_type("online")
    alices = [p.connect(p.slow, "alice") for _ in range(3)]
    carol = p.connect(p.fast, "carol")
    p.proxy.down = 0.15
    sent: list[str] = []
    lock = threading.Lock()
    failures: list[BaseException] = []

    def run(client: Client, count: int, pace: float) -> None:
        try:
            for i in range(count):
                to = "2_User" if i % 2 else "5_Group"
                client.send({"type": "send", "to": to, "message_text": f"m{i}", "ref": i})
                mid = client.wait_type("ack", ref=i, timeout=30)["message"]["id"]
                with lock:
                    sent.append(mid)
                # Load shaping, not waiting: carol's fast sends spread over alice's slow ones.
                time.sleep(pace)
        except BaseException as exc:
            failures.append(exc)

    senders = [threading.Thread(target=run, args=(a, 12, 0.0)) for a in alices]
    senders.append(threading.Thread(target=run, args=(carol, 120, 0.02)))
    for t in senders:
        t.start()

    seen: set[str] = set()
    out_of_order = 0
    reconnects = 0

    def take(frames: list[dict[str, Any]], live: bool) -> None:
        nonlocal out_of_order
        for f in frames:
            if f.get("type") == "message":
                if live and seen and f["id"] < max(seen) and f["id"] not in seen:
                    out_of_order += 1
                seen.add(f["id"])

    def sending() -> bool:
        return any(t.is_alive() for t in senders)

    while sending() or reconnects < 3:
        # Some live traffic on this connection (or the end of it), then away again.
        deadline = time.monotonic() + 30
        while len(bob.of_type("message")) < 8 and sending() and time.monotonic() < deadline:
            bob._recv_one(0.2)
        take(bob.frames, live=True)
        bob.close()
        position = max(seen)
        # Away while a few sends complete (alice's are in flight most of the time).
        away = len(sent)

        def progressed(away: int = away) -> bool:
            return len(sent) >= away + 3 or not sending()

        wait_for(progressed, timeout=30, what="sends while bob is away")
        bob = Client(p.fast.port, bob_cookie, f"?after={position}")
        p.clients.append(bob)
        done = bob.wait_type("catchup")
        assert done["recovered"] is True, done
        take(bob.frames, live=False)
        bob.frames = [f for f in bob.frames if f.get("type") != "message"]
        reconnects += 1
    for t in senders:
        t.join(timeout=60)
    assert not failures, failures
    # Whatever is still on its way arrives live on the last connection.
    deadline = time.monotonic() + 30
    while not set(sent) <= seen | set(message_ids(bob)) and time.monotonic() < deadline:
        bob._recv_one(0.2)
    take(bob.frames, live=True)
    print(f"{len(sent)} messages, {reconnects} reconnects, {out_of_order} live frames below "
          "the highest id seen")
    assert set(sent) <= seen


# -- idempotent sends ---------------------------------------------------------------------


@pytest.fixture
def demo(redis_url: str, database_url: str) -> Iterator[DemoServer]:
    server = DemoServer(redis_url, CHAT_DATABASE_URL=database_url).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def front(demo: DemoServer) -> Iterator[DelayProxy]:
    """A proxy in front of the instance, to cut an answer after the request was served."""
    proxy = DelayProxy("127.0.0.1", demo.port)
    yield proxy
    proxy.close()


def drain_write_behind(server: DemoServer) -> None:
    """Run a real RQ worker until the queue is empty: the write-behind reaches SQL."""
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "examples/chat_app.py", "chat", "worker",
         "--burst"],
        env=server.env, capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def sql_rows(url: str, text: str) -> list[str]:
    """Ids of the SQL messages with this text."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(select(messages.c.id).where(messages.c.message_text == text)))
    finally:
        engine.dispose()


def cached(port: int, name: str, conversation: str, text: str) -> list[str]:
    """Ids of the messages with this text in the user's cache."""
    _, history = http_json(port, "GET", "/chats/history", cookie=login_cookie(port, name))
    return [m["id"] for m in history.get(conversation, {}).get("messages", [])
            if m["message_text"] == text]


def test_an_http_send_retried_after_a_cut_answer_is_stored_once(
    demo: DemoServer, front: DelayProxy, database_url: str
) -> None:
    bob = Client(demo.port, login_cookie(demo.port, "bob"))
    try:
        bob.wait_type("online")
        cookie, csrf = csrf_session(demo.port, "alice")
        headers = {**csrf, "Idempotency-Key": "3f1c2a9e-5b7d-4c1e-9a2b-7d6e5f4c3b2a"}
        body = {"to": "2_User", "message_text": "exactly once"}
        front.cut_next_answer()
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            http_json(front.port, "POST", "/chats/send_message", body, cookie, headers)
        # The client is in doubt; it retries with the same key, and again.
        status, first = http_json(demo.port, "POST", "/chats/send_message", body, cookie, headers)
        assert status == 201, first
        status, again = http_json(front.port, "POST", "/chats/send_message", body, cookie, headers)
        assert (status, again) == (201, first)
        bob.wait_type("message", id=first["id"])

        # The same key for another message: refused, nothing stored or published.
        status, err = http_json(
            demo.port, "POST", "/chats/send_message",
            {"to": "2_User", "message_text": "something else"}, cookie, headers,
        )
        assert status == 422 and err["error"] == "idempotency_key_reused", err
        for bad in ("", "x" * 129, "no spaces", "ünïcode", "a/b"):
            status, err = http_json(
                demo.port, "POST", "/chats/send_message",
                {"to": "2_User", "message_text": "bad key"}, cookie,
                {**csrf, "Idempotency-Key": bad},
            )
            assert status == 400 and err["error"] == "invalid_idempotency_key", (bad, err)

        bob.drain()
        assert [f["id"] for f in bob.of_type("message")] == [first["id"]]
        assert cached(demo.port, "alice", "2_User", "exactly once") == [first["id"]]
        assert cached(demo.port, "bob", "1_User", "exactly once") == [first["id"]]
        assert cached(demo.port, "bob", "1_User", "something else") == []
        drain_write_behind(demo)
        assert sql_rows(database_url, "exactly once") == [first["id"]]
        assert sql_rows(database_url, "something else") == []
    finally:
        bob.close()


def test_a_websocket_send_retried_after_a_cut_socket_is_sent_once(
    demo: DemoServer, front: DelayProxy
) -> None:
    bob = Client(demo.port, login_cookie(demo.port, "bob"))
    cookie = login_cookie(demo.port, "alice")
    alice = Client(front.port, cookie)
    try:
        bob.wait_type("online")
        alice.wait_type("online")
        alice.drain()
        frame = {"type": "send", "to": "2_User", "message_text": "once over ws",
                 "key": "k-2f9d", "ref": 1}
        front.cut_next_answer()
        alice.send(frame)
        with pytest.raises((ConnectionError, OSError, websocket.WebSocketException)):
            alice.wait_type("ack", ref=1)
        first = bob.wait_type("message")  # it was stored and published; alice never knew
        again = Client(demo.port, cookie)
        try:
            again.wait_type("online")
            again.send(frame)
            ack = again.wait_type("ack", ref=1)
            assert ack["message"]["id"] == first["id"]
            again.send({**frame, "message_text": "another text", "ref": 2})
            assert again.wait_type("error", ref=2)["error"] == "idempotency_key_reused"
            again.send({**frame, "key": 12, "ref": 3})
            assert again.wait_type("error", ref=3)["error"] == "invalid_idempotency_key"
        finally:
            again.close()
        bob.drain()
        assert [f["id"] for f in bob.of_type("message")] == [first["id"]]
        assert cached(demo.port, "bob", "1_User", "once over ws") == [first["id"]]
    finally:
        alice.close()
        bob.close()


def test_a_retry_finishes_a_send_whose_instance_died_after_the_claim(
    pair: Callable[..., Pair],
) -> None:
    """The slow instance claims the key and dies before its stores reach Redis; the
    retry, on the other instance, delivers the very message the claim names."""
    p = pair(CHAT_SEND_IN_ONE_STEP=False)  # the steps of a cluster
    bob = p.connect(p.fast, "bob")
    body = {"to": "2_User", "message_text": "finish me"}
    key = "retry-after-a-crash"
    slow_cookie, slow_csrf = csrf_session(p.slow.port, "alice")
    p.proxy.up = 1.0  # everything the slow instance says to Redis arrives a second late

    def doomed() -> None:
        try:
            http_json(p.slow.port, "POST", "/chats/send_message", body, slow_cookie,
                      {**slow_csrf, "Idempotency-Key": key})
        except (OSError, http.client.HTTPException):
            pass  # the instance dies under it

    sender = threading.Thread(target=doomed)
    sender.start()
    claim = f"chat:{{u:1}}:idem:{key}"
    record = wait_for(lambda: p.redis.get(claim), what="the claim")
    p.slow.kill()  # its stores are still held in the proxy...
    p.proxy.drop_held()  # ...and never arrive
    sender.join(timeout=30)
    claimed = json.loads(str(record))["m"]["id"]
    assert cached(p.fast.port, "bob", "1_User", "finish me") == []

    cookie, csrf = csrf_session(p.fast.port, "alice")
    status, sent = http_json(p.fast.port, "POST", "/chats/send_message", body, cookie,
                             {**csrf, "Idempotency-Key": key})
    assert status == 201, sent
    assert sent["id"] == claimed
    assert bob.wait_type("message")["id"] == claimed
    assert cached(p.fast.port, "bob", "1_User", "finish me") == [claimed]
    assert cached(p.fast.port, "alice", "2_User", "finish me") == [claimed]
    bob.drain()
    assert message_ids(bob) == [claimed]


def test_python_send_with_an_idempotency_key(app: Flask) -> None:
    from flask_chat.errors import ChatError
    from flask_chat.signals import message_sent

    chat = app.extensions["chat"]
    signalled: list[str] = []

    def on_sent(sender: Any, message: Any, **_: Any) -> None:
        signalled.append(message.id)

    with app.app_context(), message_sent.connected_to(on_sent, app):
        first = chat.send_message(1, "5_Group", "hello", idempotency_key="job-42")
        again = chat.send_message(1, "5_Group", "hello", idempotency_key="job-42")
        assert (again.id, again.replayed, first.replayed) == (first.id, True, False)
        assert again.for_sender() == first.for_sender()
        with pytest.raises(ChatError) as refused:
            chat.send_message(1, "2_User", "hello", idempotency_key="job-42")
        assert (refused.value.code, refused.value.status) == ("idempotency_key_reused", 422)
        other = chat.send_message(1, "5_Group", "hello", idempotency_key="job-43")
        assert other.id != first.id
        ids = [m["id"] for m in chat.history(1)["5_Group"]["messages"]]
        assert ids == [first.id, other.id]
    assert signalled == [first.id, other.id]


def test_server_api_takes_the_idempotency_key_header(app_factory: Callable[..., Flask]) -> None:
    app = app_factory(CHAT_API_TOKEN="s3cret")
    client = app.test_client()
    headers = {"Authorization": "Bearer s3cret", "Idempotency-Key": "rails-1"}
    body = {"sender_id": 2, "to": "1_User", "message_text": "from rails"}
    first = client.post("/chats/api/messages", json=body, headers=headers)
    again = client.post("/chats/api/messages", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.get_json() == again.get_json()
    with app.app_context():
        assert len(app.extensions["chat"].history(1)["2_User"]["messages"]) == 1


# -- presence: offline within the TTL -------------------------------------------------------


def test_a_killed_instance_users_are_announced_offline_within_the_ttl(
    redis_url: str, r: redis.Redis
) -> None:
    """The promise is "offline within CHAT_PRESENCE_TTL". What an instance writes to
    Redis must leave the other instances' reaper time to notice within it; then kill -9
    the instance and watch the offline event arrive elsewhere (the lag is printed, not
    asserted: see benchmarks/presence_offline.py for the figures)."""
    ttl = 4.0
    doomed = DemoServer(redis_url, CHAT_PRESENCE_TTL=ttl).start()
    survivor = DemoServer(redis_url, CHAT_PRESENCE_TTL=ttl).start()
    bob = Client(survivor.port, login_cookie(survivor.port, "bob"))
    alice = Client(doomed.port, login_cookie(doomed.port, "alice"))
    try:
        alice.wait_type("online")  # sent after the connection was registered
        seconds, micros = r.time()
        lease = r.zscore("chat:{u:1}:conns", alice.wait_type("hello")["connection_id"])
        assert lease is not None
        left = lease - (seconds + micros / 1e6)
        print(f"lease written at connect: {left:.3f} s of a {ttl} s TTL")
        # The lease must run out early enough for a reaper pass (TTL/8) to come after it.
        assert left <= ttl * 7 / 8, left
        bob.wait(knows_online(1), what="alice online")
        doomed.kill()
        killed = time.monotonic()
        bob.wait_presence(1, False, timeout=30)
        print(f"offline seen {time.monotonic() - killed:.2f} s after kill -9 (TTL {ttl} s)")
    finally:
        alice.close()
        bob.close()
        doomed.stop()
        survivor.stop()
