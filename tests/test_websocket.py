"""The websocket endpoint end to end: real gevent servers, real Redis, real clients."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import websocket
from helpers import (
    DemoServer,
    bootstrap,
    close_code,
    connect,
    csrf_session,
    free_port,
    http_json,
    knows_online,
    login_cookie,
    logout_over_http,
)

from flask_chat.embedded import RedisServer

Start = Callable[..., DemoServer]


def test_one_to_one_reaches_every_tab_with_the_same_bytes(start: Start, clients: Any) -> None:
    server = start()
    alice1 = connect(clients, server, "alice")
    alice2 = connect(clients, server, "alice")
    bob = connect(clients, server, "bob")
    alice1.send({"type": "send", "to": "2_User", "message_text": "hi bob", "ref": 7})
    ack = alice1.wait_type("ack", ref=7)
    assert ack["message"]["conversation"] == "2_User" and ack["message"]["type"] == "sent"
    mid = ack["message"]["id"]
    got = [c.wait_type("message", id=mid) for c in (alice1, alice2, bob)]
    raws = {c.raw[c.frames.index(f)] for c, f in zip((alice1, alice2, bob), got, strict=True)}
    assert len(raws) == 1, "every recipient gets the same bytes"
    assert got[0] == {
        "type": "message",
        "id": mid,
        "sender_id": 1,
        "to": "2_User",
        "message_text": "hi bob",
        "image": "/static/avatars/alice.svg",
        "sent_at": ack["message"]["sent_at"],
    }
    carol = connect(clients, server, "carol")
    carol.drain()
    assert not carol.of_type("message")


def test_group_messages_and_http_sends_are_pushed(start: Start, clients: Any) -> None:
    server = start()
    alice, bob, carol = (connect(clients, server, n) for n in ("alice", "bob", "carol"))
    cookie, csrf = csrf_session(server.port, "bob")
    status, sent = http_json(
        server.port,
        "POST",
        "/chats/send_message",
        {"to": "5_Group", "message_text": "via http"},
        cookie,
        csrf,
    )
    assert status == 201
    for client in (alice, bob, carol):
        frame = client.wait_type("message", id=sent["id"])
        assert frame["to"] == "5_Group" and frame["sender_id"] == 2
    # Every online member's cache got it (the seed's rule).
    for name in ("alice", "carol"):
        _, history = http_json(
            server.port, "GET", "/chats/history", cookie=login_cookie(server.port, name)
        )
        assert history["5_Group"]["messages"][-1]["id"] == sent["id"]


def test_presence_online_offline_and_the_online_list(start: Start, clients: Any) -> None:
    server = start()
    alice = connect(clients, server, "alice")
    bob = connect(clients, server, "bob")
    alice.wait_presence(2, True)
    cookie = login_cookie(server.port, "alice")
    status, page = http_json(server.port, "GET", "/chats/online_users", cookie=cookie)
    assert status == 200
    assert page["users"] == [{"id": 2, "name": "bob", "image": "/static/avatars/bob.svg"}]
    assert page["total"] == 1
    bob.close()
    alice.wait_presence(2, False)
    _, page = http_json(server.port, "GET", "/chats/online_users", cookie=cookie)
    assert page["users"] == []


def test_catch_up_replays_exactly_what_was_missed(start: Start, clients: Any) -> None:
    server = start()
    bob = connect(clients, server, "bob")
    alice = connect(clients, server, "alice")
    alice.send({"type": "send", "to": "2_User", "message_text": "before", "ref": 1})
    last = bob.wait_type("message")["id"]
    bob.close()
    sent = []
    for i in range(5):
        alice.send(
            {
                "type": "send",
                "to": "2_User" if i % 2 else "5_Group",
                "message_text": f"missed {i}",
                "ref": f"m{i}",
            }
        )
        sent.append(alice.wait_type("ack", ref=f"m{i}")["message"]["id"])
    again = clients(server.port, login_cookie(server.port, "bob"), query=f"?after={last}")
    done = again.wait_type("catchup")
    assert done["recovered"] is True and done["count"] == 5
    replayed = [f["id"] for f in again.of_type("message")]
    assert replayed == sent
    # The same via a catchup frame on a live connection.
    again.send({"type": "catchup", "after": sent[2]})
    again.wait(lambda f: f.get("type") == "catchup" and f["count"] == 2)
    assert [f["id"] for f in again.of_type("message")][-2:] == sent[3:]


def test_catch_up_too_old_is_not_recovered(start: Start, clients: Any) -> None:
    server = start(CHAT_CATCHUP_RETENTION=1)
    alice = connect(clients, server, "alice")
    old = "1000000000000-0000"
    alice.send({"type": "catchup", "after": old})
    assert alice.wait_type("catchup")["recovered"] is False


def test_catch_up_after_the_window_was_trimmed_is_not_recovered(start: Start, clients: Any) -> None:
    server = start(CHAT_HISTORY_LIMIT=3)
    alice = connect(clients, server, "alice")
    ids = []
    for i in range(5):
        alice.send({"type": "send", "to": "2_User", "message_text": str(i), "ref": i})
        ids.append(alice.wait_type("ack", ref=i)["message"]["id"])
    alice.send({"type": "catchup", "after": ids[0]})
    assert alice.wait_type("catchup")["recovered"] is False
    alice.send({"type": "catchup", "after": ids[1]})
    done = alice.wait(lambda f: f.get("type") == "catchup" and f["recovered"])
    assert done["count"] == 3


BAD_FRAMES = [
    ("garbage", "invalid_json"),
    ("[1, 2]", "invalid_frame"),
    ('{"type": "nope"}', "unknown_type"),
    ('{"type": "send", "to": "2_User"}', "missing_field"),
    ('{"type": "send", "to": "x", "message_text": "x"}', "invalid_conversation"),
    ('{"type": "send", "to": "6_Group", "message_text": "x"}', "unknown_recipient"),
    ('{"type": "send", "to": "2_User", "message_text": ""}', "empty_message"),
    ('{"type": "send", "to": "2_User", "message_text": "x", "ref": {"a": 1}}', "invalid_field"),
    ('{"type": "read", "to": "2_User", "id": "nope"}', "invalid_field"),
    ('{"type": "window", "conversation": "2_User", "state": "huge"}', "invalid_state"),
    ('{"type": "catchup", "after": 5}', "invalid_field"),
    ('{"type": "typing", "to": "99_User"}', "unknown_recipient"),
]


def test_garbage_frames_get_error_frames_and_nobody_is_disturbed(
    start: Start, clients: Any, r: redis.Redis
) -> None:
    server = start()
    alice, bob = connect(clients, server, "alice"), connect(clients, server, "bob")
    bob.drain()
    keys_before = sorted(k for k in r.keys() if ":{u:" in k and not k.endswith(":conns"))
    for text, code in BAD_FRAMES:
        alice.ws.send(text)
        assert alice.wait_type("error", error=code)["message"]
    alice.ws.send_binary(b"\x00\x01")  # binary is refused with 1003, not a crash
    assert close_code(alice.ws) == 1003
    assert sorted(k for k in r.keys() if ":{u:" in k and not k.endswith(":conns")) == keys_before
    # Bob's connection is untouched and works.
    other = connect(clients, server, "alice")
    other.send({"type": "send", "to": "2_User", "message_text": "still fine", "ref": 1})
    assert bob.wait_type("message")["message_text"] == "still fine"
    assert not bob.of_type("error")


def test_oversized_frames_are_closed_with_1009(start: Start, clients: Any) -> None:
    server = start(CHAT_WS_MAX_MESSAGE_BYTES=1024)
    alice = connect(clients, server, "alice")
    alice.ws.send("x" * 5000)
    assert close_code(alice.ws) == 1009


def test_rate_limit_answers_with_an_error_frame(start: Start, clients: Any) -> None:
    server = start(CHAT_SEND_RATE=1, CHAT_SEND_BURST=3)
    alice = connect(clients, server, "alice")
    for i in range(6):
        alice.send({"type": "send", "to": "2_User", "message_text": str(i), "ref": i})
    alice.wait(lambda f: f.get("ref") == 5)
    assert len(alice.of_type("ack")) == 3
    assert {f["error"] for f in alice.of_type("error")} == {"rate_limited"}
    status, body = http_json(
        server.port,
        "POST",
        "/chats/send_message",
        {"to": "2_User", "message_text": "x"},
        login_cookie(server.port, "alice"),
        {"X-CSRF-Token": "x"},
    )
    assert status == 403  # CSRF first; the limit answers 429 through HTTP too:
    cookie, csrf = csrf_session(server.port, "alice")
    statuses = [
        http_json(
            server.port,
            "POST",
            "/chats/send_message",
            {"to": "2_User", "message_text": "x"},
            cookie,
            csrf,
        )[0]
        for _ in range(5)
    ]
    assert 429 in statuses


def handshake_status(port: int, query: str = "", cookie: str = "", origin: str = "") -> int:
    """Status of a websocket handshake, over a plain HTTP connection we close ourselves."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    if cookie:
        headers["Cookie"] = cookie
    if origin:
        headers["Origin"] = origin
    try:
        conn.request("GET", "/chats/ws" + query, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def test_refusals_before_the_handshake(start: Start) -> None:
    server = start(CHAT_WS_ALLOWED_ORIGINS=["https://partner.example"])
    cookie = login_cookie(server.port, "alice")
    assert handshake_status(server.port) == 401
    assert handshake_status(server.port, cookie=cookie, origin="https://evil.example") == 403
    assert handshake_status(server.port, "?token=forged") == 401
    assert handshake_status(server.port, cookie=cookie, origin="https://partner.example") == 101
    assert handshake_status(server.port, cookie=cookie, origin=server.url) == 101
    assert handshake_status(server.port, cookie=cookie) == 101


def test_token_from_the_bootstrap_authenticates_without_a_cookie(start: Start) -> None:
    server = start()
    token = bootstrap(server.port, login_cookie(server.port, "carol"))["ws_token"]
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{server.port}/chats/ws?token={token}", timeout=5
    )
    try:
        assert json.loads(ws.recv())["user_id"] == 3
    finally:
        ws.close()


