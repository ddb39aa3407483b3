"""flask-chat on a real Redis Cluster (3 masters, 3 replicas, started by tests/cluster.py):
sharded pub/sub across instances, RQ on its own plain Redis, and a master killed while
messages are being sent."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from cluster import RedisCluster
from conftest import Start, require
from flask import Flask
from helpers import (
    Client,
    connect,
    csrf_session,
    free_port,
    http_json,
    login_cookie,
    port_open,
    wait_for,
)
from redis.crc import key_slot

from flask_chat import Chat
from flask_chat.errors import ConfigurationError
from flask_chat.keys import Keys


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    if not (shutil.which("redis-cli") and shutil.which("redis-server")):
        require("redis-cli and redis-server are needed to start a Redis Cluster")
    started = RedisCluster().start()
    try:
        yield started
    finally:
        started.stop()


def test_cluster_settings_are_checked_at_init_app(redis_url: str) -> None:
    def init(**config: Any) -> None:
        app = Flask(__name__)
        app.config.update(CHAT_DATABASE_URL="sqlite://", **config)
        Chat(app)

    with pytest.raises(ConfigurationError, match="CHAT_RQ_REDIS_URL"):
        init(CHAT_REDIS_URL="redis://127.0.0.1:1/0", CHAT_REDIS_CLUSTER=True)
    with pytest.raises(ConfigurationError, match="plain Redis server"):
        init(CHAT_REDIS_URL="redis://127.0.0.1:1/0", CHAT_REDIS_CLUSTER=True,
             CHAT_RQ_REDIS_URL="redis://127.0.0.1:1/0")
    with pytest.raises(ConfigurationError, match="CHAT_REDIS_URL"):
        init(CHAT_REDIS_CLUSTER=True, CHAT_RQ_REDIS_URL=redis_url)
    with pytest.raises(ConfigurationError, match="True or False"):
        init(CHAT_REDIS_URL=redis_url, CHAT_REDIS_CLUSTER="yes")
    with pytest.raises(ConfigurationError, match="CHAT_REDIS_WAIT_REPLICAS"):
        init(CHAT_REDIS_URL=redis_url, CHAT_REDIS_WAIT_REPLICAS=-1)
    with pytest.raises(ConfigurationError, match="CHAT_RQ_REDIS_URL"):
        init(CHAT_REDIS_URL=redis_url, CHAT_RQ_REDIS_URL="")


def test_every_script_call_and_its_channel_stay_in_one_slot() -> None:
    """Each script's KEYS (and a message's channel, published from inside DELIVER) hash
    to one slot, so Redis Cluster runs them (it refuses a script touching two slots,
    or a SPUBLISH to another slot than its keys')."""
    keys = Keys("chat")

    def one_slot(names: list[str]) -> None:
        assert len({key_slot(n.encode()) for n in names}) == 1, names

    for uid in (1, 2, 77):
        conv = "5_User"
        # DELIVER, APPEND, REMOVE: a user's store, publish log and channel.
        one_slot(keys.conversation_keys(uid, conv) + [keys.published(uid), keys.user_channel(uid)])
        # CLEAR: the user's convs, floor, spill and conversations.
        one_slot([keys.conversations(uid), keys.floor(uid), keys.spill(uid),
                  keys.message_index(uid, "2_User"), keys.message_bodies(uid, "9_Group")])
        # RATE_LIMIT, CLAIM_KEY (idempotency), presence's disconnect, the token generation.
        one_slot([keys.rate(uid), keys.idempotency(uid, "k-1"), keys.connections(uid),
                  keys.token_generation(uid), keys.reads(uid), keys.windows(uid)])
    for gid in (5, 6):
        one_slot(keys.group_conversation_keys(gid) + [keys.group_published(gid),
                                                     keys.group_channel(gid)])
    # The write-behind's CLAIM and RECLAIM.
    one_slot([keys.persist_queue(), keys.persist_processing("t1"), keys.persist_leases()])
    # NEXT_ID, presence's REAP: one key each.


def _send(port: int, cookie: str, csrf: dict[str, str], to: str, text: str,
          key: str, deadline: float) -> dict[str, Any]:
    """Send with an idempotency key, retrying (as a client should) until acknowledged."""
    while True:
        try:
            status, body = http_json(port, "POST", "/chats/send_message",
                                     {"to": to, "message_text": text}, cookie,
                                     {**csrf, "Idempotency-Key": key})
        except OSError:
            status, body = 0, None
        if status == 201:
            assert isinstance(body, dict)
            return body
        assert status in (0, 503), (status, body)  # down, or refused: never a crash
        if time.monotonic() > deadline:
            raise AssertionError(f"not acknowledged in time: {status} {body}")
        time.sleep(0.2)


def _has_received(client: Client, ids: list[str]) -> bool:
    """Whether every id came in a message frame so far (reading what is waiting)."""
    client.drain(0.1)
    return set(ids) <= {f["id"] for f in client.frames if f.get("type") == "message"}


def _history_ids(port: int, name: str, conversation: str) -> list[str]:
    status, history = http_json(port, "GET", "/chats/history", cookie=login_cookie(port, name))
    assert status == 200, history
    return [m["id"] for m in history.get(conversation, {}).get("messages", [])]


def test_chat_across_instances_survives_a_killed_master(
    cluster: RedisCluster, start: Start, redis_url: str, clients: Any
) -> None:
    """Two instances on the cluster (RQ on a plain Redis): 1:1 and group chat across
    them; then the master serving bob's and the group's slots is killed -9 while alice
    keeps sending (with idempotency keys, retried until acknowledged). After the
    failover delivery resumes by itself, and every acknowledged message is in bob's
    history and reached his websocket (live or by the hub's catch-up)."""
    settings = dict(CHAT_REDIS_CLUSTER=True, CHAT_RQ_REDIS_URL=redis_url,
                    CHAT_REDIS_WAIT_REPLICAS=1, CHAT_REDIS_WAIT_TIMEOUT_MS=2000,
                    CHAT_PRESENCE_TTL=6.0)
    one = start(cluster.url, **settings)
    two = start(cluster.url, **settings)
    alice = connect(clients, one, "alice")
    bob = connect(clients, two, "bob")
    carol = connect(clients, two, "carol")
    a_cookie, a_csrf = csrf_session(one.port, "alice")
    c_cookie, c_csrf = csrf_session(two.port, "carol")
    deadline = time.monotonic() + 30

    hello = _send(one.port, a_cookie, a_csrf, "2_User", "hello bob", "k-hello", deadline)
    bob.wait_type("message", id=hello["id"], timeout=15)
    alice.wait_type("message", id=hello["id"], timeout=15)  # her own channel: her tabs
    team = _send(two.port, c_cookie, c_csrf, "5_Group", "hi team", "k-team", deadline)
    for who in (alice, bob, carol):
        who.wait_type("message", id=team["id"], timeout=15)
    assert hello["id"] in _history_ids(two.port, "bob", "1_User")
    assert team["id"] in _history_ids(one.port, "alice", "5_Group")
    # The Juggernaut bridge's classic channel: a Rails PUBLISH on any node reaches it.
    alice.send({"type": "subscribe", "channel": "channel_cluster"})
    for port in cluster.live_ports():
        node = redis.Redis(port=port)
        doc = json.dumps({"channels": ["channel_cluster"], "data": f"via {port}"})

        def delivered(doc: str = doc, node: redis.Redis = node) -> bool:
            node.publish("juggernaut", doc)  # again until the subscribe is in place
            alice.drain(0.2)
            return any(f.get("type") == "juggernaut" and f["message"].get("data")
                       == json.loads(doc)["data"] for f in alice.frames)

        wait_for(delivered, timeout=15, what=f"a legacy publish on node {port}")
        node.close()
    # RQ lives on its own Redis: the write-behind drain was enqueued there.
    assert redis.Redis.from_url(redis_url).exists("rq:queue:chat-persist")
    # Redis's own view: the shard channels have subscribers on the masters.
    raw = redis.cluster.RedisCluster.from_url(cluster.url)
    assert raw.pubsub_shardnumsub("chat:ch:{u:2}")[0][1] >= 1
    raw.close()

    # Kill the master of bob's slot (the group's too: {u:2} and {g:5} share a master).
    victim = cluster.master_of("chat:{u:2}:convs")
    assert cluster.master_of("chat:{g:5}:convs") == victim
    cluster.kill(victim)
    acked: list[str] = []
    group_acked: list[str] = []
    deadline = time.monotonic() + 60
    # Alice's client (a thread) keeps retrying while the cluster fails over and the
    # killed node comes back (as a replica: until then the promoted master has none, so
    # WAIT cannot confirm a send and none is acknowledged).
    sender = threading.Thread(target=lambda: acked.extend(
        _send(one.port, a_cookie, a_csrf, "2_User", f"during {i}", f"k-fo-{i}", deadline)["id"]
        for i in range(4)
    ))
    sender.start()
    cluster.wait_failover(victim, "chat:{u:2}:convs")
    # The promoted master has no replica yet: a send to bob is stored there (and maybe
    # seen), but not acknowledged.
    probe = {"to": "2_User", "message_text": "probe"}
    headers = {**a_csrf, "Idempotency-Key": "k-probe"}

    def refused_for_want_of_a_replica() -> bool:
        status, body = http_json(one.port, "POST", "/chats/send_message", probe, a_cookie,
                                 headers)
        assert status == 503, (status, body)  # never acknowledged now
        return status == 503 and "could not be confirmed" in body["message"]

    wait_for(refused_for_want_of_a_replica, timeout=30, interval=0.2,
             what="a send refused for want of a replica")
    cluster.restart(victim)
    cluster.wait_ok()
    sender.join(timeout=90)
    assert len(acked) == 4
    # The same key again, now that a replica is back: the same message, once.
    acked.append(_send(one.port, a_cookie, a_csrf, "2_User", "probe", "k-probe", deadline)["id"])
    group_acked.append(
        _send(one.port, a_cookie, a_csrf, "5_Group", "team, still there?", "k-fo-g", deadline)["id"]
    )
    # And after the failover, by themselves, new messages flow live again.
    after = _send(one.port, a_cookie, a_csrf, "2_User", "after", "k-after", deadline)
    acked.append(after["id"])
    bob.wait_type("message", id=after["id"], timeout=30)

    wait_for(lambda: _has_received(bob, acked + group_acked), timeout=30,
             what="every acknowledged message on bob's websocket")
    wait_for(lambda: _has_received(carol, group_acked), timeout=30,
             what="the group message on carol's websocket")
    # Bob's instance resubscribed his channels on the new master and caught up by itself.
    _, metrics = http_json(two.port, "GET", "/metrics")
    reconnects = [line for line in str(metrics).splitlines()
                  if line.startswith("flask_chat_hub_reconnects_total ")]
    assert reconnects and float(reconnects[0].split()[1]) >= 1, reconnects
    assert set(acked) <= set(_history_ids(two.port, "bob", "1_User"))
    assert set(group_acked) <= set(_history_ids(two.port, "bob", "5_Group"))
    # Each message once in the history, whatever the retries did.
    ids = _history_ids(one.port, "alice", "2_User")
    assert len(ids) == len(set(ids))
    status, history = http_json(two.port, "GET", "/chats/history",
                                cookie=login_cookie(two.port, "bob"))
    assert [m["message_text"] for m in history["1_User"]["messages"]].count("probe") == 1


def test_a_moved_slot_moves_its_channels(
    cluster: RedisCluster, start: Start, redis_url: str, clients: Any
) -> None:
    """A graceful failover: the old master stays up and keeps the subscriber connected,
    but drops its shard channels (Redis sends ``sunsubscribe``): the instance
    subscribes them on the new master by itself, and delivery goes on."""
    cluster.wait_ok()
    settings = dict(CHAT_REDIS_CLUSTER=True, CHAT_RQ_REDIS_URL=redis_url)
    one = start(cluster.url, **settings)
    two = start(cluster.url, **settings)
    bob = connect(clients, two, "bob")
    cookie, csrf = csrf_session(one.port, "alice")
    deadline = time.monotonic() + 60
    first = _send(one.port, cookie, csrf, "2_User", "before", "k-mv-1", deadline)
    bob.wait_type("message", id=first["id"], timeout=15)

    master = cluster.master_of("chat:{u:2}:convs")
    replica = cluster.replica_of(master)
    cluster.manual_failover(replica)
    wait_for(lambda: cluster.master_of("chat:{u:2}:convs") == replica, timeout=30,
             what="the replica to take the slot over")
    cluster.wait_ok()
    later = _send(one.port, cookie, csrf, "2_User", "after the move", "k-mv-2", deadline)
    bob.wait_type("message", id=later["id"], timeout=30)


def test_wait_replicas_on_a_single_primary(tmp_path: Any) -> None:
    """Without a cluster, CHAT_REDIS_WAIT_REPLICAS WAITs in the send's own pipeline: no
    replica, no acknowledgement (503 unavailable; a retry with the same key finishes the
    message once a replica is there)."""
    from conftest import make_chat_app

    from flask_chat.errors import Unavailable

    port, replica_port = free_port(), free_port()
    procs = [subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--repl-diskless-sync-delay", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        url = f"redis://127.0.0.1:{port}/0"
        wait_for(lambda: port_open(port), what="the primary")
        app = make_chat_app(url, CHAT_REDIS_WAIT_REPLICAS=1, CHAT_REDIS_WAIT_TIMEOUT_MS=2000)
        chat: Chat = app.extensions["chat"]
        with app.app_context():
            with pytest.raises(Unavailable, match="1 Redis replica"):
                chat.send_message(1, "2_User", "not promised", idempotency_key="w-1")
            (tmp_path / "replica").mkdir()
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(replica_port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(tmp_path / "replica"),
                 "--replicaof", "127.0.0.1", str(port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            primary = redis.Redis(port=port, decode_responses=True)
            wait_for(lambda: primary.info("replication").get("slave0", {}).get("state")
                     == "online", timeout=30, what="the replica in sync")
            primary.close()
            first = chat.send_message(1, "2_User", "not promised", idempotency_key="w-1")
            assert first.replayed  # the same message as the refused attempt, finished
            again = chat.send_message(1, "2_User", "promised", idempotency_key="w-2")
            assert not again.replayed
            history = chat.history(2)["1_User"]["messages"]
            assert [m["message_text"] for m in history] == ["not promised", "promised"]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=20)


def test_cache_presence_catch_up_and_persistence_on_the_cluster(
    cluster: RedisCluster, redis_url: str
) -> None:
    """The rest of the Redis work, in process, on the cluster: group copies into online
    members' caches (no raw RESP there), presence across slots, catch-up reads, the
    write-behind drain and persist-then-clear, with RQ's jobs on the plain server."""
    from conftest import make_chat_app, make_online

    from flask_chat import catchup
    from flask_chat.jobs import drain_write_behind, persist_users

    app = make_chat_app(cluster.url, CHAT_REDIS_CLUSTER=True, CHAT_RQ_REDIS_URL=redis_url,
                        CHAT_KEY_PREFIX="rest")
    make_online(app, 1, 2, 3)
    chat: Chat = app.extensions["chat"]
    with app.app_context():
        state = chat.state
        one = chat.send_message(1, "2_User", "one to one")
        team = chat.send_message(2, "5_Group", "to the team")
        for uid in (1, 3):  # online members got their copy (on their own masters)
            assert [m["id"] for m in chat.history(uid)["5_Group"]["messages"]] == [team.id]
        assert chat.is_online(3)
        assert state.presence.online_ids([1, 2, 3, 4]) == [1, 2, 3]
        recovered, events = catchup.missed(state, 2, [5], format_before(one.id))
        assert recovered
        assert [json.loads(e)["id"] for e in events] == [one.id, team.id]
        # The drain job was enqueued on RQ's server, not on the cluster.
        assert redis.Redis.from_url(redis_url).llen("rq:queue:rest-persist") >= 1
        assert drain_write_behind()["written"] >= 2
        assert state.presence.disconnect(3, "test-3")
        result = persist_users([3], clear=True)
        assert result["cleared"] == 1
        assert chat.history(3) == {}
        assert [m["message_text"] for m in state.history.conversation_page(
            3, __import__("flask_chat.conversations", fromlist=["x"]).ConversationKey.group(5),
            None, 10)] == ["to the team"]


def format_before(message_id: str) -> str:
    """A position just before ``message_id`` (same ms, lower sequence)."""
    ms, _, _ = message_id.partition("-")
    return f"{int(ms) - 1}-9999"
