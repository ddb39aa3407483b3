"""flask-chat behind real HAProxy: ``examples/haproxy.cfg`` in front of two real instances.

The config HAProxy runs here is the example itself, read from ``examples/haproxy.cfg``
with only what a test must change: its ports, the two instances' addresses, short
health-check intervals and no privileged global settings. Round robin, no stickiness:
any instance serves any user, pub/sub and presence go through one Redis, and a client
whose instance dies reconnects through HAProxy and catches up without losing anything.

Needs the ``haproxy`` binary (``apt-get install haproxy``): without it the module is
skipped, unless ``CHAT_TEST_REQUIRE_ALL=1`` (CI), which makes that a failure.
"""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import IO, Any

import pytest
import websocket
from helpers import (
    ROOT,
    Client,
    DemoServer,
    csrf_session,
    free_port,
    http_json,
    knows_online,
    login_cookie,
    port_open,
    presence,
    wait_for,
)

from flask_chat.extension import DEFAULTS

# Debian and Ubuntu install it in /usr/sbin, which is not on every user's PATH.
HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/local/sbin:/usr/sbin")
REQUIRED = os.environ.get("CHAT_TEST_REQUIRE_ALL") == "1"
EXAMPLE = os.path.join(ROOT, "examples", "haproxy.cfg")
BACKEND = "flask_chat"

if HAPROXY is None and not REQUIRED:
    pytest.skip(
        "the haproxy binary is not installed (apt-get install haproxy); "
        "set CHAT_TEST_REQUIRE_ALL=1 to make this a failure",
        allow_module_level=True,
    )


def haproxy_binary() -> str:
    if HAPROXY is None:
        pytest.fail(
            "CHAT_TEST_REQUIRE_ALL=1 but the haproxy binary is not installed "
            "(apt-get install haproxy)",
            pytrace=False,
        )
    return HAPROXY


# -- the config: the example, adapted --------------------------------------------------


def _sub_once(pattern: str, repl: str, text: str) -> str:
    """Substitute exactly one match: if the example changes shape, fail loudly here
    rather than quietly test something else."""
    new, count = re.subn(pattern, repl, text, flags=re.M)
    assert count == 1, f"examples/haproxy.cfg: expected one match of {pattern!r}, got {count}"
    return new


def make_config(port: int, stats_port: int, servers: list[tuple[str, int]]) -> str:
    """``examples/haproxy.cfg`` for this test: own ports, these instances, fast checks."""
    with open(EXAMPLE) as f:
        text = f.read()
    # Nothing that needs root or leaves files behind; HAProxy runs with -db.
    text = re.sub(
        r"^[ \t]*(daemon|user|group|chroot|pidfile|stats socket)\b.*\n", "", text, flags=re.M
    )
    text = _sub_once(r"^([ \t]*bind )\*?:8000\b", rf"\g<1>127.0.0.1:{port}", text)
    text = _sub_once(r"^([ \t]*bind )127\.0\.0\.1:8404\b", rf"\g<1>127.0.0.1:{stats_port}", text)
    # A dead instance is marked down after two failed checks 500 ms apart.
    text = _sub_once(
        r"^([ \t]*default-server .*)\binter \S+ fall \d+ rise \d+",
        r"\g<1>inter 500ms fall 2 rise 1",
        text,
    )
    lines = re.findall(r"^[ \t]*server \S+ 127\.0\.0\.1:\d+ check\b.*$", text, flags=re.M)
    assert len(lines) >= 2, "examples/haproxy.cfg: expected two or more server lines"
    indent = lines[0][: len(lines[0]) - len(lines[0].lstrip())]
    ours = "\n".join(f"{indent}server {name} 127.0.0.1:{p} check" for name, p in servers)
    text = text.replace(lines[0], ours, 1)
    for line in lines[1:]:
        text = text.replace(line + "\n", "", 1)
    return text


