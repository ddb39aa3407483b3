"""socket.io 0.8's polling transports on the bridge, against the REAL legacy stack.

The real browser client (socket.io-client 0.8.7 in Node, ``client.js``) forced to
``xhr-polling`` goes through a real HAProxy in round robin over two flask-chat instances:
its polls and POSTs land on either instance, the real gem publishes, the real gem's
listener reads the events. ``jsonp-polling`` and the edges (framing, identity, budgets,
expiry, a holder that dies) are checked at the protocol level with a raw client
(``legacy.PollSio``) talking to each instance directly.

Needs the legacy stack (``../shared/legacy`` or ``LEGACY_DIR``) and ``haproxy``; see
``test_bridge.py`` and ``test_haproxy.py``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from helpers import login_cookie, logout_over_http, wait_for
from legacy import (
    EventWatch,
    Instance,
    JugClient,
    LegacyStack,
    PollSio,
    close_all,
    running_stack,
    sio_decode_payload,
    sio_get_handshake,
)
from test_haproxy import Cluster

NOT_HANDSHAKEN = "7:::1+0"


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack() -> Iterator[LegacyStack]:
    yield from running_stack()


@pytest.fixture
def r(stack: LegacyStack) -> Iterator[redis.Redis]:
    client = redis.Redis(port=stack.redis_port, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def things(r: redis.Redis) -> Iterator[list[Any]]:
    """Everything a test starts, closed at its end (last first)."""
    started: list[Any] = []
    yield started
    close_all(reversed(started))


def instance(stack: LegacyStack, things: list[Any], **settings: Any) -> Instance:
    server = Instance(stack.redis_url, SECRET_KEY="polling-tests", **settings)
    things.append(server)
    return server.start()


def watch(stack: LegacyStack, things: list[Any]) -> EventWatch:
    events = EventWatch(stack.redis_url)
    things.append(events)
    return events


def messages(packets: list[str]) -> list[Any]:
    return [json.loads(p[4:]) for p in packets if p.startswith("3:::")]


def poll_until(client: PollSio, count: int, ports: list[int], timeout: float = 60) -> list[Any]:
    """Poll (alternating between ``ports``) until ``count`` messages came."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    turn = 0
    while len(got) < count:
        assert time.monotonic() < deadline, f"timed out; got {got}"
        got += messages(client.get(ports[turn % len(ports)]))
        turn += 1
    return got


def session_keys(r: redis.Redis, sid: str) -> list[str]:
    return sorted(k for k in r.scan_iter(f"chat:jug:{{p:{sid}}}*"))


# -- the real client behind HAProxy ------------------------------------------------------


