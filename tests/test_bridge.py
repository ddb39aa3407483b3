"""The Juggernaut bridge end to end, against the REAL legacy stack.

Juggernaut 2.1.1 on Node (socket.io 0.8.7), the real gem's ``Juggernaut.publish`` and
``Juggernaut.subscribe`` (Ruby), and the real browser client (socket.io-client 0.8.7 in
Node) run beside flask-chat instances on one Redis. Wherever the legacy stack can answer
the question, the test asks it in the same run and compares: what the Node server
delivers to a legacy client is the reference for what flask-chat delivers to legacy and
to native clients, and what the gem's listener reads from Node is the reference for
what it reads from flask-chat. ``docs/juggernaut-protocol.md`` is the contract.

The stack is found at ``../shared/legacy`` beside the repository, or ``LEGACY_DIR``;
without it these tests are skipped (they fail under ``CHAT_TEST_REQUIRE_ALL=1``). It is
started once for the module on free ports. It needs bash, node (20 or later: the client
uses Node's WebSocket), npm, ruby with the redis gem (Debian: ``ruby ruby-redis``),
``redis-server``, ``redis-tools`` and ``curl``; ``start-legacy.sh`` installs missing
Debian packages itself when it can. Its npm modules go to ``LEGACY_HOME`` (default: the
script's own cache folder, so ``npm ci`` runs once per machine). The hostile-input test
draws 10,000 random documents; a failure names its seed, and ``CHAT_TEST_SEED``
replays it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import websocket
from flask_chat_bridge import protocol
from helpers import (
    ROOT,
    Client,
    TcpProxy,
    free_port,
    http_json,
    login_cookie,
    logout_over_http,
    wait_for,
)
from legacy import (
    EventWatch,
    GemListener,
    Gunicorn,
    Instance,
    JugClient,
    LegacyStack,
    RawSio,
    close_all,
    js_integer,
    js_view,
    raw_messages,
    role_names,
    running_stack,
    sio_get_handshake,
    sio_handshake,
    with_roles,
)

from flask_chat.embedded import RedisServer

# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack() -> Iterator[LegacyStack]:
    yield from running_stack()


@pytest.fixture
def r(stack: LegacyStack) -> Iterator[redis.Redis]:
    """The legacy Redis, emptied for each test (pub/sub does not care: FLUSHDB only drops
    keys, such as a translator lock left by the previous test's instances)."""
    client = redis.Redis(port=stack.redis_port, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


class World:
    """Everything a test starts, stopped at its end whatever happened."""

    def __init__(self, stack: LegacyStack) -> None:
        self.stack = stack
        self.things: list[Any] = []

    def keep(self, thing: Any) -> Any:
        self.things.append(thing)
        return thing

    def server(
        self, redis_url: str | None = None, port: int | None = None, **settings: Any
    ) -> Instance:
        """A flask-chat instance (the demo app, bridge on) on the legacy Redis."""
        server = self.keep(Instance(redis_url or self.stack.redis_url, port=port, **settings))
        return server.start()

    def legacy(
        self,
        port: int,
        *channels: str,
        meta: Any = None,
        raw: bool = False,
        headers: dict[str, str] | None = None,
        connect: bool = True,
    ) -> JugClient:
        """The real Juggernaut browser client on ``port``, connected (unless not
        ``connect``); ``headers`` are what a browser adds (``Origin``, ``Cookie``)."""
        client = self.keep(
            JugClient(self.stack, port, channels, meta=meta, raw=raw, headers=headers)
        )
        if connect:
            client.connected()
        return client

    def native(self, server: Instance, name: str, *channels: str) -> Client:
        """A flask-chat websocket client logged in as ``name``, subscribed to legacy
        ``channels``; ``session_id`` is its connection id (what ``except`` names)."""
        client = self.keep(Client(server.port, login_cookie(server.port, name)))
        client.session_id = client.wait_type("hello")["connection_id"]  # type: ignore[attr-defined]
        for channel in channels:
            client.send({"type": "subscribe", "channel": channel})
        return client

    def raw(
        self,
        port: int,
        cookie: str = "",
        handshake_port: int | None = None,
        upgrade_cookie: str | None = None,
    ) -> RawSio:
        return self.keep(RawSio(port, cookie, handshake_port, upgrade_cookie))

    def listener(self) -> GemListener:
        return self.keep(GemListener(self.stack))

    def watch(self, url: str | None = None) -> EventWatch:
        return self.keep(EventWatch(url or self.stack.redis_url))


@pytest.fixture
def world(stack: LegacyStack, r: redis.Redis) -> Iterator[World]:
    w = World(stack)
    yield w
    close_all(reversed(w.things))


# -- small helpers -----------------------------------------------------------------------


def jug_frames(client: Client) -> list[dict[str, Any]]:
    """The legacy messages a native client got (the ``message`` of ``juggernaut`` frames)."""
    return [f["message"] for f in client.frames if f.get("type") == "juggernaut"]


def native_wait(
    client: Client,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 15,
    what: str = "a legacy message",
) -> dict[str, Any]:
    frame = client.wait(
        lambda f: f.get("type") == "juggernaut" and predicate(f["message"]), timeout, what=what
    )
    message: dict[str, Any] = frame["message"]
    return message


def legacy_messages(client: JugClient | Client) -> list[dict[str, Any]]:
    """What a legacy (``client.js``) or native client got from legacy channels so far."""
    return client.messages() if isinstance(client, JugClient) else jug_frames(client)


def until(
    client: JugClient | Client,
    predicate: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 15,
) -> None:
    """Wait until what ``client`` got from legacy channels satisfies ``predicate``."""
    deadline = time.monotonic() + timeout
    while not predicate(legacy_messages(client)):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; got {legacy_messages(client)}"
        if isinstance(client, JugClient):
            client.wait_new(len(client.snapshot()), min(left, 0.2))
        else:
            client._recv_one(min(left, 0.2))


def is_end(channel: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("data") == "end" and m.get("channel") == channel


def wait_subscribed(watch: EventWatch, client: Any, count: int) -> None:
    """Wait for ``count`` subscribe events of ``client``'s session, whatever channel they
    name: Node names a channel after the value that first used it in its process (once
    a publish listed the number 7, a subscribe to "7" is announced as 7)."""
    wait_for(
        lambda: watch.count("subscribe", session_id=client.session_id) == count,
        what=f"{count} subscribes of {client.session_id}",
    )


def numsub(r: redis.Redis, channel: str) -> int:
    return int(r.pubsub_numsub(channel)[0][1])


def history_texts(port: int, name: str) -> list[str]:
    status, history = http_json(port, "GET", "/chats/history", cookie=login_cookie(port, name))
    assert status == 200, history
    return [m["message_text"] for conv in history.values() for m in conv["messages"]]


def data_of(messages: list[dict[str, Any]]) -> list[Any]:
    return [m.get("data") for m in messages]


# -- 1. every publish shape --------------------------------------------------------------

PLACES = ("node", "flask", "native")


def publish_every_shape(
    stack: LegacyStack, r: redis.Redis, c1: str, c2: str, a: str, b: str
) -> None:
    """Every shape of publish in the contract (section 3), for the channels c1 and c2 and
    the sessions a and b: first through the real gem, then raw (as any Redis client may
    publish, with what the gem would tidy up: duplicates, ``channel``, odd types)."""
    gem = stack.publish
    gem(c1, "hello")
    gem(f"{c1},{c2},{c1}", {"user": "bob", "text": 'hi <b>&</b> café ✓ / "quoted"'})  # .uniq
    gem([c2, c1], {"list": "of channels"})
    gem(c1, {"text": "not for A"}, except_=a)
    gem(c1, "nobody", except_=[a, b])
    gem(f"{c1},{c2}", "not for A, anywhere", except_=[a, "1234567890123456789"])
    gem(c2, [1, 2.5, None, True, {"k": "v"}], options={"type": "notice", "id": 42})  # extra keys
    gem(c2, "not for B, with extras", except_=b, options={"type": "x"})
    gem(c1, "a channel option", options={"channel": "elsewhere"})
    gem(c1, "replaced", options={"data": "an option replaces data"})
    gem(c2, raw_data="plain text, not JSON")
    gem(c1, None)
    gem(
        c1,
        {
            "nested": {"deep": [{"x": 1}]},
            "n": -0.5,
            "big": 12345678901234567890,
            "e": 1e-7,
            "f": 1.0,
            "2": "two",
            "1": "one",
            "": "empty key",
        },
    )

    def raw(doc: Any) -> None:
        r.publish("juggernaut", doc if isinstance(doc, (str, bytes)) else json.dumps(doc))

    number = int(a) if a.isdigit() else int(a, 16)
    raw({"channel": c2, "data": "channel, singular"})
    raw({"channels": [c1, c1, c2], "data": "duplicates"})
    raw({"channels": c2, "data": "channels as a string"})
    raw({"channels": [c1], "data": "numeric except", "except": number})
    raw({"channels": [c1], "data": "numeric except list", "except": [number]})
    raw({"channels": [c1]})  # no data key at all
    raw({"channels": [], "channel": c1, "data": "[] is truthy: nothing"})
    raw({"channels": {}, "channel": c1, "data": "{} is truthy: nothing"})
    raw({"channels": None, "channel": [c2], "data": "null falls back to channel"})
    raw({"channels": "", "channel": c2, "data": "'' falls back to channel"})
    raw({"channels": 0, "channel": c1, "data": "0 falls back to channel"})
    raw({"channels": 7, "data": "a number is no channel"})
    raw({"data": "no channels at all"})
    raw({"channels": [c1], "except": "", "data": "empty except"})
    raw({"channels": [c1, 5, None, c2], "data": "odd channel names are skipped"})
    raw({"channels": [c2], "type": "subscribe", "channel": "x", "data": "channel key kept"})
    raw(f'{{"channels":["{c1}"],"data":"first","data":"second"}}')  # duplicate keys
    raw(f'{{"channels":["{c1}"],"data":"lone \\ud800 surrogate \\udfff"}}')
    raw(f'{{"channels":["{c2}"],"data":[1e400,-1e400,1e-400,-0]}}')  # Infinity -> null
    raw(f'{{"channels":["{c1}"],"data":NaN}}')  # not JSON: dropped
    raw(f'{{"channels":["{c1}"],"data":"bad \xff\xfe utf-8"}}'.encode("latin-1"))
    raw(b'\xef\xbb\xbf{"channels":["' + c1.encode() + b'"],"data":"BOM"}')  # not JSON
    raw(f'[{{"channels":["{c1}"],"data":"an array"}}]')
    raw(f'  {{ "channels" : [ "{c2}" ] ,\n "data" : "whitespace"\t}} ')
    raw({"channels": [c1, c2], "data": "end"})


def test_every_publish_shape_reaches_flask_chat_clients_as_node_delivers_it(
    stack: LegacyStack, world: World, r: redis.Redis
) -> None:
    server = world.server()
    watch = world.watch()
    # Each place gets its own two channels and two sessions (A and B), and the same
    # publishes addressed to them, so that ``except`` can name that place's own sessions.
    channels = {p: (f"channel_{p}_1", f"channel_{p}_2") for p in PLACES}
    clients: dict[str, list[Any]] = {
        "node": [world.legacy(stack.jug_port, *channels["node"], raw=True) for _ in "AB"],
        "flask": [world.legacy(server.port, *channels["flask"], raw=True) for _ in "AB"],
        "native": [world.native(server, n, *channels["native"]) for n in ("alice", "bob")],
    }
    # B subscribes to its second channel twice: it gets what is published there twice.
    clients["node"][1].command(f"subscribe {channels['node'][1]}")
    clients["flask"][1].command(f"subscribe {channels['flask'][1]}")
    clients["native"][1].send({"type": "subscribe", "channel": channels["native"][1]})
    sids = {p: [c.session_id for c in clients[p]] for p in PLACES}
    for place in PLACES:
        for sid in sids[place]:
            for channel in channels[place]:
                times = 2 if sid == sids[place][1] and channel == channels[place][1] else 1
                wait_for(
                    lambda s=sid, c=channel, n=times: (
                        watch.count("subscribe", session_id=s, channel=c) == n
                    ),
                    what=f"{sid} subscribed to {channel}",
                )

    with ThreadPoolExecutor(len(PLACES)) as pool:
        runs = [pool.submit(publish_every_shape, stack, r, *channels[p], *sids[p]) for p in PLACES]
        for run in runs:
            run.result()

    received: dict[str, list[list[dict[str, Any]]]] = {}
    for place in PLACES:
        end = is_end(channels[place][1])
        for client, ends in zip(clients[place], (1, 2), strict=True):  # B: twice on C2
            until(client, lambda got, end=end, n=ends: sum(map(end, got)) == n)
        received[place] = [legacy_messages(c) for c in clients[place]]

    # The reference, Node, does what the contract says.
    node_a, node_b = (data_of(m) for m in received["node"])
    assert "hello" in node_a and "hello" in node_b
    assert {"text": "not for A"} not in node_a and {"text": "not for A"} in node_b
    assert "nobody" not in node_a + node_b
    assert node_a.count("not for A, anywhere") == 0 and node_b.count("not for A, anywhere") == 3
    assert "not for B, with extras" in node_a and "not for B, with extras" not in node_b
    assert node_a.count("numeric except") == 1 and node_b.count("numeric except") == 1
    assert node_a.count("duplicates") == 3  # c1 twice, c2 once: no deduplication
    assert node_b.count("duplicates") == 4  # and c2 twice more for B, subscribed twice
    assert node_a.count("channels as a string") == 1 and node_b.count("channels as a string") == 2
    assert "[] is truthy: nothing" not in node_a and "null falls back to channel" in node_a
    assert "lone \ud800 surrogate \udfff" in node_a and [None, None, 0, 0] in node_a
    assert "bad \ufffd\ufffd utf-8" in node_a
    assert "second" in node_a  # duplicate keys: the last one wins
    assert not {"first", "BOM", "an array"} & {d for d in node_a if isinstance(d, str)}
    assert sum(1 for m in received["node"][0] if "data" not in m) == 1

    # flask-chat's legacy clients and native clients get exactly the same, message for
    # message, as a JavaScript page reads them (names of sessions and channels aside).
    def view(place: str) -> list[list[Any]]:
        names = role_names(
            {sids[place][0]: "A", sids[place][1]: "B"},
            {channels[place][0]: "C1", channels[place][1]: "C2"},
        )
        return [[js_view(m, names) for m in messages] for messages in received[place]]

    reference = view("node")
    assert view("flask") == reference
    assert view("native") == reference

    # And byte for byte: Node's JSON.stringify (key order, numbers) is flask-chat's too.
    def exact(place: str) -> list[list[str]]:
        a, b = sids[place]
        names = {a: "A", b: "B", channels[place][0]: "C1", channels[place][1]: "C2"}
        for sid, role in ((a, "#A"), (b, "#B")):  # a numeric except, as a double
            names[js_integer(int(sid) if sid.isdigit() else int(sid, 16))] = role
        return [with_roles(raw_messages(c), names) for c in clients[place]]

    assert exact("flask") == exact("node")
    assert exact("native") == exact("node")


# -- 2. a mixed fleet --------------------------------------------------------------------


def test_a_mixed_fleet_delivers_each_publish_exactly_once_to_every_browser(
    stack: LegacyStack, world: World, r: redis.Redis
) -> None:
    one, two = world.server(), world.server()
    watch = world.watch()
    channel = "channel_fleet"
    legacy = [world.legacy(port, channel) for port in (stack.jug_port, one.port, two.port)]
    natives = [world.native(server, "carol", channel) for server in (one, two)]
    # Handshake on one instance, websocket on the other (no sticky sessions needed).
    crossed = world.raw(two.port, handshake_port=one.port)
    crossed.send({"type": "subscribe", "channel": channel})
    sessions = [c.session_id for c in legacy + natives] + [crossed.session_id]
    assert len(set(sessions)) == 6
    for sid in sessions:
        watch.wait("subscribe", session_id=sid, channel=channel)
    assert numsub(r, "juggernaut") == 3  # Node and the two instances

    report = stack.publish(channel, {"text": "once to everyone"})
    assert report["receivers"] == 3
    stack.publish(channel, "end")

    expected = {"data": {"text": "once to everyone"}, "channel": channel}
    for client in legacy:
        client.wait_data(is_end(channel))
        assert client.messages() == [expected, {"data": "end", "channel": channel}]
    for native in natives:
        native_wait(native, is_end(channel))
        assert jug_frames(native) == [expected, {"data": "end", "channel": channel}]
    crossed.wait_message(is_end(channel))
    assert crossed.messages() == [expected, {"data": "end", "channel": channel}]


# -- 3. the events the gem's listener reads ----------------------------------------------


def run_event_script(world: World, port: int, listener: GemListener) -> list[tuple[str, ...]]:
    """The same client actions against one server (Node or flask-chat); returns what the
    gem's listener printed about those clients, session ids replaced by X, Y and Z."""
    got = 0

    def expect(sessions: list[str], count: int) -> None:
        nonlocal got
        got += count
        wait_for(
            lambda: len(listener.events(sessions)) >= got,
            15,
            what=f"{got} events from the gem's listener",
        )

    x = world.legacy(port, "channel_ev_a", meta={"user_id": 1, "name": "alice ✓"})
    expect([x.session_id], 1)  # subscribe, with meta
    y = world.legacy(port, "channel_ev_a", "channel_ev_b")
    ids = [x.session_id, y.session_id]
    expect(ids, 2)  # two subscribes, no meta key at all
    x.command('event {"typing":true,"room":"channel_ev_a","text":"café </b> ✓"}')
    expect(ids, 1)  # custom
    x.command("unsubscribe channel_ev_zzz")  # not subscribed: no event
    x.command("unsubscribe channel_ev_a")
    expect(ids, 1)  # explicit unsubscribe, with meta
    x.command('meta {"user_id":1,"name":"alice ✓","away":true}')
    x.command("subscribe channel_ev_b")
    expect(ids, 1)  # subscribe with the new meta
    y.exit()
    expect(ids, 2)  # a disconnect: one unsubscribe per channel
    z = world.raw(port)
    ids.append(z.session_id)
    z.send({"type": "meta", "data": None})
    z.send({"type": "subscribe", "channel": "channel_ev_a"})
    z.send({"type": "subscribe", "channel": "channel_ev_a"})
    expect(ids, 2)  # subscribed twice: two subscribes, "meta": null
    z.send({"type": "subscribe"})  # no channel: "undefined", an event without channel
    expect(ids, 1)
    z.send({"type": "subscribe", "channels": ["channel_ev_c", "channel_ev_d"]})  # the first
    expect(ids, 1)
    z.send({"type": "bogus"})
    z.send("not json")
    z.send({"type": "event"})  # no data: no data key
    expect(ids, 1)
    z.abort()  # a TCP close, no disconnect packet: one unsubscribe per channel
    expect(ids, 3)
    x.exit()
    expect(ids, 1)

    roles = dict(zip(ids, "XYZ", strict=True))
    out = []
    for event in listener.events(ids):
        payload = event["payload"]
        for sid, role in roles.items():
            payload = payload.replace(sid, role)
        out.append((event["event"], event["redis_channel"], payload))
    return out


def test_the_gem_listener_reads_the_same_event_bytes_from_flask_chat(
    stack: LegacyStack, world: World
) -> None:
    listener = world.listener()
    from_node = run_event_script(world, stack.jug_port, listener)
    # The demo lets anyone read channel*; "undefined" (a subscribe without a channel) too.
    server = world.server(CHAT_LEGACY_PUBLIC_CHANNELS=["channel*", "undefined"])
    from_flask = run_event_script(world, server.port, listener)

    meta = '"meta":{"user_id":1,"name":"alice ✓"}'
    assert from_node[:3] == [
        (
            "subscribe",
            "juggernaut:subscribe",
            f'{{"channel":"channel_ev_a",{meta},"session_id":"X"}}',
        ),
        ("subscribe", "juggernaut:subscribe", '{"channel":"channel_ev_a","session_id":"Y"}'),
        ("subscribe", "juggernaut:subscribe", '{"channel":"channel_ev_b","session_id":"Y"}'),
    ]
    assert ("unsubscribe", "juggernaut:unsubscribe", '{"meta":null,"session_id":"Z"}') in from_node
    assert len(from_node) == 17
    assert from_flask == from_node


# -- 4. the real client on flask-chat, through a restart -------------------------------


def test_the_real_client_works_on_flask_chat_and_survives_a_restart(
    stack: LegacyStack, world: World
) -> None:
    server = world.server(CHAT_PRESENCE_TTL=2)
    watch = world.watch()
    meta = {"user_id": 7, "page": "inbox"}
    jug = world.legacy(server.port, "channel_restart", meta=meta, raw=True)
    first = jug.session_id
    assert first.isdigit()
    assert jug.wait(lambda m: m.get("event") == "connect")["transport"] == "websocket"
    assert watch.wait("subscribe", session_id=first) == {
        "channel": "channel_restart",
        "meta": meta,
        "session_id": first,
    }
    stack.publish("channel_restart", {"text": "before"})
    assert jug.wait_data(lambda m: True) == {
        "data": {"text": "before"},
        "channel": "channel_restart",
    }

    jug.command('event {"typing":true}')
    assert watch.wait("custom", session_id=first) == {
        "meta": meta,
        "session_id": first,
        "data": {"typing": True},
    }
    jug.command('meta {"user_id":7,"page":"settings"}')
    jug.command("subscribe channel_later")
    assert watch.wait("subscribe", session_id=first, channel="channel_later")["meta"] == {
        "user_id": 7,
        "page": "settings",
    }
    stack.publish("channel_later", "later")
    jug.wait_data(lambda m: m.get("data") == "later")

    mark = len(jug.snapshot())
    assert server.terminate() == 0
    jug.wait(lambda m: m.get("event") == "disconnect", start=mark, what="disconnect")
    world.server(port=server.port, CHAT_PRESENCE_TTL=2)  # a new instance, same address
    second = jug.connected(timeout=30, after=mark)  # the client reconnects by itself
    assert second != first
    # It sends its meta again (the latest) and subscribes again to what it subscribed to
    # before its first connect (contract, section 6).
    assert watch.wait("subscribe", session_id=second, channel="channel_restart")["meta"] == {
        "user_id": 7,
        "page": "settings",
    }
    stack.publish("channel_restart", {"text": "after the restart"})
    jug.wait_data(lambda m: m.get("data") == {"text": "after the restart"})
    # The old session's unsubscribes come from the new instance's reaper (Node never
    # published them: issue #129).
    watch.wait("unsubscribe", session_id=first, channel="channel_restart")
    watch.wait("unsubscribe", session_id=first, channel="channel_later")
    assert not [
        e
        for kind, e in watch.events
        if kind == "subscribe" and e["session_id"] == second and e["channel"] == "channel_later"
    ]
    # Nothing but socket.io 0.8 frames ever reached the client.
    frames = [m["frame"] for m in jug.snapshot() if m.get("event") == "frame" and m["dir"] == "in"]
    assert frames and all(f[:1] in "0123456789" and f[1:2] == ":" for f in frames), frames


# -- 5. a Redis restart ----------------------------------------------------------------


class Restartable:
    """A Redis server on a fixed port that can be stopped and started again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server = RedisServer(port=port)

    def start(self) -> str:
        return self.server.start()

    def restart(self) -> None:
        self.server.stop()
        self.server = RedisServer(port=self.port)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


def test_delivery_resumes_by_itself_after_a_redis_restart(stack: LegacyStack, world: World) -> None:
    redis_server = world.keep(Restartable(free_port()))
    url = redis_server.start()
    port = redis_server.port
    server = world.server(url)
    watch = EventWatch(url)
    try:
        jug = world.legacy(server.port, "channel_redis")
        bob = world.native(server, "bob", "channel_redis")
        for sid in (jug.session_id, bob.session_id):
            watch.wait("subscribe", session_id=sid, channel="channel_redis")
    finally:
        watch.close()
    stack.publish("channel_redis", "before", port=port)
    jug.wait_data(lambda m: m.get("data") == "before")
    native_wait(bob, lambda m: m.get("data") == "before")

    redis_server.restart()
    deadline = time.monotonic() + 30
    n = 0
    while True:  # publish until delivery is back: nobody restarted anything
        n += 1
        stack.publish("channel_redis", f"after {n}", port=port)
        try:
            jug.wait_data(lambda m: str(m.get("data")).startswith("after"), timeout=0.5)
            break
        except AssertionError:
            assert time.monotonic() < deadline, "delivery did not come back after Redis"
    native_wait(bob, lambda m: str(m.get("data")).startswith("after"))
    stack.publish("channel_redis", "steady", port=port)
    jug.wait_data(lambda m: m.get("data") == "steady")
    native_wait(bob, lambda m: m.get("data") == "steady")
    # A new legacy browser can connect too (its handshake goes through Redis).
    world.legacy(server.port, "channel_redis")


# -- 6. hostile input ------------------------------------------------------------------

SAFE_KEYS = (
    "|0|1|2|9|10|01|-1|1.5|1e3|4294967294|4294967295|é|a b|type|id|k_ü|channel|data|except"
).split("|")
# Numbers whose JSON differs between Python's repr and JavaScript's Number-to-String.
ODD_NUMBERS: list[Any] = [
    1.0, -2.0, 123.0, 1e16, 1e20, 2.0**60, 1e21, 1.5e21, 1e-5, 1e-6, 1e-7, -1.5e-7, 2e-6,
    1e300, 5e-324, -0.0, 0.1, 1.7976931348623157e308, 2**53, 2**53 + 1, 2**64,
    12345678901234567890, 123456789012345678, -(10**20), 10**21, 10**25,
]
TEXT = "ab /<>&\"\\'é✓😀\u2028\u0000\u001f\ud800\udfff,"


def random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth >= 3 or roll < 0.55:
        kind = rng.randrange(9)
        if kind == 0:
            return None
        if kind == 1:
            return rng.random() < 0.5
        if kind == 2:
            return rng.randint(-1000, 1000)
        if kind == 3:
            return rng.choice(ODD_NUMBERS)
        if kind == 4:
            exponent = rng.choice([-320, -30, -8, -7, -6, -5, 0, 15, 16, 20, 21, 22, 300])
            return rng.choice([rng.uniform(-1e6, 1e6), rng.random() * 10.0**exponent,
                               float(rng.randint(-(2**60), 2**60))])
        return "".join(rng.choice(TEXT) for _ in range(rng.randrange(12)))
    if roll < 0.78:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {random_key(rng): random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def random_key(rng: random.Random) -> str:
    # Keys such as toString or __proto__ crash or bend the Node server itself: the
    # legacy stack is the reference here, not the target.
    if rng.random() < 0.5:
        return rng.choice(SAFE_KEYS)
    return "k_" + "".join(rng.choice("xyz09é") for _ in range(rng.randrange(4)))


def random_document(rng: random.Random, channel: str, a_ids: list[str], b_ids: list[str]) -> bytes:
    """One random document for ``juggernaut``: not JSON, JSON but not an object, or an
    object with random channels (``channel`` the subscribed one), except and keys."""
    # fmt: off
    channel_choices: list[Any] = [
        [channel], channel, [channel, channel], [], {}, 0, 1, True, False, None, "",
        ["channel_other"], [channel, "channel_other", 3, None, {"k": 1}], {"k": channel},
        "channel_other", [7], [7.0, channel], [channel, 7, "7"], 7,
    ]
    # Only lists naming the A (or the B) of every place: the same for all of them.
    except_choices: list[Any] = [
        a_ids, b_ids, a_ids + b_ids, ["x", *b_ids], "x", 17, None, [], {"a": 1}, "", [1.5, None],
    ]
    # fmt: on
    roll = rng.random()
    if roll < 0.1:  # not JSON at all, or cut short
        text = json.dumps(random_value(rng))
        return text[: rng.randrange(len(text) + 1)].encode("utf-8", "surrogatepass") + rng.choice(
            [b"", b"}", b"\xff", b",", b"NaN"]
        )
    if roll < 0.25:  # JSON, not an object
        doc: Any = random_value(rng)
    else:
        doc = {}
        for key in rng.sample(
            ["channels", "channel", "except", "data", "x1", "x2"], rng.randrange(1, 6)
        ):
            if key == "channels" or key == "channel":
                doc[key] = rng.choice(channel_choices)
            elif key == "except":
                doc[key] = rng.choice(except_choices)
            elif key == "data":
                doc[key] = random_value(rng)
            else:
                doc[random_key(rng)] = random_value(rng)
    text = json.dumps(doc, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, None, 1]))
    return text.encode("utf-8", "surrogatepass")  # a raw lone surrogate is invalid UTF-8


def test_hostile_publishes_never_hurt_an_instance_or_its_clients(
    stack: LegacyStack, world: World, r: redis.Redis
) -> None:
    # "7": publishes list it as the number 7 too (Node delivers those to "7").
    server = world.server(CHAT_LEGACY_PUBLIC_CHANNELS=["channel*", "7"])
    watch = world.watch()
    channel = "channel_hostile"
    clients: dict[str, list[Any]] = {
        "node": [world.legacy(stack.jug_port, channel, "7", raw=True) for _ in "AB"],
        "flask": [world.legacy(server.port, channel, "7", raw=True) for _ in "AB"],
        "native": [world.native(server, n, channel, "7") for n in ("alice", "bob")],
    }
    for group in clients.values():
        for client in group:
            wait_subscribed(watch, client, 2)
    a_ids = [clients[p][0].session_id for p in PLACES]
    b_ids = [clients[p][1].session_id for p in PLACES]

    hostile: list[bytes] = [
        b"",
        b"{",
        b"not json",
        b"\xff\xfe\xfd",
        b"[1,2]",
        b'"a string"',
        b"null",
        b"42",
        b'{"channels":NaN}',
        b'{"channels":["channel_hostile"],"data":Infinity}',
        b'{"channels":["channel_hostile"],"data":-Infinity,"except":NaN}',
        b'\xef\xbb\xbf{"channels":["channel_hostile"],"data":"BOM"}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"channels":["channel_hostile"],"data":1' + b"0" * 5_000 + b"}",
        b"{" + b"x" * 4_000_000,
        json.dumps({"channels": ["channel_nobody"], "data": "x" * 4_000_000}).encode(),
        json.dumps({"channels": [channel], "data": "y" * 300_000, "big": True}).encode(),
        json.dumps({"channels": 5, "data": 1}).encode(),
        json.dumps({"channels": True, "data": 2}).encode(),
        json.dumps({"channels": {"a": channel}, "data": 3}).encode(),
        json.dumps({"channels": [["channel_other"]], "data": 4}).encode(),
        json.dumps({"channel": {"x": 1}, "data": 5}).encode(),
        json.dumps({"channels": [channel], "except": {"x": 1}, "data": 6}).encode(),
        json.dumps({"channels": [channel], "except": [1, None, {}, []], "data": 7}).encode(),
        json.dumps({"channels": [channel], "except": True, "data": 8}).encode(),
        json.dumps({"channels": [channel], "channel": None, "data": None, "except": None}).encode(),
    ]
    seed = int(os.environ.get("CHAT_TEST_SEED", "0")) or random.randrange(1, 10**9)
    rng = random.Random(seed)
    documents = hostile + [random_document(rng, channel, a_ids, b_ids) for _ in range(10_000)]
    pipe = r.pipeline(transaction=False)
    for i, document in enumerate(documents, 1):
        pipe.publish("juggernaut", document)
        if i % 500 == 0:
            pipe.execute()
    pipe.execute()
    r.publish("juggernaut", json.dumps({"channels": [channel], "data": "end"}))

    # Everyone got all of it, in order, and the same as from Node (with the seed, a
    # failure can be replayed: CHAT_TEST_SEED).
    received = {}
    for place, group in clients.items():
        for client in group:
            if place == "native":
                native_wait(client, is_end(channel), timeout=120, what="the last publish")
            else:
                client.wait_data(is_end(channel), timeout=120, what="the last publish")
        received[place] = [jug_frames(c) if place == "native" else c.messages() for c in group]
    names = role_names({**{sid: "A" for sid in a_ids}, **{sid: "B" for sid in b_ids}})
    view = {p: [[js_view(m, names) for m in got] for got in received[p]] for p in PLACES}
    assert len(view["node"][1]) > 1000, f"seed {seed}"
    assert view["flask"] == view["node"], f"seed {seed}"
    assert view["native"] == view["node"], f"seed {seed}"
    # Byte for byte too (Node's numbers and key order), every message.
    roles = {**{sid: "A" for sid in a_ids}, **{sid: "B" for sid in b_ids}}
    exact = {p: [with_roles(raw_messages(c), roles) for c in clients[p]] for p in PLACES}
    for place in ("flask", "native"):
        for got, reference in zip(exact[place], exact["node"], strict=True):
            assert len(got) == len(reference), f"seed {seed}"
            wrong = [(g, n) for g, n in zip(got, reference, strict=True) if g != n]
            assert not wrong, f"seed {seed}, {place}: {len(wrong)} differ, first {wrong[0]}"
    assert any('"channel":7' in m for m in exact["node"][0]), f"seed {seed}"

    # The instance is fine: alive, healthy, nothing blew up, and it still delivers.
    assert server.proc is not None and server.proc.poll() is None
    assert http_json(server.port, "GET", "/chats/health")[0] == 200
    r.publish("juggernaut", json.dumps({"channels": [channel], "data": "still fine"}))
    for client in clients["flask"]:
        client.wait_data(lambda m: m.get("data") == "still fine")
    for client in clients["native"]:
        native_wait(client, lambda m: m.get("data") == "still fine")
    alice, bob = clients["native"]
    alice.send({"type": "send", "to": "2_User", "message_text": "chat still works", "ref": 1})
    bob.wait_type("message", message_text="chat still works")
    _, metrics = http_json(server.port, "GET", "/metrics")
    assert 'flask_chat_juggernaut_dropped_total{reason="not JSON"}' in metrics
    assert 'flask_chat_juggernaut_dropped_total{reason="not a JSON object"}' in metrics
    assert 'flask_chat_juggernaut_dropped_total{reason="nested too deep"}' in metrics
    assert "Traceback" not in server.read_log()


# -- 7. the rest of the bridge ---------------------------------------------------------


def test_the_mirror_reaches_node_clients_once_and_is_never_echoed(
    stack: LegacyStack, world: World, r: redis.Redis
) -> None:
    server = world.server(CHAT_JUGGERNAUT_MIRROR=True)
    watch = world.watch()
    on_node = world.legacy(stack.jug_port, "/chats/user_2")
    bob = world.native(server, "bob", "/chats/user_2")
    alice = world.native(server, "alice")
    for sid in (on_node.session_id, bob.session_id):
        watch.wait("subscribe", session_id=sid, channel="/chats/user_2")
    wait_for(lambda: r.exists("chat:jug:translator"), what="a translator")

    alice.send({"type": "send", "to": "2_User", "message_text": "mirrored hello", "ref": 1})
    sent = alice.wait_type("ack", ref=1)["message"]
    mirrored = on_node.wait_data(lambda m: isinstance(m.get("data"), dict))
    assert mirrored["data"] == {
        "sender_id": 1,
        "message_text": "mirrored hello",
        "image": "/static/avatars/alice.svg",
        "id": sent["id"],
        "to": "2_User",
        "sent_at": sent["sent_at"],
    }
    assert mirrored["channel"] == "/chats/user_2"
    # Afterwards, a Rails publish: once it is everywhere, nothing else is on its way.
    stack.publish("/chats/user_2", {"sender_id": 3, "message_text": "from rails", "image": None})
    on_node.wait_data(lambda m: m["data"].get("message_text") == "from rails")
    native_wait(bob, lambda m: m["data"].get("message_text") == "from rails")
    bob.wait_type("message", message_text="from rails")
    bob.drain(0.5)
    assert [m["data"]["message_text"] for m in on_node.messages()] == [
        "mirrored hello",
        "from rails",
    ]
    assert [m["data"]["message_text"] for m in jug_frames(bob)] == ["from rails"]  # no echo
    assert [f["message_text"] for f in bob.of_type("message")] == ["mirrored hello", "from rails"]
    texts = history_texts(server.port, "bob")
    assert texts.count("mirrored hello") == 1 and texts.count("from rails") == 1


def test_one_of_two_instances_translates_a_rails_publish(
    stack: LegacyStack, world: World, r: redis.Redis
) -> None:
    one, two = world.server(), world.server()
    world.native(one, "carol")  # starts the hub, hence the translator election, on both
    bob = world.native(two, "bob")
    wait_for(lambda: numsub(r, "juggernaut") == 3, what="three juggernaut subscribers")
    wait_for(lambda: r.exists("chat:jug:translator"), what="a translator")

    for text in ("from rails", "from rails again"):
        report = stack.publish(
            "/chats/user_2", {"sender_id": 1, "message_text": text, "image": None}
        )
        assert report["receivers"] == 3
        message = bob.wait_type("message", message_text=text)
        assert message["sender_id"] == 1 and message["to"] == "2_User"
    bob.drain(0.5)
    assert [f["message_text"] for f in bob.of_type("message")] == ["from rails", "from rails again"]
    for server in (one, two):
        assert history_texts(server.port, "bob") == ["from rails", "from rails again"]


def test_a_killed_instance_sessions_are_unsubscribed_by_a_survivor(
    stack: LegacyStack, world: World
) -> None:
    doomed = world.server(CHAT_PRESENCE_TTL=2)
    survivor = world.server(CHAT_PRESENCE_TTL=2)
    listener = world.listener()
    world.native(survivor, "carol")  # the survivor's hub runs, and with it the reaper
    meta = {"user_id": 3}
    jug = world.legacy(doomed.port, "channel_doomed_1", "channel_doomed_2", meta=meta)
    sid = jug.session_id
    wait_for(lambda: len(listener.events([sid])) == 2, what="two subscribes")
    doomed.kill()
    assert doomed.proc is not None and doomed.proc.returncode == -9
    started = time.monotonic()
    wait_for(lambda: len(listener.events([sid])) >= 4, timeout=20, what="the unsubscribes")
    assert time.monotonic() - started < 20
    # A later event as a marker: nothing more about the dead session came before it.
    marker = world.legacy(survivor.port, "channel_marker")
    listener.wait(lambda e: e.get("data", {}).get("session_id") == marker.session_id)
    events = listener.events([sid])
    assert [(e["event"], e["payload"]) for e in events[2:]] == [
        (
            "unsubscribe",
            json.dumps({"channel": c, "meta": meta, "session_id": sid}, separators=(",", ":")),
        )
        for c in ("channel_doomed_1", "channel_doomed_2")
    ]


def test_rails_sends_through_the_api_with_real_ruby(stack: LegacyStack, world: World) -> None:
    server = world.server(CHAT_API_TOKEN="secret")
    bob = world.native(server, "bob")
    script = os.path.join(ROOT, "docs", "examples", "send_message.rb")

    def send(token: str, text: str) -> tuple[int, dict[str, Any]]:
        env = dict(os.environ, FLASK_CHAT_URL=server.url, FLASK_CHAT_TOKEN=token)
        done = subprocess.run(
            ["ruby", script, "1", "2_User", text],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        out = json.loads(done.stdout)
        assert done.returncode == (0 if out["status"] == 201 else 1), done.stderr
        return out["status"], out["body"]

    status, body = send("secret", "hello from rails ✓")
    assert status == 201 and body["message_text"] == "hello from rails ✓"
    message = bob.wait_type("message", message_text="hello from rails ✓")
    assert message["sender_id"] == 1 and message["id"] == body["id"]
    status, body = send("wrong", "never sent")
    assert status == 401 and body["error"] == "invalid_token"
    bob.drain(0.3)
    assert "never sent" not in history_texts(server.port, "bob")


def test_who_may_subscribe_to_which_legacy_channel(stack: LegacyStack, world: World) -> None:
    server = world.server()
    watch = world.watch()
    anonymous = world.legacy(server.port, "channel1", "/chats/user_2")
    as_bob = world.raw(server.port, login_cookie(server.port, "bob"))  # the page's cookie
    as_bob.send({"type": "subscribe", "channel": "/chats/user_2"})
    alice = world.native(server, "alice", "/chats/user_2")
    assert alice.wait_type("error")["error"] == "forbidden_channel"
    for channel in ("/chats/user_1", "/chats/group_5", "channel1"):
        alice.send({"type": "subscribe", "channel": channel})
        watch.wait("subscribe", session_id=alice.session_id, channel=channel)
    watch.wait("subscribe", session_id=anonymous.session_id, channel="channel1")
    watch.wait("subscribe", session_id=as_bob.session_id, channel="/chats/user_2")

    stack.publish("/chats/user_2", "for bob only")
    stack.publish("channel1", "for everyone")
    as_bob.wait_message(lambda m: m.get("data") == "for bob only")
    anonymous.wait_data(lambda m: m.get("data") == "for everyone")
    native_wait(alice, lambda m: m.get("data") == "for everyone")
    assert data_of(anonymous.messages()) == ["for everyone"]
    assert data_of(jug_frames(alice)) == ["for everyone"]
    refused = [
        e for kind, e in watch.events if kind == "subscribe" and e.get("channel") == "/chats/user_2"
    ]
    assert [e["session_id"] for e in refused] == [as_bob.session_id]  # no event when refused
    _, metrics = http_json(server.port, "GET", "/metrics")
    assert "flask_chat_juggernaut_refused_subscriptions_total 2.0" in metrics
    # Meta and events must be JSON: NaN would reach the gem's listener as invalid JSON.
    alice.ws.send('{"type": "event", "data": NaN}')
    assert alice.wait_type("error", field="data")["error"] == "invalid_field"
    alice.send({"type": "event", "data": {"ok": True}})
    assert watch.wait("custom", session_id=alice.session_id)["data"] == {"ok": True}
    # A native client that leaves is unsubscribed from each channel it was in, once.
    alice.close()
    for channel in ("/chats/user_1", "/chats/group_5", "channel1"):
        assert watch.wait("unsubscribe", session_id=alice.session_id, channel=channel) == {
            "channel": channel,
            "session_id": alice.session_id,
        }
    assert watch.count("unsubscribe", session_id=alice.session_id) == 3


# -- 8. cross-site websocket hijacking -------------------------------------------------

EVIL = "http://evil.example"


def metric(port: int, sample: str) -> float:
    """The value of one sample (``name{labels}``) on ``/metrics``; 0 when absent."""
    _, text = http_json(port, "GET", "/metrics")
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


def cors_headers(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("access-control")}


def test_a_cross_origin_handshake_gets_no_credentialed_cors(
    stack: LegacyStack, world: World
) -> None:
    page = f"http://127.0.0.1:{stack.jug_port}"  # the legacy page, on the Juggernaut port
    server = world.server(CHAT_WS_ALLOWED_ORIGINS=[page])
    bob = login_cookie(server.port, "bob")

    # A page on another site, with the logged-in user's cookie (a browser sends it).
    status, headers, body = sio_get_handshake(server.port, bob, {"Origin": EVIL})
    assert status == 403, body
    assert cors_headers(headers) == {}
    assert json.loads(body)["error"] == "forbidden_origin"
    status, headers, body = sio_get_handshake(server.port, bob, {"Origin": "null"})
    assert status == 403 and cors_headers(headers) == {}
    assert (
        metric(server.port, 'flask_chat_juggernaut_refused_connections_total{reason="origin"}') == 2
    )

    # An allowed page gets its CORS answer (as socket.io 0.8 gave it); no Origin: none.
    status, headers, body = sio_get_handshake(server.port, bob, {"Origin": page})
    assert status == 200, body
    assert cors_headers(headers) == {
        "access-control-allow-origin": page,
        "access-control-allow-credentials": "true",
    }
    assert "Origin" in headers.get("Vary", "")
    status, headers, body = sio_get_handshake(server.port, bob)
    assert status == 200
    assert body.split(":")[1:] == ["15", "25", "websocket,xhr-polling,jsonp-polling"]
    assert cors_headers(headers) == {}


def test_a_cross_origin_websocket_upgrade_is_refused(stack: LegacyStack, world: World) -> None:
    page = f"http://127.0.0.1:{stack.jug_port}"
    server = world.server(CHAT_WS_ALLOWED_ORIGINS=[page])
    bob = login_cookie(server.port, "bob")
    url = f"ws://127.0.0.1:{server.port}/socket.io/1/websocket/"
    for origin in (EVIL, "null", f"http://127.0.0.1:{free_port()}"):  # another port too
        sid = sio_handshake(server.port, bob)
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(url + sid, cookie=bob, origin=origin, timeout=10)
        assert refused.value.status_code == 403
        body = refused.value.resp_body
        assert body is not None and json.loads(body)["error"] == "forbidden_origin"
    assert (
        metric(server.port, 'flask_chat_juggernaut_refused_connections_total{reason="origin"}') == 3
    )
    # The app's own page and an allowed one connect.
    for origin in (f"http://127.0.0.1:{server.port}", page):
        ws = websocket.create_connection(
            url + sio_handshake(server.port, bob), cookie=bob, origin=origin, timeout=10
        )
        try:
            assert ws.recv() == "1::"
        finally:
            ws.close()


def test_the_websocket_is_the_user_of_its_own_cookie_never_of_the_handshake(
    stack: LegacyStack, world: World
) -> None:
    server = world.server()
    watch = world.watch()
    bob = login_cookie(server.port, "bob")
    alice = login_cookie(server.port, "alice")
    # A sid obtained with bob's cookie (by XHR, or by JSONP from any page: a script tag
    # carries the cookie and CORS does not apply), used without it.
    status, _, body = sio_get_handshake(
        server.port, bob, {"Referer": EVIL + "/page"}, query="&jsonp=0"
    )
    assert status == 200 and body.startswith("io.j[0](")
    jsonp_sid = json.loads(body[len("io.j[0](") : -2]).split(":")[0]
    stolen = world.keep(RawSio(server.port, session_id=jsonp_sid))
    without = world.raw(server.port, cookie=bob, upgrade_cookie="")
    as_alice = world.raw(server.port, cookie=bob, upgrade_cookie=alice)
    for client in (stolen, without, as_alice):
        client.send({"type": "subscribe", "channel": "/chats/user_2"})
        client.send({"type": "subscribe", "channel": "channel_public"})
        watch.wait("subscribe", session_id=client.session_id, channel="channel_public")
    as_alice.send({"type": "subscribe", "channel": "/chats/user_1"})
    watch.wait("subscribe", session_id=as_alice.session_id, channel="/chats/user_1")

    stack.publish("/chats/user_2", "for bob only")
    stack.publish("/chats/user_1", "for alice only")
    stack.publish("channel_public", "end")
    for client in (stolen, without, as_alice):
        client.wait_message(is_end("channel_public"))
    assert data_of(stolen.messages()) == ["end"]
    assert data_of(without.messages()) == ["end"]
    assert data_of(as_alice.messages()) == ["for alice only", "end"]
    assert watch.count("subscribe", channel="/chats/user_2") == 0
    assert metric(server.port, "flask_chat_juggernaut_refused_subscriptions_total") == 3


def test_the_real_client_works_from_an_allowed_origin_and_not_from_another(
    stack: LegacyStack, world: World
) -> None:
    page = f"http://127.0.0.1:{stack.jug_port}"  # the legacy page, app on another port
    server = world.server(CHAT_WS_ALLOWED_ORIGINS=[page])
    watch = world.watch()
    bob = login_cookie(server.port, "bob")
    browser = {"Origin": page, "Cookie": bob}
    jug = world.legacy(server.port, "/chats/user_2", "channel_page", headers=browser)
    for channel in ("/chats/user_2", "channel_page"):
        watch.wait("subscribe", session_id=jug.session_id, channel=channel)
    stack.publish("/chats/user_2", {"text": "for bob"})
    assert jug.wait_data(lambda m: True) == {
        "data": {"text": "for bob"},
        "channel": "/chats/user_2",
    }

    # The same page served from another site: the handshake is refused, nothing
    # connects, nothing is subscribed.
    refused = 'flask_chat_juggernaut_refused_connections_total{reason="origin"}'
    world.legacy(
        server.port, "channel_page", headers={"Origin": EVIL, "Cookie": bob}, connect=False
    )
    wait_for(lambda: metric(server.port, refused) >= 1, what="the refused handshake")
    stack.publish("channel_page", "end")
    jug.wait_data(is_end("channel_page"))
    assert watch.count("subscribe", channel="channel_page") == 1


# -- 9. limits on legacy frames ----------------------------------------------------------


def test_subscriptions_over_the_cap_are_dropped_for_legacy_and_refused_for_native(
    stack: LegacyStack, world: World
) -> None:
    server = world.server(CHAT_JUGGERNAUT_MAX_SUBSCRIPTIONS=3)
    watch = world.watch()
    over = 'flask_chat_juggernaut_limited_frames_total{reason="subscriptions"}'
    legacy = world.raw(server.port)
    for n in (1, 2, 2, 3, 4):  # a second subscribe to a channel counts too
        legacy.send({"type": "subscribe", "channel": f"channel_cap_{n}"})
    legacy.send({"type": "event", "data": "marker"})  # frames are handled in order
    watch.wait("custom", session_id=legacy.session_id)
    assert watch.count("subscribe", session_id=legacy.session_id) == 3
    assert watch.count("subscribe", channel="channel_cap_3") == 0
    assert metric(server.port, over) == 2
    stack.publish("channel_cap_3", "dropped")
    stack.publish("channel_cap_1", "end")
    legacy.wait_message(is_end("channel_cap_1"))
    assert data_of(legacy.messages()) == ["end"]
    # Leaving a channel makes room again.
    legacy.send({"type": "unsubscribe", "channel": "channel_cap_2"})
    legacy.send({"type": "subscribe", "channel": "channel_cap_4"})
    watch.wait("subscribe", session_id=legacy.session_id, channel="channel_cap_4")
    assert server.read_log().count("subscription limit") == 1  # logged once

    native = world.native(server, "alice")
    for ref in (1, 2, 3, 4):
        native.send({"type": "subscribe", "channel": f"channel_cap_{ref}", "ref": ref})
    error = native.wait_type("error", ref=4)
    assert error["error"] == "too_many_subscriptions" and error["field"] == "channel"
    for channel in ("channel_cap_1", "channel_cap_2", "channel_cap_3"):
        watch.wait("subscribe", session_id=native.session_id, channel=channel)
    native.send({"type": "ping"})
    native.wait_type("pong")
    assert len(native.of_type("error")) == 1
    assert watch.count("subscribe", session_id=native.session_id) == 3
    assert metric(server.port, over) == 3


def test_a_flood_of_legacy_frames_is_rate_limited(stack: LegacyStack, world: World) -> None:
    server = world.server(CHAT_JUGGERNAUT_FRAME_RATE=1, CHAT_JUGGERNAUT_FRAME_BURST=5)
    watch = world.watch()
    limited = 'flask_chat_juggernaut_limited_frames_total{reason="rate"}'
    legacy = world.raw(server.port)
    started = time.monotonic()
    for n in range(200):
        legacy.send({"type": "event", "data": n})
    wait_for(
        lambda: (
            watch.count("custom", session_id=legacy.session_id) + metric(server.port, limited)
            == 200
        ),
        timeout=30,
        what="every event frame handled",
    )
    elapsed = time.monotonic() - started
    published = watch.count("custom", session_id=legacy.session_id)
    assert 5 <= published <= 5 + elapsed * 1 + 1
    assert server.read_log().count("frame rate limit") == 1  # logged once

    # A native client's frames over the limit get an error frame with their ref; an
    # unsubscribe is never limited (dropping it would leave the client subscribed).
    native = world.native(server, "alice")
    native.send({"type": "subscribe", "channel": "channel_rate", "ref": 0})
    watch.wait("subscribe", session_id=native.session_id, channel="channel_rate")
    for ref in range(1, 11):
        native.send({"type": "event", "data": ref, "ref": ref})
    native.send({"type": "unsubscribe", "channel": "channel_rate", "ref": 11})
    watch.wait("unsubscribe", session_id=native.session_id, channel="channel_rate")
    native.send({"type": "ping"})
    native.wait_type("pong")
    errors = native.of_type("error")
    assert errors and {e["error"] for e in errors} == {"rate_limited"}
    assert all(isinstance(e["ref"], int) and 5 <= e["ref"] <= 10 for e in errors)
    sent = [
        e["data"]
        for kind, e in watch.events
        if kind == "custom"
        and e.get("data") in range(1, 11)
        and e["session_id"] == native.session_id
    ]
    assert len(sent) + len(errors) == 10


def test_a_subscribe_writes_one_channel_to_the_roster_not_all_of_them(
    stack: LegacyStack, world: World, r: redis.Redis
) -> None:
    server = world.server()
    watch = world.watch()
    legacy = world.raw(server.port)
    names = [f"channel_{n}_" + "x" * 1000 for n in range(61)]
    for name in names[:60]:
        legacy.send({"type": "subscribe", "channel": name})
    wait_for(
        lambda: watch.count("subscribe", session_id=legacy.session_id) == 60, what="60 subscribes"
    )
    before = int(r.info("stats")["total_net_input_bytes"])
    legacy.send({"type": "subscribe", "channel": names[60]})
    watch.wait("subscribe", session_id=legacy.session_id, channel=names[60])
    written = int(r.info("stats")["total_net_input_bytes"]) - before
    # The publish of the event and the one new channel: a few kB, not all 61 names.
    assert written < 8_000, written


def run_roster_script(client: RawSio) -> None:
    """Subscriptions with every twist: duplicates, no channel, "undefined" by name, a
    channel left and joined again, one left for good, meta set, changed and kept."""
    for frame in (
        {"type": "meta", "data": {"v": 1}},
        {"type": "subscribe", "channel": "channel_ro_a"},
        {"type": "subscribe", "channel": "channel_ro_b"},
        {"type": "subscribe", "channel": "channel_ro_a"},
        {"type": "subscribe"},
        {"type": "subscribe", "channel": "undefined"},
        {"type": "unsubscribe", "channel": "channel_ro_a"},
        {"type": "subscribe", "channel": "channel_ro_a"},
        {"type": "subscribe", "channel": "channel_ro_c"},
        {"type": "unsubscribe", "channel": "channel_ro_c"},
        {"type": "meta", "data": {"v": 2, "name": "é ✓"}},
        {"type": "subscribe", "channel": "channel_ro_d"},
        {"type": "subscribe", "channel": "channel_ro_\ud800 é"},  # a lone surrogate
        {"type": ["subscribe"], "channel": "channel_ro_e"},  # no type: ignored
        {"type": {"subscribe": 1}, "channel": "channel_ro_e"},
        {"type": "event", "data": "script done"},
    ):
        client.send(frame)


def test_the_reaper_publishes_the_unsubscribes_a_disconnect_publishes(
    stack: LegacyStack, world: World
) -> None:
    doomed = world.server(
        CHAT_PRESENCE_TTL=2, CHAT_LEGACY_PUBLIC_CHANNELS=["channel*", "undefined"]
    )
    survivor = world.server(
        CHAT_PRESENCE_TTL=2, CHAT_LEGACY_PUBLIC_CHANNELS=["channel*", "undefined"]
    )
    world.native(survivor, "carol")  # the survivor's hub runs, and with it the reaper
    watch = world.watch()
    dies, leaves = world.raw(doomed.port), world.raw(survivor.port)
    for client in (dies, leaves):
        run_roster_script(client)
        watch.wait("custom", session_id=client.session_id, data="script done")
    leaves.abort()
    doomed.kill()
    wait_for(
        lambda: watch.count("unsubscribe", session_id=dies.session_id) >= 5,
        timeout=20,
        what="the reaper's unsubscribes",
    )
    # A later event as a marker: nothing more about the dead session came before it.
    marker = world.raw(survivor.port)
    marker.send({"type": "event", "data": "marker"})
    watch.wait("custom", session_id=marker.session_id)

    def unsubscribes(sid: str) -> list[str]:
        return [
            protocol.dumps(e).replace(sid, "S")
            for kind, e in watch.events
            if kind == "unsubscribe" and e["session_id"] == sid
        ]

    meta = {"v": 2, "name": "é ✓"}
    expected = [
        {"channel": "channel_ro_b", "meta": meta, "session_id": "S"},
        {"meta": meta, "session_id": "S"},
        {"channel": "channel_ro_a", "meta": meta, "session_id": "S"},
        {"channel": "channel_ro_d", "meta": meta, "session_id": "S"},
        {"channel": "channel_ro_\ud800 é", "meta": meta, "session_id": "S"},
    ]
    assert unsubscribes(leaves.session_id)[-5:] == [protocol.dumps(e) for e in expected]
    assert unsubscribes(dies.session_id) == unsubscribes(leaves.session_id)


def test_the_reaper_reads_the_roster_entries_of_the_previous_release(
    stack: LegacyStack, world: World, r: redis.Redis
) -> None:
    survivor = world.server(CHAT_PRESENCE_TTL=2)
    watch = world.watch()
    # As the previous release wrote a session's entry: its channels in one JSON list.
    r.hset(
        "chat:jug:session:1234567890123456789",
        mapping={
            "channels": json.dumps(["channel_old", None, "channel_old", "channel_other"]),
            "meta": json.dumps({"user_id": 3}),
        },
    )
    r.zadd("chat:jug:sessions", {"1234567890123456789": time.time() - 1})
    world.native(survivor, "carol")  # the hub runs, and with it the reaper
    wait_for(
        lambda: watch.count("unsubscribe", session_id="1234567890123456789") == 3,
        timeout=20,
        what="the old session's unsubscribes",
    )
    assert [e for kind, e in watch.events if kind == "unsubscribe"] == [
        {"channel": "channel_old", "meta": {"user_id": 3}, "session_id": "1234567890123456789"},
        {"meta": {"user_id": 3}, "session_id": "1234567890123456789"},
        {"channel": "channel_other", "meta": {"user_id": 3}, "session_id": "1234567890123456789"},
    ]
    assert not r.exists("chat:jug:session:1234567890123456789")


def test_logout_ends_the_users_legacy_connections(stack: LegacyStack, world: World) -> None:
    """A logged-in legacy connection reads private channels: logging out must end it,
    as it ends the user's native connections; other users' stay."""
    server = world.server()
    watch = world.watch()
    alice_cookie = login_cookie(server.port, "alice")
    alice = world.raw(server.port, cookie=alice_cookie)
    bob = world.raw(server.port, cookie=login_cookie(server.port, "bob"))
    alice.send({"type": "subscribe", "channel": "/chats/user_1"})
    bob.send({"type": "subscribe", "channel": "/chats/user_2"})
    watch.wait("subscribe", session_id=alice.session_id, channel="/chats/user_1")
    watch.wait("subscribe", session_id=bob.session_id, channel="/chats/user_2")
    assert logout_over_http(server.port, alice_cookie) == 302
    # Juggernaut's own unsubscribe event tells Rails listeners the session is gone.
    watch.wait("unsubscribe", session_id=alice.session_id, channel="/chats/user_1")
    stack.publish("/chats/user_1", "for alice only")
    stack.publish("/chats/user_2", "for bob")
    bob.wait_message(lambda m: m.get("data") == "for bob")
    assert "for alice only" not in data_of(alice.messages())


def test_malformed_legacy_upgrades_are_4xx(stack: LegacyStack, world: World) -> None:
    import http.client

    server = world.server()
    for headers, status in (
        ({"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "8"}, 426),
        ({"Sec-WebSocket-Version": "13"}, 400),
    ):
        sid = sio_handshake(server.port)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            conn.request("GET", f"/socket.io/1/websocket/{sid}",
                         headers={"Upgrade": "websocket", "Connection": "Upgrade", **headers})
            assert conn.getresponse().status == status
        finally:
            conn.close()


# -- 10. a legacy fleet, exactly ---------------------------------------------------------


def test_an_idle_instance_translates_a_rails_publish_made_before_any_browser_connected(
    stack: LegacyStack, world: World, r: redis.Redis
) -> None:
    """The hub (and with it ``juggernaut`` and the translator) starts with the server,
    not with its first websocket: nobody has connected to this instance yet."""
    server = world.server()
    wait_for(lambda: numsub(r, "juggernaut") == 2, what="Node and the instance on juggernaut")
    report = stack.publish(
        "/chats/user_2", {"sender_id": 1, "message_text": "before any browser", "image": None}
    )
    assert report["receivers"] == 2
    wait_for(
        lambda: history_texts(server.port, "bob") == ["before any browser"],
        timeout=15,
        what="the translated message in bob's history",
    )
    assert history_texts(server.port, "alice") == ["before any browser"]
    assert metric(server.port, "flask_chat_juggernaut_translated_total") == 1
    assert metric(server.port, "flask_chat_connects_total") == 0  # still nobody connected


def test_a_gunicorn_worker_translates_a_rails_publish_made_before_any_browser_connected(
    stack: LegacyStack, world: World, r: redis.Redis
) -> None:
    """The same under gunicorn: ``examples/gunicorn.conf.py`` starts each worker's hub
    when the worker has loaded the app."""
    server = world.keep(Gunicorn(stack.redis_url)).start()
    wait_for(lambda: numsub(r, "juggernaut") == 2, what="Node and the worker on juggernaut")
    stack.publish(
        "/chats/user_2", {"sender_id": 3, "message_text": "before any browser", "image": None}
    )
    wait_for(
        lambda: history_texts(server.port, "bob") == ["before any browser"],
        timeout=15,
        what="the translated message in bob's history",
    )


def test_an_integer_channel_is_delivered_as_node_delivers_it(
    stack: LegacyStack, world: World, r: redis.Redis
) -> None:
    """``Juggernaut.publish(42, ...)`` goes to the channel "42", and its browsers get
    ``"channel":42``, a number; Node looks every listed channel up by String(value)."""
    server = world.server(CHAT_LEGACY_PUBLIC_CHANNELS=["*"])
    watch = world.watch()
    names = ["42", "null", "1.5", "true", "a,b", "[object Object]", "12345678901234567000"]
    clients = [
        world.legacy(stack.jug_port, *names, raw=True),
        world.legacy(server.port, *names, raw=True),
        world.native(server, "bob", *names),
    ]
    for client in clients:
        wait_subscribed(watch, client, len(names))

    report = stack.publish([42], "Juggernaut.publish(42, ...)")  # the gem: Array(42)
    assert report["payload"] == '{"channels":[42],"data":"Juggernaut.publish(42, ...)"}'
    stack.publish([42, "42"], {"n": 1}, options={"type": "notice"})
    r.publish(
        "juggernaut",
        '{"channels":[4.2e1,null,1.5,true,["a","b"],{"k":1},12345678901234567890,[]],'
        '"data":"odd channels"}',
    )
    stack.publish("42", "end")
    for client in clients:
        until(client, lambda got: any(m.get("data") == "end" for m in got))
    reference = raw_messages(clients[0])
    assert reference == [
        '{"data":"Juggernaut.publish(42, ...)","channel":42}',
        '{"data":{"n":1},"type":"notice","channel":42}',
        '{"data":{"n":1},"type":"notice","channel":"42"}',
        '{"data":"odd channels","channel":42}',
        '{"data":"odd channels","channel":null}',
        '{"data":"odd channels","channel":1.5}',
        '{"data":"odd channels","channel":true}',
        '{"data":"odd channels","channel":["a","b"]}',
        '{"data":"odd channels","channel":{"k":1}}',
        '{"data":"odd channels","channel":12345678901234567000}',
        '{"data":"end","channel":"42"}',
    ]
    assert raw_messages(clients[1]) == reference
    assert raw_messages(clients[2]) == reference


# Documents whose JSON Node rewrites: numbers (JavaScript's Number-to-String, doubles
# only) and integer-like keys (V8 puts array indices first, ascending).
NUMBER_CORPUS: list[str] = [
    '{"x":1.0,"y":-2.0,"z":123.0,"w":0.5}',
    '{"small":[1e-7,1.5e-7,-1e-7,2e-6,1e-6,0.000001,1e-5,0.0001,5e-324,2.2250738585072014e-308]}',
    '{"big":[1e16,1e20,1e21,1.5e21,1e22,1.7976931348623157e308,123456789012345.0,2e15]}',
    '{"ints":[9007199254740991,9007199254740992,9007199254740993,12345678901234567890,'
    '18446744073709551616,-123456789012345678,100000000000000000000,1000000000000000000000]}',
    '{"zeros":[0,-0,0.0,-0.0,0e10,-0e-10],"exp":[1E3,1e+3,2.5E-3,1e0]}',
    '{"2":"b","1":"a","0":"z","b":1,"10":"ten","9":"nine","a":2}',
    '{"4294967295":1,"4294967294":2,"01":3,"-1":4,"1.5":5,"1e3":6," 1":7,"":8,"00":9}',
    '{"nested":{"3":{"2":[{"1":1.0,"0":1e-7}]},"k":"v","1":true}}',
    '{"1":1,"1":2,"0":0}',
    '[{"1":1.10,"0":100.0}]',
]


def test_frames_and_events_are_nodes_bytes_for_numbers_and_integer_like_keys(
    stack: LegacyStack, world: World, r: redis.Redis
) -> None:
    server = world.server()
    watch = world.watch()
    channel = "channel_numbers"
    clients = [
        world.legacy(stack.jug_port, channel, raw=True),
        world.legacy(server.port, channel, raw=True),
        world.native(server, "bob", channel),
    ]
    for client in clients:
        watch.wait("subscribe", session_id=client.session_id, channel=channel)
    for doc in NUMBER_CORPUS:
        r.publish("juggernaut", f'{{"channels":["{channel}"],"data":{doc},"2":1.0,"1":1e-7}}')
    # The real gem too: Ruby writes 1.0 and 1.0e-07, Node rewrites them.
    stack.publish(channel, {"f": 1.0, "e": 1e-7, "big": 2**64, "3": "c", "1": "a"})
    stack.publish(channel, "end")
    for client in clients:
        until(client, lambda got: any(m.get("data") == "end" for m in got))
    reference = raw_messages(clients[0])
    assert len(reference) == len(NUMBER_CORPUS) + 2
    assert reference[0] == (
        '{"1":1e-7,"2":1,"data":{"x":1,"y":-2,"z":123,"w":0.5},"channel":"channel_numbers"}'
    )
    assert raw_messages(clients[1]) == reference
    assert raw_messages(clients[2]) == reference

    # The events Node publishes back, byte for byte: meta and custom data are read from
    # the client's frame and written again by JSON.stringify.
    def events(port: int) -> list[str]:
        client = world.raw(port)
        client.send('{"type":"meta","data":{"2":2.0,"1":1e-7,"id":12345678901234567890}}')
        client.send({"type": "subscribe", "channel": "channel_numbers_ev"})
        for doc in NUMBER_CORPUS:
            client.send(f'{{"type":"event","data":{doc}}}')
        client.send({"type": "event", "data": "done"})
        watch.wait("custom", session_id=client.session_id, data="done")
        sid = client.session_id
        return [
            payload.replace(sid, "S")
            for (kind, data), payload in zip(watch.events, watch.payloads, strict=True)
            if data.get("session_id") == sid
        ]

    from_node = events(stack.jug_port)
    assert from_node[0] == (
        '{"channel":"channel_numbers_ev","meta":{"1":1e-7,"2":2,"id":12345678901234567000},'
        '"session_id":"S"}'
    )
    assert len(from_node) == len(NUMBER_CORPUS) + 2
    assert events(server.port) == from_node


class _ProxiedRedis:
    """A Redis that can be restarted (losing every key) behind a TCP proxy that can be
    taken down: the instance sees an outage, the test's own clients do not."""

    def __init__(self) -> None:
        self.redis = Restartable(free_port())
        self.url = self.redis.start()
        self.proxy = TcpProxy("127.0.0.1", self.redis.port)
        self.proxy.up()
        self.proxied_url = f"redis://127.0.0.1:{self.proxy.port}/0"

    def close(self) -> None:
        self.proxy.down()
        self.redis.stop()


def test_sessions_from_before_a_redis_restart_are_unsubscribed(
    stack: LegacyStack, world: World
) -> None:
    """A restarted Redis has lost the legacy roster: the instance writes it again from
    its live sessions when its hub resubscribes, so every session that ends later still
    gets its unsubscribes, and one that ended during the outage gets them then."""
    backend = world.keep(_ProxiedRedis())
    server = world.server(backend.proxied_url, CHAT_PRESENCE_TTL=2)
    watch = EventWatch(backend.url)
    stays, leaves = world.raw(server.port), world.raw(server.port)
    try:
        stays.send({"type": "meta", "data": {"user_id": 7}})
        for channel in ("channel_rr_1", "channel_rr_2"):
            stays.send({"type": "subscribe", "channel": channel})
            watch.wait("subscribe", session_id=stays.session_id, channel=channel)
        leaves.send({"type": "subscribe", "channel": "channel_rr_3"})
        watch.wait("subscribe", session_id=leaves.session_id, channel="channel_rr_3")
    finally:
        watch.close()

    backend.proxy.down()  # the instance loses Redis...
    backend.redis.restart()  # ...which comes back empty
    leaves.abort()  # a session ends while the instance cannot reach Redis
    wait_for(
        lambda: metric(server.port, "flask_chat_connections") == 1,
        what="the instance to see the session end",
    )
    watch = world.watch(backend.url)
    backend.proxy.up()
    r = world.keep(redis.Redis.from_url(backend.url, decode_responses=True))
    deadline = time.monotonic() + 30
    n = 0
    while True:  # publish until delivery is back: the hub has resubscribed
        n += 1
        r.publish("juggernaut", json.dumps({"channels": ["channel_rr_1"], "data": n}))
        try:
            stays.wait_message(lambda m: isinstance(m.get("data"), int), timeout=0.5)
            break
        except AssertionError:
            assert time.monotonic() < deadline, "delivery did not come back after Redis"
    assert watch.wait("unsubscribe", session_id=leaves.session_id) == {
        "channel": "channel_rr_3",
        "session_id": leaves.session_id,
    }
    wait_for(
        lambda: r.zscore("chat:jug:sessions", stays.session_id) is not None,
        what="the roster written again",
    )
    stays.abort()  # a session from before the restart ends
    for channel in ("channel_rr_1", "channel_rr_2"):
        assert watch.payload_of("unsubscribe", session_id=stays.session_id, channel=channel) == (
            f'{{"channel":"{channel}","meta":{{"user_id":7}},"session_id":"{stays.session_id}"}}'
        )
    wait_for(lambda: not r.exists(f"chat:jug:session:{stays.session_id}"), what="no entry left")
    assert watch.count("unsubscribe") == 3


def test_a_publish_of_several_megabytes_reaches_healthy_clients(
    stack: LegacyStack, world: World, r: redis.Redis
) -> None:
    """One frame over CHAT_WS_MAX_QUEUE_BYTES (1 MiB) does not make a client slow."""
    server = world.server()
    watch = world.watch()
    channel = "channel_large"
    clients = [
        world.legacy(stack.jug_port, channel),
        world.legacy(server.port, channel),
        world.native(server, "bob", channel),
    ]
    for client in clients:
        watch.wait("subscribe", session_id=client.session_id, channel=channel)
    big = "é✓ large " * 400_000  # 4.8 MB of UTF-8
    for n in range(2):  # twice in a row: the second queues behind the first
        r.publish("juggernaut", json.dumps({"channels": [channel], "data": {"n": n, "text": big}},
                                           ensure_ascii=False))
    r.publish("juggernaut", json.dumps({"channels": [channel], "data": "end"}))
    for client in clients:
        until(client, lambda got: any(m.get("data") == "end" for m in got), timeout=60)
        assert legacy_messages(client) == [
            {"data": {"n": 0, "text": big}, "channel": channel},
            {"data": {"n": 1, "text": big}, "channel": channel},
            {"data": "end", "channel": channel},
        ]
    for jug in clients[:2]:
        assert [m["event"] for m in jug.snapshot() if "connect" in m.get("event", "")] == [
            "connect"
        ]
    native = clients[2]
    native.send({"type": "ping"})
    native.wait_type("pong")
    assert metric(server.port, "flask_chat_slow_client_disconnects_total") == 0


def test_a_legacy_message_over_the_cap_is_dropped_and_native_clients_are_told(
    stack: LegacyStack, world: World, r: redis.Redis
) -> None:
    server = world.server(CHAT_JUGGERNAUT_MAX_MESSAGE_BYTES=100_000)
    watch = world.watch()
    legacy = world.legacy(server.port, "channel_cap")
    native = world.native(server, "bob", "channel_cap")
    excluded = world.native(server, "alice", "channel_cap")
    for client in (legacy, native, excluded):
        watch.wait("subscribe", session_id=client.session_id, channel="channel_cap")
    r.publish(
        "juggernaut",
        json.dumps({"channels": ["channel_cap"], "data": "x" * 100_000,
                    "except": excluded.session_id}),
    )
    r.publish("juggernaut", json.dumps({"channels": ["channel_cap"], "data": "x" * 99_900}))
    r.publish("juggernaut", json.dumps({"channels": ["channel_cap"], "data": "end"}))
    for client in (legacy, native, excluded):
        until(client, lambda got: any(m.get("data") == "end" for m in got))
        assert data_of(legacy_messages(client)) == ["x" * 99_900, "end"]
    error = native.wait_type("error", error="message_too_large")
    assert error["channel"] == "channel_cap" and error["bytes"] > 100_000
    assert not excluded.of_type("error")  # it was not to get that one anyway
    dropped = 'flask_chat_juggernaut_dropped_total{reason="too large"}'
    assert metric(server.port, dropped) == 1
    assert "dropped a legacy message of" in server.read_log()


def test_a_client_that_does_not_read_is_still_cut_however_large_the_frames(
    stack: LegacyStack, world: World
) -> None:
    """The budget follows the frames, not the client: one that stops reading is cut
    while the others get everything (on a Redis of its own: Node is spared 40 MB)."""
    import socket as socketlib

    redis_server = world.keep(Restartable(free_port()))
    url = redis_server.start()
    server = world.server(url)
    watch = world.watch(url)
    healthy = world.native(server, "alice", "channel_flood")
    slow = world.keep(
        Client(
            server.port,
            login_cookie(server.port, "bob"),
            sockopt=((socketlib.SOL_SOCKET, socketlib.SO_RCVBUF, 4096),),
        )
    )
    slow.wait_type("hello")
    slow.send({"type": "subscribe", "channel": "channel_flood"})
    for client in (healthy, slow):
        client_id = client.wait_type("hello")["connection_id"]
        watch.wait("subscribe", session_id=client_id, channel="channel_flood")
    r = world.keep(redis.Redis.from_url(url))
    chunk = "z" * 2_000_000
    for n in range(20):  # 40 MB, each one once the healthy client has the one before
        r.publish("juggernaut", json.dumps({"channels": ["channel_flood"], "data": [n, chunk]}))
        until(healthy, lambda got, n=n: len(got) == n + 1, timeout=60)
    assert [m["data"][0] for m in jug_frames(healthy)] == list(range(20))
    wait_for(
        lambda: metric(server.port, "flask_chat_slow_client_disconnects_total") == 1,
        what="the slow client cut",
    )