def timeouts(text: str) -> dict[str, float]:
    """The ``timeout`` settings of a config, in seconds."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, "": 1e-3}
    found = {}
    for name, value, unit in re.findall(
        r"^[ \t]*timeout (\S+) (\d+)([a-z]*)[ \t]*$", text, flags=re.M
    ):
        found[name] = int(value) * units[unit]
    return found


def test_the_example_is_valid_and_websocket_friendly() -> None:
    binary = haproxy_binary()
    check = subprocess.run(
        [binary, "-c", "-f", EXAMPLE], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "WARNING" not in check.stdout + check.stderr, check.stdout + check.stderr
    with open(EXAMPLE) as f:
        text = f.read()
    config = "\n".join(line.split("#", 1)[0].rstrip() for line in text.splitlines())
    assert re.search(r"^\s*balance roundrobin$", config, re.M)
    assert re.search(r"^\s*option httpchk GET /chats/health$", config, re.M)
    # No stickiness of any kind: no cookie persistence, stick tables or hashing.
    for sticky in (
        r"^\s*cookie\b",
        r"^\s*stick\b",
        r"\bbalance (source|uri|url_param|hdr|rdp-cookie)",
    ):
        assert not re.search(sticky, config, re.M), sticky
    assert not re.search(r"^\s*server .*\bcookie\b", config, re.M)
    # No inactivity timeout that applies to a websocket may cut it between two pings.
    ping = DEFAULTS["CHAT_PING_INTERVAL"]
    found = timeouts(config)
    for name in ("tunnel", "client", "server"):
        assert found[name] >= 2 * ping, (name, found[name], ping)
    assert found["tunnel"] >= 3600
    for name in ("connect", "http-request", "http-keep-alive", "client-fin", "server-fin"):
        assert name in found, name


# -- the cluster: two instances on one Redis, HAProxy in front --------------------------


class Cluster:
    """Two ``examples/serve.py`` instances and HAProxy, all real processes."""

    def __init__(self, redis_url: str, workdir: str, **settings: Any) -> None:
        self.redis_url = redis_url
        self.workdir = workdir
        self.settings = settings
        self.servers: list[DemoServer] = []
        self.names: dict[int, str] = {}  # instance port -> HAProxy server name
        self.port = free_port()
        self.stats_port = free_port()
        self.proxy: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(workdir, "haproxy.log")
        self.log: IO[bytes] | None = None
        self.clients: list[Client] = []
        self.placed: dict[int, DemoServer] = {}  # id(client) -> its instance
        self._cookies: dict[str, str] = {}
        self.secret_key = secrets.token_hex(32)

    def start(self) -> Cluster:
        for i in range(2):
            # One key for both, as haproxy.cfg says: either instance reads the sessions.
            server = DemoServer(self.redis_url, SECRET_KEY=self.secret_key, **self.settings)
            self.servers.append(server)
            server.start()
            self.names[server.port] = f"chat{i + 1}"
        cfg = os.path.join(self.workdir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(
                make_config(
                    self.port, self.stats_port, [(self.names[s.port], s.port) for s in self.servers]
                )
            )
        self.log = open(self.log_path, "wb")
        self.proxy = subprocess.Popen(
            [haproxy_binary(), "-f", cfg, "-db"], stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_for(
            lambda: (
                self.proxy.poll() is not None
                or (port_open(self.port) and port_open(self.stats_port))
            ),
            timeout=30,
            what="HAProxy to listen",
        )
        assert self.proxy.poll() is None, f"HAProxy exited: {self.haproxy_log()}"
        wait_for(
            lambda: all(s == "UP" for s in self.server_status().values()),
            timeout=30,
            what="HAProxy to see both instances up",
        )
        return self

    def close(self) -> None:
        """Everything this cluster started, in order: clients, HAProxy, instances."""
        try:
            for client in self.clients:
                client.close()
        finally:
            try:
                self._stop_proxy()
            finally:
                for server in self.servers:
                    server.stop()
                    if server.output.strip():
                        print(f"--- instance on port {server.port}\n{server.output}")

    def _stop_proxy(self) -> None:
        try:
            if self.proxy is not None and self.proxy.poll() is None:
                self.proxy.terminate()
                try:
                    self.proxy.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proxy.kill()
                    self.proxy.wait(timeout=20)
        finally:
            if self.log is not None:
                self.log.close()
                print(f"--- HAProxy log\n{self.haproxy_log()}")  # shown if the test failed

    def haproxy_log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    # -- what HAProxy and the instances report ---------------------------------------

    def server_status(self) -> dict[str, str]:
        """HAProxy's view of each instance ("UP", "DOWN", ...), from its stats page."""
        status, text = http_json(self.stats_port, "GET", "/stats;csv")
        assert status == 200, text
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def alive(self) -> list[DemoServer]:
        return [s for s in self.servers if s.proc is not None and s.proc.poll() is None]

    def connections(self) -> dict[int, int]:
        """Open websockets per live instance (port -> count), from each one's health."""
        counts = {}
        for server in self.alive():
            status, health = http_json(server.port, "GET", "/chats/health")
            assert status == 200, health
            counts[server.port] = health["connections"]
        return counts

    def other(self, server: DemoServer) -> DemoServer:
        (other,) = [s for s in self.servers if s is not server]
        return other

    def where(self, client: Client) -> DemoServer:
        return self.placed[id(client)]

    # -- clients, always through HAProxy ---------------------------------------------

    def cookie(self, name: str) -> str:
        """A session cookie, logged in through HAProxy (so on either instance)."""
        if name not in self._cookies:
            self._cookies[name] = login_cookie(self.port, name)
        return self._cookies[name]

    def _landed(self, before: dict[int, int]) -> DemoServer | None:
        """The instance that has exactly one more websocket than ``before``."""
        now = self.connections()
        grew = [p for p in now if now[p] == before.get(p, 0) + 1]
        if len(grew) == 1 and all(now[p] == before.get(p, 0) for p in now if p not in grew):
            return next(s for s in self.servers if s.port == grew[0])
        return None

    def connect(self, name: str, on: DemoServer | None = None) -> Client:
        """A websocket through HAProxy, on instance ``on`` if given: a connection that
        landed elsewhere is closed and made again (round robin: the next one lands on
        the other instance)."""
        for _ in range(6):
            before = self.connections()
            client = Client(self.port, self.cookie(name))
            self.clients.append(client)
            client.wait_type("hello")
            client.wait_type("online")
            server = wait_for(lambda b=before: self._landed(b), what=f"where {name} landed")
            if on is None or server is on:
                self.placed[id(client)] = server
                return client
            client.close()
            self.clients.remove(client)
            wait_for(lambda b=before: self.connections() == b, what="the extra connection to close")
        raise AssertionError(f"could not place {name} on port {on and on.port}")

    def reconnect(self, name: str, query: str = "", timeout: float = 30) -> Client:
        """Connect through HAProxy, retrying until it works (as a browser would)."""

        def attempt() -> Client | None:
            try:
                client = Client(self.port, self.cookie(name), query)
            except (websocket.WebSocketException, OSError):
                return None  # refused while HAProxy still counts a dead instance
            self.clients.append(client)
            return client

        return wait_for(attempt, timeout=timeout, interval=0.1, what=f"{name} to reconnect")