def test_typing_read_marks_and_windows_are_relayed(start: Start, clients: Any) -> None:
    server = start()
    alice, alice2 = connect(clients, server, "alice"), connect(clients, server, "alice")
    bob = connect(clients, server, "bob")
    bob.send({"type": "typing", "to": "1_User"})
    assert alice.wait_type("typing")["user_id"] == 2
    alice.send({"type": "send", "to": "2_User", "message_text": "read me", "ref": 1})
    mid = bob.wait_type("message")["id"]
    bob.send({"type": "read", "to": "1_User", "id": mid})
    assert alice.wait_type("read", id=mid)["user_id"] == 2
    alice.send({"type": "window", "conversation": "2_User", "state": "minimised"})
    assert alice2.wait_type("window")["state"] == "minimised"
    _, windows = http_json(
        server.port, "GET", "/chats/windows", cookie=login_cookie(server.port, "alice")
    )
    assert windows == {"windows": [{"conversation": "2_User", "state": "minimised"}]}


def test_keepalive_pings(start: Start) -> None:
    server = start(CHAT_PING_INTERVAL=0.3)
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{server.port}/chats/ws",
        cookie=login_cookie(server.port, "alice"),
        timeout=10,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            opcode, _ = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_PING:
                break
        else:
            raise AssertionError("no ping")
    finally:
        ws.close()


