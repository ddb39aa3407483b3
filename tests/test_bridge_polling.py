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

import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import require
from helpers import free_port, login_cookie, logout_over_http, wait_for
from legacy import (
    EventWatch,
    Instance,
    JugClient,
    LegacyStack,
    PollSio,
    close_all,
    legacy_dir,
    sio_decode_payload,
    sio_get_handshake,
)
from test_haproxy import Cluster

NOT_HANDSHAKEN = "7:::1+0"


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack() -> Iterator[LegacyStack]:
    folder = legacy_dir()
    if folder is None:
        require("no legacy Juggernaut stack: expected ../shared/legacy beside the repository "
                "(or set LEGACY_DIR)")
    assert folder is not None
    problem: Exception | None = None
    for _ in range(3):  # free ports can be taken in between: try others
        legacy = LegacyStack(folder, free_port(), free_port())
        try:
            legacy.start()
            break
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            legacy.stop()
            problem = exc
    else:
        require(f"the legacy Juggernaut stack did not start: {problem}")
    yield legacy
    legacy.stop()


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
    import json

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
    assert any(a != b for a, b in zip(polls, polls[1:])), polls
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