def test_the_real_client_on_xhr_polling_behind_haproxy_round_robin(
    stack: LegacyStack, things: list[Any], tmp_path: Any
) -> None:
    cluster = Cluster(stack.redis_url, str(tmp_path))
    things.append(cluster)
    cluster.start()
    events = watch(stack, things)
    meta = {"user_id": 7, "page": "inbox"}
    jug = JugClient(stack, cluster.port, ["channel_poll"], meta=meta, raw=True,
                    transport="xhr-polling")
    things.append(jug)
    sid = jug.connected(timeout=30)
    assert jug.wait(lambda m: m.get("event") == "connect")["transport"] == "xhr-polling"
    assert events.wait("subscribe", session_id=sid) == {
        "channel": "channel_poll", "meta": meta, "session_id": sid,
    }

    # Publishes by the real gem, while the polls go round robin over both instances.
    for n in range(6):
        stack.publish("channel_poll", {"n": n, "text": "caf\u00e9 \U0001f600"})
        jug.wait_data(lambda m, n=n: m.get("data", {}).get("n") == n, timeout=30)
    assert [m["data"]["n"] for m in jug.messages()] == list(range(6))
    assert jug.messages()[0] == {
        "data": {"n": 0, "text": "caf\u00e9 \U0001f600"}, "channel": "channel_poll",
    }

    # A custom event and a later subscribe, POSTed through HAProxy too.
    jug.command('event {"typing":true}')
    assert events.wait("custom", session_id=sid) == {
        "meta": meta, "session_id": sid, "data": {"typing": True},
    }
    jug.command("subscribe channel_poll_later")
    events.wait("subscribe", session_id=sid, channel="channel_poll_later")
    stack.publish("channel_poll_later", "later")
    jug.wait_data(lambda m: m.get("data") == "later", timeout=30)

    # Consecutive polls of this one session landed on both instances (HAProxy's log
    # names the server of each request), and the client never reconnected.
    polls = re.findall(rf"(chat\d) \S+ 200 .*GET /socket\.io/1/xhr-polling/{sid}\?",
                       cluster.haproxy_log())
    assert len(set(polls)) == 2, polls
    assert any(a != b for a, b in zip(polls, polls[1:], strict=False)), polls
    assert [m["session_id"] for m in jug.snapshot() if m.get("event") == "connect"] == [sid]
    frames = [m["frame"] for m in jug.snapshot() if m.get("event") == "frame" and m["dir"] == "in"]
    assert frames and all(re.match(r"^[0-9]:", f) or f.startswith("\ufffd") for f in frames)

    # Leaving as a tab does: the disconnect packet, then one unsubscribe per channel.
    jug.exit()
    events.wait("unsubscribe", session_id=sid, channel="channel_poll")
    events.wait("unsubscribe", session_id=sid, channel="channel_poll_later")
    r = redis.Redis(port=stack.redis_port, decode_responses=True)
    try:
        wait_for(lambda: not session_keys(r, sid), what="the session's keys to go")
    finally:
        r.close()


# -- the protocol, by hand, on two instances ---------------------------------------------


def metric(port: int, sample: str) -> float:
    from helpers import http_json

    _, text = http_json(port, "GET", "/metrics")
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


def framed(packets: list[str]) -> str:
    """What socket.io 0.8's encodePayload makes of several packets (JavaScript lengths)."""
    return "".join(f"\ufffd{len(p.encode('utf-16-le')) // 2}\ufffd{p}" for p in packets)


def test_polls_and_posts_answered_by_either_instance(
    stack: LegacyStack, things: list[Any], r: redis.Redis
) -> None:
    a, b = instance(stack, things), instance(stack, things)
    events = watch(stack, things)
    status, _, body = sio_get_handshake(a.port)
    assert status == 200 and body.split(":")[1:] == [
        "15", "25", "websocket,xhr-polling,jsonp-polling",
    ]
    client = PollSio(a.port)
    assert client.get(b.port) == ["1::"]  # b holds the session's subscriptions now
    client.send({"type": "subscribe", "channel": "channel_x"}, port=a.port)
    events.wait("subscribe", session_id=client.session_id, channel="channel_x")

    # Published while no poll was open: queued, then taken by one poll, framed as
    # socket.io 0.8 frames several packets (a non-BMP character counts two).
    stack.publish("channel_x", "one")
    stack.publish("channel_x", {"emoji": "\U0001f600\U0001f600", "accents": "\u00e9t\u00e9"})
    stack.publish("channel_x", "three")
    wait_for(lambda: r.llen(f"chat:jug:{{p:{client.session_id}}}:q") == 3, what="the queue")
    status, headers, text = client.request("GET", a.port)
    assert status == 200 and headers["Content-Type"] == "text/plain; charset=utf-8"
    expected = [
        '3:::{"data":"one","channel":"channel_x"}',
        '3:::{"data":{"emoji":"\U0001f600\U0001f600","accents":"\u00e9t\u00e9"},'
        '"channel":"channel_x"}',
        '3:::{"data":"three","channel":"channel_x"}',
    ]
    assert text == framed(expected)
    assert sio_decode_payload(text) == expected

    # A poll waits, here on a, for what the holder (b) queues later.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(client.get, a.port)
        wait_for(lambda: r.exists(f"chat:jug:{{p:{client.session_id}}}:w"),
                 what="the poll to wait")
        stack.publish("channel_x", "live")
        assert messages(waiting.result(30)) == [{"data": "live", "channel": "channel_x"}]

        # Two packets in one POST (as the client sends what it buffered meanwhile).
        status, text = client.post(['3:::{"type":"meta","data":{"m":1}}',
                                    '3:::{"type":"event","data":"hi"}'], port=b.port)
        assert (status, text) == (200, "1")
        assert events.wait("custom", session_id=client.session_id) == {
            "meta": {"m": 1}, "session_id": client.session_id, "data": "hi",
        }
        # Nothing to say for the polling duration: a noop (which re-arms the client's
        # close timeout), and the session lives on.
        assert pool.submit(client.get, b.port).result(40) == ["8::"]
    stack.publish("channel_x", "after the noop")
    assert messages(client.get(a.port)) == [{"data": "after the noop", "channel": "channel_x"}]
    assert metric(a.port, 'flask_chat_juggernaut_polls_total{method="GET",'
                  'transport="xhr-polling"}') >= 2
    assert metric(b.port, 'flask_chat_juggernaut_polling_sessions') == 1

    # The disconnect packet ends it, whichever instance gets it.
    client.post(["0::"], port=a.port)
    events.wait("unsubscribe", session_id=client.session_id, channel="channel_x")
    wait_for(lambda: not session_keys(r, client.session_id), what="the keys to go")
    assert client.get(b.port) == [NOT_HANDSHAKEN]