def test_dead_peers_are_dropped(start: Start, clients: Any) -> None:
    """A client that stops answering (no pong, nothing) is cut and goes offline."""
    server = start(CHAT_PING_INTERVAL=0.4)
    alice = connect(clients, server, "alice")
    # A raw handshake, then silence: this peer never answers a ping.
    sock = socket.create_connection(("127.0.0.1", server.port))
    cookie = login_cookie(server.port, "bob")
    sock.sendall(
        (
            "GET /chats/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nCookie: {cookie}\r\n\r\n"
        ).encode()
    )
    try:
        alice.wait_presence(2, True)
        alice.wait_presence(2, False, timeout=15)
    finally:
        sock.close()


def test_slow_consumer_is_cut_off_and_never_sees_a_corrupt_stream(
    start: Start, clients: Any
) -> None:
    server = start(CHAT_WS_MAX_QUEUE_BYTES=64 * 1024)
    bob = connect(clients, server, "bob")
    # A tiny receive buffer and no reading: this client falls behind at once.
    slow = clients(
        server.port,
        login_cookie(server.port, "alice"),
        sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),),
    )
    slow.wait_type("hello")
    sender = connect(clients, server, "carol")
    text = "x" * 1900
    count = 1500  # about 3 MB: more than any kernel buffers between them
    for i in range(count):
        sender.send({"type": "send", "to": "5_Group", "message_text": text, "ref": i})
        if i % 100 == 99:
            sender.wait(lambda f, i=i: f.get("ref") == i, timeout=60)
            bob.drain(0.01)
    sender.wait(lambda f: f.get("ref") == count - 1, timeout=60)
    # Bob, who reads, got every message, in order.
    while len(bob.of_type("message")) < count:
        assert bob._recv_one(10), "bob stopped receiving"
    ids = [f["id"] for f in bob.of_type("message")]
    assert ids == sorted(ids) and len(set(ids)) == count
    # The slow reader gets whole, valid frames and then a clean cut — never garbage.
    with pytest.raises((ConnectionError, websocket.WebSocketConnectionClosedException)):
        while slow._recv_one(10):
            pass
        raise AssertionError("the slow client was not disconnected")
    assert all(f["type"] in ("message", "presence", "online", "hello") for f in slow.frames)
    assert len(slow.of_type("message")) < count
    _, metrics = http_json(server.port, "GET", "/metrics")
    assert "flask_chat_slow_client_disconnects_total 1.0" in metrics


