"""flask-chat on a real Redis Cluster (3 masters, 3 replicas, started by tests/cluster.py):
sharded pub/sub across instances, RQ on its own plain Redis, and a master killed while
messages are being sent."""

from __future__ import annotations

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
        assert status in (0, 500, 502, 503), (status, body)
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
    # Sent from another greenlet's point of view: alice's client keeps retrying while
    # the cluster fails over, and the killed node comes back (as a replica: until then
    # the promoted master has none, so WAIT cannot confirm a send and none is acked).
    sender = threading.Thread(target=lambda: acked.extend(
        _send(one.port, a_cookie, a_csrf, "2_User", f"during {i}", f"k-fo-{i}", deadline)["id"]
        for i in range(4)
    ))
    sender.start()
    cluster.wait_failover(victim, "chat:{u:2}:convs")
    cluster.restart(victim)
    cluster.wait_ok()
    sender.join(timeout=90)
    assert len(acked) == 4
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
    assert set(acked) <= set(_history_ids(two.port, "bob", "1_User"))
    assert set(group_acked) <= set(_history_ids(two.port, "bob", "5_Group"))
    # Each message once in the history, whatever the retries did.
    ids = _history_ids(one.port, "alice", "2_User")
    assert len(ids) == len(set(ids))


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
        app = make_chat_app(url, CHAT_REDIS_WAIT_REPLICAS=1, CHAT_REDIS_WAIT_TIMEOUT_MS=200)
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
