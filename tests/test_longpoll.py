"""``GET /chats/poll``, the long-polling fallback, end to end on real gevent servers.

Two instances of the demo on one Redis, people logged in over HTTP, messages sent with
``POST /chats/send_message`` (as chat.js sends in fallback mode): a poll answers what
was missed after its position, or waits for the next live event, on whichever instance
it lands. The browser side is ``test_browser_fallback.py``.
"""

from __future__ import annotations

import http.client
import json
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from helpers import DemoServer, csrf_session, http_json, login_cookie, logout_over_http, wait_for

from flask_chat.ids import format_id


@pytest.fixture
def servers(redis_url: str) -> Iterator[list[DemoServer]]:
    key = secrets.token_hex(16)
    started = [DemoServer(redis_url, SECRET_KEY=key) for _ in range(2)]
    try:
        for server in started:
            server.start()
        yield started
    finally:
        for server in started:
            server.stop()


def poll(port: int, cookie: str, query: str = "", headers: dict[str, str] | None = None,
         ) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", f"/chats/poll{query}", headers={"Cookie": cookie, **(headers or {})})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        if resp.status == 200:
            assert resp.getheader("Cache-Control") == "no-store"
    finally:
        conn.close()
    return resp.status, body


def send(port: int, session: tuple[str, dict[str, str]], to: str, text: str) -> dict[str, Any]:
    cookie, csrf = session
    status, message = http_json(port, "POST", "/chats/send_message",
                                {"to": to, "message_text": text}, cookie=cookie, headers=csrf)
    assert status == 201, message
    result: dict[str, Any] = message
    return result


def test_a_poll_answers_what_was_missed_then_waits_for_what_comes_live(
    servers: list[DemoServer],
) -> None:
    a, b = servers
    alice, bob = csrf_session(a.port, "alice"), csrf_session(a.port, "bob")
    first = send(a.port, alice, "2_User", "missed one")
    second = send(b.port, alice, "2_User", "missed two")
    start = format_id(int(first["id"][:13]) - 1, 0)

    # Missed after the position: answered at once, in id order, as catch-up replays.
    status, body = poll(b.port, bob[0], f"?after={start}")
    assert status == 200
    assert [f["message_text"] for f in body["frames"]] == ["missed one", "missed two"]
    assert all(f["type"] == "message" and f["to"] == "2_User" for f in body["frames"])
    assert body["position"] == second["id"]

    # Nothing after the new position: the poll (on a) waits for the next event, which
    # is sent through b.
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(poll, a.port, bob[0], f"?after={body['position']}&online=1")
        # The poll is listening once the hub subscribed bob's channel.
        r = redis.Redis.from_url(a.env["CHAT_REDIS_URL"])
        try:
            wait_for(lambda: r.pubsub_numsub("chat:ch:{u:2}")[0][1] >= 1, what="the listener")
        finally:
            r.close()
        live = send(b.port, alice, "2_User", "live")
        status, body = waiting.result(60)
    assert status == 200
    kinds = [f["type"] for f in body["frames"]]
    assert kinds[0] == "online" and "message" in kinds, kinds
    (message,) = [f for f in body["frames"] if f["type"] == "message"]
    assert (message["id"], message["message_text"]) == (live["id"], "live")
    assert body["position"] == live["id"]


def test_a_quiet_poll_answers_no_frames_and_keeps_its_position(
    servers: list[DemoServer],
) -> None:
    a, _ = servers
    bob = login_cookie(a.port, "bob")
    position = format_id(int(time.time() * 1000), 0)
    status, body = poll(a.port, bob, f"?after={position}")
    assert (status, body) == (200, {"position": position, "frames": []})


def test_logging_out_ends_a_waiting_poll(servers: list[DemoServer]) -> None:
    a, b = servers
    bob = login_cookie(a.port, "bob")
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(poll, a.port, bob)
        r = redis.Redis.from_url(a.env["CHAT_REDIS_URL"])
        try:
            wait_for(lambda: r.pubsub_numsub("chat:ch:{u:2}")[0][1] >= 1, what="the listener")
        finally:
            r.close()
        assert logout_over_http(b.port, bob) in (200, 302, 303)
        status, body = waiting.result(60)
    assert status == 200 and body["frames"][-1] == {"type": "logout"}


def test_bad_polls_are_refused(servers: list[DemoServer]) -> None:
    a, _ = servers
    bob = login_cookie(a.port, "bob")
    status, body = poll(a.port, "")
    assert status == 401 and body["error"] == "not_authenticated"
    status, body = poll(a.port, bob, "?after=nope")
    assert status == 400 and (body["error"], body["field"]) == ("invalid_parameter", "after")
    status, body = poll(a.port, bob, headers={"Origin": "http://evil.example"})
    assert status == 403 and body["error"] == "forbidden_origin"
    # Older than the catch-up retention: the client is told to reload its history.
    status, body = poll(a.port, bob, "?after=" + format_id(1_000_000_000_000, 0))
    assert status == 200 and body["frames"] == [{"type": "catchup", "recovered": False,
                                                 "count": 0}]