def test_group_membership_change_applies_to_live_connections(
    start: Start, clients: Any, redis_url: str
) -> None:
    server = start()
    alice = connect(clients, server, "alice")
    # Group 5's channel reaches alice; tell her connection she left, then joined again.
    import sys

    sys.path.insert(0, __import__("helpers").ROOT + "/examples")
    import chat_app

    app = chat_app.create_app({"CHAT_REDIS_URL": redis_url})
    chat = app.extensions["chat"]
    with app.app_context():
        chat.group_membership_changed(5, removed=[1])
        alice.wait_type("membership", group_id=5, member=False)
        chat.send_message(2, "5_Group", "alice left")
        alice.drain(0.5)
        assert not alice.of_type("message")
        chat.group_membership_changed(5, added=[1])
        alice.wait_type("membership", group_id=5, member=True)
        chat.send_message(2, "5_Group", "alice is back")
        assert alice.wait_type("message")["message_text"] == "alice is back"
        chat.state.redis.close()


def test_health_and_metrics(start: Start, clients: Any) -> None:
    server = start()
    connect(clients, server, "alice")
    status, health = http_json(server.port, "GET", "/chats/health")
    assert status == 200
    assert health["status"] == "ok" and health["connections"] == 1
    status, text = http_json(server.port, "GET", "/metrics")
    assert status == 200
    assert "flask_chat_connections 1.0" in text
    assert "flask_chat_connects_total 1.0" in text


def test_sigterm_tells_clients_to_reconnect_and_exits_cleanly(start: Start, clients: Any) -> None:
    server = start()
    alice = connect(clients, server, "alice")
    assert server.terminate() == 0
    alice.wait_type("reconnect")
    assert close_code(alice.ws) == 1012


def test_hub_resubscribes_after_a_redis_restart(start: Start, clients: Any) -> None:
    port = free_port()
    own = RedisServer(port=port)
    url = own.start()
    try:
        server = start(url)
        alice = connect(clients, server, "alice")
        own.stop()
        own = RedisServer(port=port)
        own.start()
        # Delivery comes back by itself once the hub has reconnected and resubscribed.
        sender = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                sender = sender or connect(clients, server, "carol")
                sender.send(
                    {"type": "send", "to": "1_User", "message_text": "after restart", "ref": "x"}
                )
                alice.wait_type("message", timeout=1)
                break
            except AssertionError:
                continue
        assert alice.wait_type("message")["message_text"] == "after restart"
    finally:
        own.stop()


def test_killed_instance_users_go_offline_within_the_ttl(start: Start, clients: Any) -> None:
    doomed = start(CHAT_PRESENCE_TTL=2)
    survivor = start(CHAT_PRESENCE_TTL=2)
    connect(clients, doomed, "alice")
    bob = connect(clients, survivor, "bob")
    bob.wait(knows_online(1), what="alice online")
    doomed.kill()
    started = time.monotonic()
    bob.wait_presence(1, False, timeout=15)
    assert time.monotonic() - started < 15


# -- hardening ------------------------------------------------------------------------------