@pytest.fixture
def cluster(redis_url: str, tmp_path: Any) -> Iterator[Callable[..., Cluster]]:
    haproxy_binary()
    made: list[Cluster] = []

    def make(**settings: Any) -> Cluster:
        one = Cluster(redis_url, str(tmp_path / f"cluster{len(made)}"), **settings)
        os.makedirs(one.workdir)
        made.append(one)
        return one.start()

    yield make
    for one in made:
        one.close()


# -- frame helpers ------------------------------------------------------------------------


def wait_from(
    client: Client,
    start: int,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 30,
    what: str = "a frame",
) -> int:
    """Index of the first frame at or after ``start`` (received or arriving) that
    matches: earlier frames (from before some event) are not looked at."""
    deadline = time.monotonic() + timeout
    seen = start
    while True:
        for i in range(seen, len(client.frames)):
            if predicate(client.frames[i]):
                return i
        seen = max(seen, len(client.frames))
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {what}; got {client.frames[start:]}")
        client._recv_one(min(left, 0.5))


def sees_online(client: Client, user_id: int) -> None:
    """``client`` learnt that ``user_id`` is online (snapshot or presence frame)."""
    client.wait(knows_online(user_id), what=f"user {user_id} online")


def wait_closed(client: Client, timeout: float = 30) -> None:
    """Read until the connection drops (any frames before that are kept)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client._recv_one(0.5)
        except (ConnectionError, OSError, websocket.WebSocketConnectionClosedException):
            return
    raise AssertionError("the connection was not dropped")


def message_ids(client: Client) -> list[str]:
    return [f["id"] for f in client.of_type("message")]


def messages_sent(server: DemoServer) -> float:
    """The instance's flask_chat_messages_sent_total (messages it stored and published)."""
    status, text = http_json(server.port, "GET", "/metrics")
    assert status == 200
    match = re.search(r"^flask_chat_messages_sent_total (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


# -- the tests -----------------------------------------------------------------------------


def test_round_robin_spreads_websockets_over_both_instances(
    cluster: Callable[..., Cluster],
) -> None:
    c = cluster()
    c.cookie("alice")  # logged in on one instance; the cookie works on both
    landed = [c.where(c.connect("alice")) for _ in range(6)]
    assert {s.port for s in landed} == {s.port for s in c.servers}
    # Round robin with nothing else connecting in between: each one on the other instance.
    assert all(a is not b for a, b in pairwise(landed)), [s.port for s in landed]
    assert c.connections() == {s.port: 3 for s in c.servers}


def test_users_on_different_instances_chat_through_haproxy(
    cluster: Callable[..., Cluster],
) -> None:
    c = cluster()
    for name in ("alice", "bob", "carol"):
        c.cookie(name)  # logged in first, through HAProxy: on either instance
    alice = c.connect("alice")
    bob = c.connect("bob", on=c.other(c.where(alice)))
    carol = c.connect("carol")
    everyone = (alice, bob, carol)

    # One to one, both ways, between the two instances.
    alice.send({"type": "send", "to": "2_User", "message_text": "hi bob", "ref": "a1"})
    mid = alice.wait_type("ack", ref="a1")["message"]["id"]
    assert bob.wait_type("message", id=mid)["message_text"] == "hi bob"
    alice.wait_type("message", id=mid)  # her own tabs get it too
    bob.send({"type": "send", "to": "1_User", "message_text": "hi alice", "ref": "b1"})
    mid = bob.wait_type("ack", ref="b1")["message"]["id"]
    assert alice.wait_type("message", id=mid)["sender_id"] == 2

    # The group "team" (5): everyone, on both instances.
    carol.send({"type": "send", "to": "5_Group", "message_text": "hi team", "ref": "c1"})
    mid = carol.wait_type("ack", ref="c1")["message"]["id"]
    for client in everyone:
        frame = client.wait_type("message", id=mid)
        assert frame["to"] == "5_Group" and frame["sender_id"] == 3

    # HTTP through HAProxy: the session from one instance works on the other (no
    # sticky session), and what is sent reaches websockets on both instances.
    cookie, csrf = csrf_session(c.port, "bob")
    before = [messages_sent(s) for s in c.servers]
    sent = []
    for i in range(4):
        to = "5_Group" if i % 2 == 0 else "1_User"
        status, body = http_json(
            c.port,
            "POST",
            "/chats/send_message",
            {"to": to, "message_text": f"http {i}"},
            cookie,
            csrf,
        )
        assert status == 201, body
        sent.append((to, body["id"]))
    after = [messages_sent(s) for s in c.servers]
    assert sum(after) - sum(before) == 4
    assert all(a > b for a, b in zip(after, before, strict=True)), "both served some POSTs"
    for to, mid in sent:
        for client in (alice, bob) if to == "1_User" else everyone:
            client.wait_type("message", id=mid)
    for client in everyone:  # each message exactly once, in order
        ids = message_ids(client)
        assert ids == sorted(set(ids))


def test_a_killed_instance_loses_nothing_and_presence_recovers(
    cluster: Callable[..., Cluster],
) -> None:
    c = cluster(CHAT_PRESENCE_TTL=2)
    for name in ("alice", "bob", "carol"):
        c.cookie(name)
    alice = c.connect("alice")  # will reconnect
    doomed = c.where(alice)
    survivor = c.other(doomed)
    carol = c.connect("carol", on=doomed)  # will not come back
    # Bob, who stays, sends, and watches presence, connects last: he sees none of the
    # comings and goings of placing the others, only what the kill causes.
    bob = c.connect("bob", on=survivor)
    sees_online(bob, 1)
    sees_online(bob, 3)

    # Mid-conversation.
    bob.send({"type": "send", "to": "1_User", "message_text": "are you there?", "ref": "b1"})
    alice.wait_type("message", id=bob.wait_type("ack", ref="b1")["message"]["id"])
    alice.send({"type": "send", "to": "5_Group", "message_text": "yes, all of us", "ref": "a1"})
    mid = alice.wait_type("ack", ref="a1")["message"]["id"]
    for client in (alice, bob, carol):
        client.wait_type("message", id=mid)
    last = max(message_ids(alice))
    mark = len(bob.frames)

    doomed.kill()
    wait_closed(alice)
    wait_closed(carol)

    # While alice is away, bob (on the surviving instance) goes on writing.
    away = []
    for i in range(6):
        to = "1_User" if i % 2 else "5_Group"
        bob.send({"type": "send", "to": to, "message_text": f"while away {i}", "ref": f"w{i}"})
        away.append(bob.wait_type("ack", ref=f"w{i}")["message"]["id"])

    # Alice comes back through HAProxy, which sends her to the surviving instance, and
    # gets exactly what she missed: every message, once, in order.
    again = c.reconnect("alice", f"?after={last}")
    done = again.wait_type("catchup")
    assert done == {"type": "catchup", "recovered": True, "count": len(away)}
    assert message_ids(again) == away
    wait_for(lambda: c.connections() == {survivor.port: 2}, what="alice on the survivor")
    # And live again: the next message arrives once, after the replay.
    bob.send({"type": "send", "to": "1_User", "message_text": "welcome back", "ref": "b2"})
    mid = bob.wait_type("ack", ref="b2")["message"]["id"]
    again.wait_type("message", id=mid)
    assert message_ids(again) == away + [mid]

    # HAProxy's checks took the dead instance out.
    wait_for(
        lambda: c.server_status()[c.names[doomed.port]].startswith("DOWN"),
        timeout=30,
        what="HAProxy to mark the killed instance down",
    )

    # Presence is right again within the TTL: carol, who did not come back, is offline;
    # alice, who did, is online.
    wait_from(bob, mark, presence(3, False), what="carol offline")
    cookie = c.cookie("bob")

    def online_now() -> bool:
        status, page = http_json(c.port, "GET", "/chats/online_users", cookie=cookie)
        assert status == 200, page
        return [u["id"] for u in page["users"]] == [1]

    wait_for(online_now, timeout=30, what="only alice online")
    # If bob saw alice go offline (her old connection expired before she was back), he
    # then saw her come back.
    for i in range(mark, len(bob.frames)):
        if presence(1, False)(bob.frames[i]):
            wait_from(bob, i, presence(1, True), what="alice online again")
            break