def test_jsonp_polling_is_served_and_anonymous(
    stack: LegacyStack, things: list[Any], r: redis.Redis
) -> None:
    a, b = instance(stack, things), instance(stack, things)
    events = watch(stack, things)
    bob = login_cookie(a.port, "bob")
    client = PollSio(a.port, bob, transport="jsonp-polling")
    status, headers, text = client.request("GET", b.port)
    assert (status, text) == (200, 'io.j[3]("1::");')
    assert headers["Content-Type"].startswith("text/javascript")
    # Bob's own channel is refused (a JSONP session is nobody's), a public one is not.
    client.send({"type": "subscribe", "channel": "/chats/user_2"}, port=a.port)
    client.send({"type": "subscribe", "channel": "channel_j"}, port=b.port)
    events.wait("subscribe", session_id=client.session_id, channel="channel_j")
    stack.publish("/chats/user_2", "private")
    # Raw (the gem's runner reads its report line by line, and U+2028 splits lines).
    r.publish("juggernaut", json.dumps({"channels": ["channel_j"],
                                        "data": 'quote " and \u2028 line separator'}))
    got = poll_until(client, 1, [a.port, b.port])
    assert got == [{"data": 'quote " and \u2028 line separator', "channel": "channel_j"}]
    assert events.count("subscribe", session_id=client.session_id) == 1

    # The same user on xhr-polling: their cookie makes the session theirs.
    xhr = PollSio(a.port, bob)
    assert xhr.get(b.port) == ["1::"]
    xhr.send({"type": "subscribe", "channel": "/chats/user_2"}, port=a.port)
    events.wait("subscribe", session_id=xhr.session_id, channel="/chats/user_2")
    stack.publish("/chats/user_2", "private")
    assert poll_until(xhr, 1, [a.port]) == [{"data": "private", "channel": "/chats/user_2"}]

    # A form without a JSON string is a 400, and changes nothing.
    status, _, text = client.request("POST", a.port, "d=not-json",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and '"bad_payload"' in text


def test_a_polling_session_is_the_user_of_its_first_poll(
    stack: LegacyStack, things: list[Any], r: redis.Redis
) -> None:
    a, b = instance(stack, things), instance(stack, things)
    alice, bob = login_cookie(a.port, "alice"), login_cookie(a.port, "bob")
    client = PollSio(a.port, alice)
    assert client.get(a.port) == ["1::"]
    client.send({"type": "subscribe", "channel": "/chats/user_1"}, port=b.port)
    wait_for(lambda: r.hlen(f"chat:jug:session:{client.session_id}"), what="the subscribe")
    stack.publish("/chats/user_1", "for alice")
    wait_for(lambda: r.llen(f"chat:jug:{{p:{client.session_id}}}:q") == 1, what="the queue")
    before = {k: r.dump(k) for k in session_keys(r, client.session_id)}

    # Someone else with the session id: another user, nobody, the other transport.
    for cookie, transport in ((bob, "xhr-polling"), ("", "xhr-polling"), (alice, "jsonp-polling")):
        other = PollSio(b.port, cookie, transport=transport, session_id=client.session_id)
        status, _, text = other.request("GET")
        assert status == 403 and '"forbidden_session"' in text, (cookie, transport, text)
        status, text = other.post(['3:::{"type":"unsubscribe","channel":"/chats/user_1"}'])
        assert status == 403 and '"forbidden_session"' in text, (cookie, transport, text)
    assert {k: r.dump(k) for k in session_keys(r, client.session_id)
            if not k.endswith(":w")} == {k: v for k, v in before.items() if not k.endswith(":w")}
    assert messages(client.get(b.port)) == [{"data": "for alice", "channel": "/chats/user_1"}]


def test_bad_polling_requests_are_refused_and_change_nothing(
    stack: LegacyStack, things: list[Any], r: redis.Redis
) -> None:
    a = instance(stack, things, CHAT_WS_ALLOWED_ORIGINS=["http://legacy.example"])
    client = PollSio(a.port)
    assert client.get() == ["1::"]
    keys = {k: r.dump(k) for k in session_keys(r, client.session_id)}
    # Unknown sessions: socket.io's own answer to a poll (reconnect), a 403 to a POST.
    for sid in ("1234567890123456789", "abc", "9" * 30):
        stranger = PollSio(a.port, session_id=sid)
        assert stranger.get() == [NOT_HANDSHAKEN]
        status, text = stranger.post(['3:::{"type":"event"}'])
        assert status == 403 and '"not_handshaken"' in text
    # Too big a POST, and pages of other origins.
    status, _, text = client.request("POST", body="3:::" + "x" * 70_000)
    assert status == 413 and '"payload_too_large"' in text
    evil = {"Origin": "http://evil.example"}
    for method in ("GET", "POST"):
        status, headers, text = client.request(method, body="3:::{}", headers=evil)
        assert status == 403 and '"forbidden_origin"' in text
        assert "Access-Control-Allow-Origin" not in headers
    assert {k: r.dump(k) for k in session_keys(r, client.session_id)} == keys
    status, headers, _ = client.request("POST", body="2::",
                                        headers={"Origin": "http://legacy.example"})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "http://legacy.example"


# -- how sessions end --------------------------------------------------------------------


def test_a_session_nobody_polls_ends_after_the_close_timeout(
    stack: LegacyStack, things: list[Any], r: redis.Redis
) -> None:
    a = instance(stack, things)
    events = watch(stack, things)
    client = PollSio(a.port)
    assert client.get() == ["1::"]
    client.send({"type": "subscribe", "channel": "channel_gone"})
    events.wait("subscribe", session_id=client.session_id)
    # The tab is gone without a word: 25 s (the close timeout) after its last request,
    # plus one check of the holder.
    events.wait("unsubscribe", timeout=60, session_id=client.session_id, channel="channel_gone")
    # The events go out as the session ends; its keys go in the same pass, just after.
    wait_for(lambda: not session_keys(r, client.session_id), what="the keys to go")
    assert client.get() == [NOT_HANDSHAKEN]


def test_a_client_that_stops_reading_is_cut_at_its_queue_budget(
    stack: LegacyStack, things: list[Any], r: redis.Redis
) -> None:
    a = instance(stack, things, CHAT_WS_MAX_QUEUE_BYTES=4096)
    events = watch(stack, things)
    client = PollSio(a.port)
    assert client.get() == ["1::"]
    client.send({"type": "subscribe", "channel": "channel_flood"})
    events.wait("subscribe", session_id=client.session_id)
    for _ in range(60):
        r.publish("juggernaut", json.dumps({"channels": ["channel_flood"], "data": "x" * 100}))
    events.wait("unsubscribe", session_id=client.session_id, channel="channel_flood")
    wait_for(lambda: not session_keys(r, client.session_id), what="the keys to go")
    assert client.get() == [NOT_HANDSHAKEN]
    assert metric(a.port, 'flask_chat_juggernaut_limited_frames_total{reason="poll queue"}') == 1


def test_logout_ends_the_users_polling_sessions(
    stack: LegacyStack, things: list[Any], r: redis.Redis
) -> None:
    a, b = instance(stack, things), instance(stack, things)
    events = watch(stack, things)
    alice = login_cookie(a.port, "alice")
    client = PollSio(a.port, alice)
    assert client.get(b.port) == ["1::"]
    client.send({"type": "subscribe", "channel": "/chats/user_1"})
    events.wait("subscribe", session_id=client.session_id)
    assert logout_over_http(a.port, alice) in (200, 302, 303)
    events.wait("unsubscribe", session_id=client.session_id, channel="/chats/user_1")
    wait_for(lambda: not session_keys(r, client.session_id), what="the keys to go")
    assert client.get(a.port) == [NOT_HANDSHAKEN]


def test_the_real_client_reconnects_when_the_holder_of_its_session_dies(
    stack: LegacyStack, things: list[Any], tmp_path: Any, r: redis.Redis
) -> None:
    cluster = Cluster(stack.redis_url, str(tmp_path), CHAT_PRESENCE_TTL=2)
    things.append(cluster)
    cluster.start()
    events = watch(stack, things)
    jug = JugClient(stack, cluster.port, ["channel_holder"], transport="xhr-polling")
    things.append(jug)
    first = jug.connected(timeout=30)
    events.wait("subscribe", session_id=first)
    holder = next(s for s in cluster.servers
                  if metric(s.port, "flask_chat_juggernaut_polling_sessions") == 1)
    mark = len(jug.snapshot())
    holder.kill()
    # Its keys expire unrenewed; the next poll (on the survivor) is told to reconnect,
    # and the client does, subscribing again; the survivor's reaper unsubscribes the
    # old session.
    second = jug.connected(timeout=60, after=mark)
    assert second != first
    events.wait("subscribe", session_id=second, channel="channel_holder")
    stack.publish("channel_holder", "after the holder died")
    jug.wait_data(lambda m: m.get("data") == "after the holder died", timeout=30)
    events.wait("unsubscribe", timeout=30, session_id=first, channel="channel_holder")


def test_a_draining_holder_sends_its_polling_clients_elsewhere(
    stack: LegacyStack, things: list[Any], tmp_path: Any, r: redis.Redis
) -> None:
    cluster = Cluster(stack.redis_url, str(tmp_path), CHAT_PRESENCE_TTL=2)
    things.append(cluster)
    cluster.start()
    events = watch(stack, things)
    jug = JugClient(stack, cluster.port, ["channel_drain"], transport="xhr-polling")
    things.append(jug)
    first = jug.connected(timeout=30)
    events.wait("subscribe", session_id=first)
    holder = next(s for s in cluster.servers
                  if metric(s.port, "flask_chat_juggernaut_polling_sessions") == 1)
    mark = len(jug.snapshot())
    assert holder.terminate() == 0, holder.output  # SIGTERM: drain, then exit
    # The session ended with the drain: the next poll, wherever it lands, is told to
    # reconnect, and the client does (on the other instance: HAProxy sees the drained
    # one down).
    assert not session_keys(r, first), holder.output
    second = jug.connected(timeout=60, after=mark)
    assert second != first
    events.wait("subscribe", session_id=second, channel="channel_drain")
    stack.publish("channel_drain", "after the drain")
    jug.wait_data(lambda m: m.get("data") == "after the drain", timeout=30)
    events.wait("unsubscribe", timeout=30, session_id=first, channel="channel_drain")