def test_logout_closes_live_connections_and_voids_tokens(start: Start, clients: Any) -> None:
    server = start()
    cookie = login_cookie(server.port, "alice")
    token = bootstrap(server.port, cookie)["ws_token"]
    by_cookie = connect(clients, server, "alice")
    by_token = clients(server.port, query=f"?token={token}")
    by_token.wait_type("hello")
    bob = connect(clients, server, "bob")
    assert logout_over_http(server.port, cookie) == 302
    for conn in (by_cookie, by_token):
        conn.wait_type("logout")
        assert close_code(conn.ws) == 4401
    # The token from before the logout opens nothing any more, on any instance.
    assert handshake_status(server.port, f"?token={token}") == 401
    other = start()
    assert handshake_status(other.port, f"?token={token}") == 401
    # Nobody else was touched, and logging in again gives a token that works.
    bob.send({"type": "ping"})
    bob.wait_type("pong")
    fresh = bootstrap(server.port, login_cookie(server.port, "alice"))["ws_token"]
    assert handshake_status(server.port, f"?token={fresh}") == 101


def test_a_catch_up_replays_no_group_the_user_has_left(
    start: Start, clients: Any, redis_url: str
) -> None:
    server = start(CHAT_GROUP_MEMBER_CACHES=False)
    alice = connect(clients, server, "alice")
    import sys

    sys.path.insert(0, __import__("helpers").ROOT + "/examples")
    import chat_app

    app = chat_app.create_app({"CHAT_REDIS_URL": redis_url, "CHAT_GROUP_MEMBER_CACHES": False,
                               "SECRET_KEY": "test"})
    chat = app.extensions["chat"]
    with app.app_context():
        before = chat.send_message(2, "5_Group", "while alice is in").id
        alice.wait_type("message", id=before)
        chat.group_membership_changed(5, removed=[1])
        alice.wait_type("membership", group_id=5, member=False)
        secret = chat.send_message(2, "5_Group", "after alice left").id
        alice.send({"type": "catchup", "after": before, "ref": "c"})
        done = alice.wait_type("catchup")
        assert done == {"type": "catchup", "recovered": True, "count": 0}
        assert secret not in [f["id"] for f in alice.of_type("message")]
        chat.state.redis.close()


def test_hostile_frames_get_error_frames_with_their_ref(start: Start, clients: Any) -> None:
    server = start()
    alice = connect(clients, server, "alice")
    alice.ws.send("[" * 50_000)
    assert alice.wait_type("error")["error"] == "invalid_json"
    alice.ws.send('{"type": "nope", "ref": "r1"}')
    err = alice.wait_type("error", ref="r1")
    assert err["error"] == "unknown_type" and err["field"] == "type"
    alice.send({"type": "ping"})
    alice.wait_type("pong")


def raw_upgrade_status(port: int, headers: dict[str, str]) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/chats/ws", headers={"Upgrade": "websocket",
                                                  "Connection": "Upgrade", **headers})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 101:
            assert json.loads(body)["error"], body
        return resp.status
    finally:
        conn.close()


def test_malformed_upgrades_are_4xx(start: Start) -> None:
    server = start()
    cookie = login_cookie(server.port, "alice")
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    assert raw_upgrade_status(server.port, {"Cookie": cookie, "Sec-WebSocket-Key": key,
                                            "Sec-WebSocket-Version": "8"}) == 426
    assert raw_upgrade_status(server.port, {"Cookie": cookie,
                                            "Sec-WebSocket-Version": "13"}) == 400
    assert raw_upgrade_status(server.port, {"Cookie": cookie, "Sec-WebSocket-Key": "short",
                                            "Sec-WebSocket-Version": "13"}) == 400
    assert raw_upgrade_status(server.port, {"Cookie": cookie, "Sec-WebSocket-Key": key,
                                            "Sec-WebSocket-Version": "13"}) == 101


def test_frames_that_are_not_sends_are_rate_limited(start: Start, clients: Any) -> None:
    server = start(CHAT_WS_FRAME_RATE=1, CHAT_WS_FRAME_BURST=5)
    alice = connect(clients, server, "alice")
    bob = connect(clients, server, "bob")
    for i in range(30):
        alice.send({"type": "typing", "to": "2_User", "ref": i})
    err = alice.wait(lambda f: f.get("type") == "error" and f.get("ref") == 29)
    assert err["error"] == "rate_limited"
    limited = [f for f in alice.of_type("error") if f["error"] == "rate_limited"]
    assert len(limited) >= 20
    bob.drain(0.5)
    assert len(bob.of_type("typing")) <= 10
    # Sends have their own budget and still go through.
    alice.send({"type": "send", "to": "2_User", "message_text": "still here", "ref": "s"})
    alice.wait_type("ack", ref="s")


def test_connections_per_user_are_capped(start: Start, clients: Any, r: redis.Redis) -> None:
    server = start(CHAT_WS_MAX_CONNECTIONS_PER_USER=2)
    cookie = login_cookie(server.port, "alice")
    first = connect(clients, server, "alice")
    connect(clients, server, "alice")
    assert handshake_status(server.port, cookie=cookie) == 429
    assert handshake_status(server.port, cookie=login_cookie(server.port, "bob")) == 101
    first.close()
    from helpers import wait_for

    wait_for(lambda: r.zcard("chat:{u:1}:conns") == 1, what="the closed connection to go")
    assert handshake_status(server.port, cookie=cookie) == 101


def test_live_frames_wait_until_the_catch_up_is_written(start: Start, clients: Any) -> None:
    """A reconnecting client sees the replay first and then what came live meanwhile,
    never a live frame ahead of (or amid) the replay."""
    import threading

    server = start()
    alice = connect(clients, server, "alice")
    alice.send({"type": "send", "to": "2_User", "message_text": "start", "ref": "s"})
    position = alice.wait_type("ack", ref="s")["message"]["id"]
    for i in range(150):
        alice.send({"type": "send", "to": "2_User", "message_text": f"missed {i}", "ref": i})
    alice.wait_type("ack", ref=149)
    carol = connect(clients, server, "carol")
    stop = threading.Event()

    def chatter() -> None:
        n = 0
        while not stop.is_set() and n < 2000:
            carol.send({"type": "send", "to": "2_User", "message_text": f"live {n}"})
            n += 1
            time.sleep(0.003)

    sender = threading.Thread(target=chatter)
    sender.start()
    try:
        bob = clients(server.port, login_cookie(server.port, "bob"), query=f"?after={position}")
        bob.wait_type("catchup", timeout=30)
        bob.drain(0.3)
    finally:
        stop.set()
        sender.join()
    kinds = [f["type"] for f in bob.frames]
    done = kinds.index("catchup")
    replay = [f for f in bob.frames[:done] if f["type"] == "message"]
    assert bob.frames[done]["recovered"] is True
    assert len(replay) == bob.frames[done]["count"] >= 150
    assert [f["sender_id"] for f in replay[:150]] == [1] * 150
    ids = [f["id"] for f in bob.of_type("message")]
    assert len(ids) == len(set(ids)), "no message twice"


def test_open_sockets_miss_nothing_acknowledged_across_a_redis_restart(
    start: Start, clients: Any
) -> None:
    port = free_port()
    own = RedisServer(port=port)
    url = own.start()
    try:
        server = start(url)
        alice = connect(clients, server, "alice")
        carol = connect(clients, server, "carol")
        carol.send({"type": "send", "to": "1_User", "message_text": "before", "ref": "b"})
        alice.wait_type("message", sender_id=3)
        own.stop()
        # While Redis is down a send is refused, and the client is told so.
        carol.send({"type": "send", "to": "1_User", "message_text": "lost?", "ref": "down"})
        assert carol.wait_type("error", ref="down")["error"] == "unavailable"
        own = RedisServer(port=port)
        own.start()
        acked: list[str] = []
        deadline = time.monotonic() + 5
        n = 0
        while time.monotonic() < deadline:
            carol.send({"type": "send", "to": "1_User", "message_text": f"after {n}",
                        "ref": f"a{n}"})
            frame = carol.wait(lambda f, n=n: f.get("ref") == f"a{n}", timeout=10)
            if frame["type"] == "ack":
                acked.append(frame["message"]["id"])
            n += 1
            time.sleep(0.02)
        assert acked, "no send went through after the restart"
        from helpers import wait_for

        def all_arrived() -> bool:
            alice.drain(0.2)
            return set(acked) <= {f["id"] for f in alice.of_type("message")}

        wait_for(all_arrived, timeout=30, what="every acknowledged message at alice")
    finally:
        own.stop()
