"""The send path: one script per send on one Redis server, and group messages stored
once with every member's cache a view over the group's store.

The views must export, page, clear, trim, persist and catch up exactly as the legacy
layout's copies do (``CHAT_GROUP_MEMBER_CACHES = True``): each scenario below runs once
per layout (and per send path) on the same Redis, and everything a user can read back
must come out the same, message ids aside (they are numbered in sending order).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis
from conftest import make_online
from flask import Flask
from sqlalchemy import select

from flask_chat import Chat
from flask_chat.catchup import missed
from flask_chat.errors import ChatError, Unavailable
from flask_chat.ids import iso_utc
from flask_chat.jobs import drain_write_behind, persist_cached
from flask_chat.models import views
from flask_chat.scripts import _IDS

Action = tuple[Any, ...]
LAYOUTS: list[Any] = [True, "view"]


def chat_of(app: Flask) -> Chat:
    chat: Chat = app.extensions["chat"]
    return chat


class Run:
    """Plays actions on one app, writing down what users can read back."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.chat = chat_of(app)
        self.ids: dict[str, str] = {}
        self.seen: list[Any] = []

    def name(self, message_id: str) -> str:
        return self.ids.get(message_id, f"?{message_id}")

    def entries(self, messages: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(self.name(m["id"]), m["type"], m["sender_id"], m["message_text"], m["image"])
                for m in messages]

    def play(self, actions: Sequence[Action]) -> list[Any]:
        with self.app.app_context():
            self._play(actions)
        return self.seen

    def _play(self, actions: Sequence[Action]) -> None:
        state = self.chat.state_of(self.app)
        for action in actions:
            kind, *args = action
            if kind == "send":
                sender, to, text = args
                message = self.chat.send_message(sender, to, text)
                self.ids[message.id] = f"m{len(self.ids)}"
                # Each in a millisecond of its own: a conversation's place among a
                # user's is its first message's ms (ties go by name), in every run.
                time.sleep(0.002)
            elif kind == "online":
                make_online(self.app, *args)
            elif kind == "offline":
                for uid in args:
                    state.presence.disconnect(uid, f"test-{uid}")
            elif kind == "persist":
                persist_cached(state, list(args))
            elif kind == "sweep":
                persist_cached(state, sorted(state.cache.cached_users()))
            elif kind == "clear":
                self.seen.append(("cleared", args[0], self.chat.clear_cache(args[0])))
            elif kind == "export":
                for uid in args or (1, 2, 3):
                    history = self.chat.history(uid)
                    self.seen.append(("export", uid, [
                        (key, conv["type"], self.entries(conv["messages"]))
                        for key, conv in history.items()
                    ]))
            elif kind == "page":
                uid, conv, limit = args
                self.seen.append(("page", uid, conv, self.entries(
                    state.cache.page(uid, conv, None, limit))))
            elif kind == "spill":
                uid = args[0]
                from flask_chat.persistence import collect

                collected = collect(state, [uid])
                self.seen.append(("collect", uid,
                                  {c: sorted(self.name(i) for i in ids)
                                   for c, ids in collected.window[uid].items() if ids},
                                  sorted(f.split("|")[0] + "|" + self.name(f.split("|")[1])
                                         for f in collected.spill[uid])))
            elif kind == "sql":
                drain_write_behind()
                with state.history.engine.connect() as conn:
                    rows = conn.execute(select(views.c.user_id, views.c.message_id,
                                               views.c.conversation, views.c.direction))
                    self.seen.append(("sql", sorted(
                        (r[0], self.name(r[1]), r[2], r[3]) for r in rows)))
            elif kind == "catchup":
                uid, position = args
                after = next(i for i, n in self.ids.items() if n == position)
                groups = state.hooks.user_group_ids(uid)
                recovered, events = missed(state, uid, groups, after)
                self.seen.append(("catchup", uid, recovered, [
                    self.name(json.loads(e)["id"]) for e in events]))
            elif kind == "race":
                # A persist-then-clear with sends between its read and its clear.
                from flask_chat.persistence import collect

                uid, meanwhile = args
                collected = collect(state, [uid])
                state.history.write(collected.batch)
                self._play(meanwhile)
                window, spill = collected.window[uid], collected.spill[uid]
                if state.presence.is_online(uid):
                    state.cache.remove_listed(uid, {}, spill, drop_if_empty=False)
                else:
                    state.cache.remove_listed(uid, window, spill)
            elif kind == "cached":
                self.seen.append(("cached", sorted(set(state.cache.cached_users()))))
            else:  # pragma: no cover - a typo in a scenario
                raise AssertionError(kind)


def compare(
    app_factory: Callable[..., Flask], r: Any, actions: Sequence[Action],
    **config: Any,
) -> list[Any]:
    """Play ``actions`` with each layout and send path; all must read back the same.
    ``r``: a client of the Redis the apps use (flushed before each run)."""
    results = []
    clustered = bool(config.get("CHAT_REDIS_CLUSTER"))
    for layout in LAYOUTS:
        for one_step in ((False,) if clustered else (True, False)):
            if clustered:
                r.flushdb(target_nodes="primaries")
            else:
                r.flushdb()
            app = app_factory(CHAT_GROUP_MEMBER_CACHES=layout, CHAT_SEND_IN_ONE_STEP=one_step,
                              **config)
            results.append(((layout, one_step), Run(app).play(actions)))
    reference = results[0][1]
    for (layout, one_step), seen in results[1:]:
        for expected, got in zip(reference, seen, strict=True):
            assert got == expected, (layout, one_step)
    return reference


def test_members_online_when_sent_hold_it_and_exports_match(
    app_factory: Callable[..., Flask], r: redis.Redis
) -> None:
    seen = compare(app_factory, r, [
        ("online", 2),
        ("send", 1, "5_Group", "to the team, bob online"),
        ("send", 2, "1_User", "a word with alice"),
        ("send", 3, "5_Group", "carol was offline"),
        ("online", 3),
        ("send", 2, "6_Group", "duo, carol online"),
        ("offline", 2),
        ("send", 1, "5_Group", "bob offline now"),
        ("send", 3, "2_User", "psst"),
        ("export",),
        ("page", 2, "5_Group", 10),
        ("page", 3, "5_Group", 2),
        ("cached",),
        ("sql",),
    ])
    exports = {s[1]: s[2] for s in seen if s[0] == "export"}
    # The legacy rule, seen through the view: bob holds what came while he was online.
    assert [e[0] for e in dict((k, m) for k, _, m in exports[2])["5_Group"]] == ["m0", "m2"]
    assert [k for k, _, _ in exports[2]] == ["5_Group", "1_User", "6_Group", "3_User"]


def test_trimming_at_the_history_limit_and_the_spill(
    app_factory: Callable[..., Flask], r: redis.Redis
) -> None:
    actions: list[Action] = [("online", 2, 3)]
    for i in range(7):
        actions.append(("send", 1 + i % 3, "5_Group", f"g{i}"))
        if i == 3:
            actions += [("offline", 3), ("send", 2, "3_User", "one to one")]
    actions += [("export",), ("spill", 1), ("spill", 2), ("spill", 3), ("page", 1, "5_Group", 5)]
    seen = compare(app_factory, r, actions, CHAT_HISTORY_LIMIT=3)
    collected = {s[1]: (s[2], s[3]) for s in seen if s[0] == "collect"}
    assert len(collected[2][0]["5_Group"]) == 3 and len(collected[2][1]) == 4


def test_clear_after_persist_and_what_comes_after(
    app_factory: Callable[..., Flask], r: redis.Redis
) -> None:
    compare(app_factory, r, [
        ("online", 2, 3),
        ("send", 1, "5_Group", "a"),
        ("send", 2, "5_Group", "b"),
        ("send", 3, "5_Group", "c"),
        ("send", 1, "5_Group", "d"),
        ("send", 1, "2_User", "dm"),
        ("offline", 3),
        ("persist", 1, 2, 3),  # 1 is offline: cleared; 2 is online: keeps the window
        ("export",),
        ("send", 2, "5_Group", "e"),
        ("send", 2, "5_Group", "f"),
        ("send", 1, "5_Group", "g"),
        ("export",),
        ("online", 3),
        ("send", 1, "5_Group", "h"),
        ("offline", 2),
        ("sweep",),
        ("export",),
        ("cached",),
        ("clear", 3),
        ("export",),
        ("send", 3, "5_Group", "i"),
        ("export",),
        ("sql",),
        ("cached",),
    ], CHAT_HISTORY_LIMIT=2)


def test_a_conversation_keeps_its_place_when_its_first_messages_are_gone(
    app_factory: Callable[..., Flask], r: redis.Redis
) -> None:
    compare(app_factory, r, [
        ("online", 2),
        ("send", 1, "5_Group", "first"),
        ("send", 3, "2_User", "between"),
        ("send", 1, "5_Group", "x"),
        ("send", 3, "5_Group", "y"),
        ("send", 1, "5_Group", "z"),
        ("persist", 2),  # online: the spill goes to SQL, the window stays
        ("export", 2),
        ("send", 3, "2_User", "late"),
        ("send", 1, "5_Group", "w"),
        ("export", 2),
    ], CHAT_HISTORY_LIMIT=2)


def test_messages_that_come_while_a_persist_runs(
    app_factory: Callable[..., Flask], r: redis.Redis
) -> None:
    """What lands between a persist's read and its clear stays; what that pushes below
    the window stays in the spill (not back in the window after the clear)."""
    compare(app_factory, r, [
        ("online", 2, 3),
        ("send", 1, "5_Group", "a"),
        ("send", 2, "5_Group", "b"),
        ("send", 1, "5_Group", "c"),
        ("offline", 3),
        ("race", 3, [("online", 3), ("send", 1, "5_Group", "d"), ("send", 2, "5_Group", "e"),
                     ("offline", 3)]),
        ("export", 3),
        ("spill", 3),
        ("race", 2, [("send", 1, "5_Group", "f"), ("send", 1, "5_Group", "g")]),
        ("export", 2),
        ("spill", 2),
        ("offline", 2),
        ("race", 2, [("send", 3, "5_Group", "h")]),
        ("export",),
        ("spill", 2),
        ("sweep",),
        ("export",),
        ("cached",),
        ("sql",),
    ], CHAT_HISTORY_LIMIT=2)


def test_catch_up_replays_the_same(app_factory: Callable[..., Flask], r: redis.Redis) -> None:
    compare(app_factory, r, [
        ("online", 1, 2, 3),
        ("send", 1, "5_Group", "one"),
        ("send", 2, "5_Group", "two"),
        ("send", 3, "1_User", "three"),
        ("send", 1, "5_Group", "four"),
        ("send", 1, "5_Group", "five"),
        ("catchup", 2, "m0"),
        ("catchup", 1, "m1"),
        ("catchup", 3, "m3"),
        ("offline", 2),
        ("persist", 2),
        ("catchup", 2, "m0"),
        ("catchup", 2, "m4"),
    ], CHAT_HISTORY_LIMIT=3)


def test_a_view_let_go_by_every_holder_leaves_nothing_behind(
    app_factory: Callable[..., Flask], r: redis.Redis
) -> None:
    app = app_factory(CHAT_HISTORY_LIMIT=2)
    chat = chat_of(app)
    make_online(app, 2, 3)
    with app.app_context():
        state = chat.state
        for i in range(6):
            chat.send_message(1 + i % 3, "5_Group", f"m{i}")
        # Trimmed off the group's window, still held by its members' views.
        assert r.zcard("chat:{g:5}:keptidx") == 4
        assert r.zcard("chat:views") == 3
        for uid in (2, 3):
            state.presence.disconnect(uid, f"test-{uid}")
        persist_cached(state, [1, 2, 3])
        assert [chat.history(u) for u in (1, 2, 3)] == [{}, {}, {}]
        assert r.zcard("chat:views") == 0
        assert r.hlen("chat:{g:5}:aud") == r.hlen("chat:{g:5}:refs") == 0
        assert r.hlen("chat:{g:5}:let") == r.hlen("chat:{g:5}:kept") == 0
        assert set(r.hkeys("chat:{g:5}:snap")) <= {"seq"}
        assert list(state.cache.cached_users()) == []
        # The group's own window (catch-up, the conversation page) is still there.
        assert r.zcard("chat:{g:5}:idx:5_Group") == 2


def test_a_group_message_costs_no_write_per_member(
    app_factory: Callable[..., Flask], r: redis.Redis
) -> None:
    app = app_factory()
    chat = chat_of(app)
    make_online(app, 2, 3)
    with app.app_context():
        chat.send_message(1, "5_Group", "once")
    assert not [k for k in r.keys() if k.startswith("chat:{u:") and not k.endswith(":conns")]
    assert r.hlen("chat:{g:5}:msg:5_Group") == 1
    assert r.hget("chat:{g:5}:snap", r.hget("chat:{g:5}:aud", r.hkeys("chat:{g:5}:aud")[0])) \
        == ",1,2,3,"


def test_views_survive_a_script_flush(app_factory: Callable[..., Flask], r: redis.Redis) -> None:
    app = app_factory()
    chat = chat_of(app)
    make_online(app, 2)
    with app.app_context():
        chat.send_message(1, "5_Group", "before")
        r.script_flush()
        assert [m["message_text"] for m in chat.history(2)["5_Group"]["messages"]] == ["before"]
        r.script_flush()
        chat.send_message(1, "5_Group", "after")
        r.script_flush()
        assert chat.clear_cache(2) == 2


@pytest.mark.parametrize("layout", LAYOUTS + [False])
@pytest.mark.parametrize("one_step", [True, False])
def test_a_retried_group_send_is_stored_once(
    app_factory: Callable[..., Flask], layout: Any, one_step: bool
) -> None:
    app = app_factory(CHAT_GROUP_MEMBER_CACHES=layout, CHAT_SEND_IN_ONE_STEP=one_step)
    chat = chat_of(app)
    make_online(app, 2, 3)
    with app.app_context():
        first = chat.send_message(1, "5_Group", "once", idempotency_key="g-1")
        again = chat.send_message(1, "5_Group", "once", idempotency_key="g-1")
        assert (again.id, again.replayed) == (first.id, True)
        for uid in (1, 2, 3):
            assert [m["id"] for m in chat.history(uid)["5_Group"]["messages"]] == [first.id]


def test_a_clear_that_died_dropping_a_view_is_resolved_by_the_sweep(
    app: Flask, r: redis.Redis
) -> None:
    chat = chat_of(app)
    make_online(app, 2)
    with app.app_context():
        chat.send_message(1, "5_Group", "kept")
        state = chat.state
        # As a clear killed between taking the view's name out and looking again.
        r.zadd("chat:clearing", {"2@5:dead": 1.0})
        r.zrem("chat:views", "2:5")
        assert 2 not in set(state.cache.cached_users())
        assert state.cache.recover_clearing(grace=0) == 1
        assert 2 in set(state.cache.cached_users())
        assert [m["message_text"] for m in chat.history(2)["5_Group"]["messages"]] == ["kept"]
        assert r.zcard("chat:clearing") == 0


# -- the one-step send ---------------------------------------------------------------------


def test_the_script_writes_times_as_python_does(r: redis.Redis) -> None:
    iso = r.register_script(_IDS + "return iso(tonumber(ARGV[1]))")
    start = datetime(1999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)
    moments = [start + timedelta(days=d * 37, milliseconds=d * 7919) for d in range(400)]
    moments += [datetime(2024, 2, 29, 12, tzinfo=timezone.utc),
                datetime(2100, 3, 1, tzinfo=timezone.utc),
                datetime(2000, 2, 29, 23, 59, 59, 1000, tzinfo=timezone.utc)]
    for moment in moments:
        ms = int(moment.timestamp() * 1000 + 0.5)
        assert iso(args=[ms]) == iso_utc(datetime.fromtimestamp(ms / 1000, tz=timezone.utc))


def test_a_send_is_one_script_call(app: Flask, r: redis.Redis) -> None:
    chat = chat_of(app)
    make_online(app, 2)
    with app.app_context():
        chat.send_message(1, "5_Group", "warm")  # loads nothing: the scripts are there
    # Count the writes on the app's connections (one per round trip).
    pool = chat.state_of(app).redis.connection_pool
    writes: list[int] = []
    checkout = pool.get_connection

    def counted(*args: Any, **kwargs: Any) -> Any:
        connection = checkout(*args, **kwargs)
        send = type(connection).send_packed_command

        def sending(command: Any, check_health: bool = True) -> None:
            writes.append(1)
            send(connection, command, check_health)

        connection.send_packed_command = sending  # type: ignore[method-assign]
        return connection

    pool.get_connection = counted  # type: ignore[method-assign]
    r.config_resetstat()
    try:
        with app.app_context():
            one = chat.send_message(1, "2_User", "héllo \"there\" \\ </script>")
            group = chat.send_message(2, "5_Group", "team")
    finally:
        pool.get_connection = checkout  # type: ignore[method-assign]
    assert len(writes) == 2
    assert r.info("commandstats")["cmdstat_evalsha"]["calls"] == 2
    with app.app_context():
        history = chat.history(2)
    entry = history["1_User"]["messages"][0]
    assert entry == {"message_text": one.message_text, "type": "received",
                     "image": "/img/alice.png", "id": one.id, "sender_id": 1,
                     "sent_at": one.sent_at}
    assert history["5_Group"]["messages"][-1]["sent_at"] == group.sent_at
    record = next(json.loads(x) for x in r.lrange("chat:persist", 0, -1)
                  if json.loads(x)["m"]["id"] == one.id)
    assert record["m"]["message_text"] == one.message_text
    assert record["v"] == [[1, "2_User", "sent"], [2, "1_User", "received"]]


def test_a_text_that_looks_like_a_placeholder_takes_the_steps(
    app: Flask, r: redis.Redis
) -> None:
    chat = chat_of(app)
    text = "\\u0000i and \\u0000t"
    with app.app_context():
        message = chat.send_message(1, "2_User", text)
        assert chat.history(2)["1_User"]["messages"][0]["message_text"] == text
        assert chat.history(1)["2_User"]["messages"][0]["id"] == message.id


def test_idempotency_and_rate_limit_in_one_step(app_factory: Callable[..., Flask]) -> None:
    app = app_factory(CHAT_SEND_RATE=1, CHAT_SEND_BURST=2)
    chat = chat_of(app)
    with app.app_context():
        first = chat.send_message(1, "2_User", "once", idempotency_key="k-1")
        again = chat.send_message(1, "2_User", "once", idempotency_key="k-1")
        assert (again.id, again.replayed) == (first.id, True)
        with pytest.raises(ChatError) as reused:
            chat.send_message(1, "2_User", "other", idempotency_key="k-1")
        assert reused.value.code == "idempotency_key_reused"
        chat.send_message(1, "2_User", "second")
        with pytest.raises(ChatError) as limited:
            chat.send_message(1, "2_User", "third", idempotency_key="k-2")
        assert limited.value.code == "rate_limited"
        assert [m["message_text"] for m in chat.history(2)["1_User"]["messages"]] == [
            "once", "second"]


def test_wait_replicas_on_one_server(app_factory: Callable[..., Flask]) -> None:
    """No replica: the send is stored, and not acknowledged (retry with the same key)."""
    app = app_factory(CHAT_REDIS_WAIT_REPLICAS=1, CHAT_REDIS_WAIT_TIMEOUT_MS=50)
    chat = chat_of(app)
    with app.app_context():
        with pytest.raises(Unavailable):
            chat.send_message(1, "2_User", "unconfirmed", idempotency_key="w-1")
        assert [m["message_text"] for m in chat.history(2)["1_User"]["messages"]] == [
            "unconfirmed"]


def test_concurrent_group_sends_under_gevent_keep_every_view_whole(redis_url: str) -> None:
    """Many greenlets send through the autopipe at once; every member's view ends up
    with every message, in id order, and the autopipe batched their calls."""
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    code = """
from gevent import monkey; monkey.patch_all()
import json, sys, gevent
from conftest import make_chat_app, make_online
from flask_chat import autopipe
app = make_chat_app(sys.argv[1], CHAT_HISTORY_LIMIT=10000)
make_online(app, 1, 2, 3)
chat = app.extensions["chat"]
def sender(n):
    with app.app_context():
        for i in range(20):
            chat.send_message(1 + n % 3, "5_Group", f"{n}:{i}")
gevent.joinall([gevent.spawn(sender, n) for n in range(30)], raise_error=True)
with app.app_context():
    views = [[m["id"] for m in chat.history(u)["5_Group"]["messages"]] for u in (1, 2, 3)]
pipe = autopipe.for_client(chat.state_of(app).redis)
print(json.dumps({"views": views, "batches": pipe.batches, "calls": pipe.calls}))
"""
    result = subprocess.run([sys.executable, "-c", code, redis_url], capture_output=True,
                            text=True, timeout=120, cwd=here)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    first = report["views"][0]
    assert len(first) == 600 and first == sorted(first) and len(set(first)) == 600
    assert report["views"][1] == report["views"][2] == first
    assert report["calls"] >= 600 and report["batches"] < report["calls"]


# -- on Redis Cluster ----------------------------------------------------------------------


def test_a_groups_view_keys_and_channel_are_one_slot() -> None:
    from redis.crc import key_slot

    from flask_chat.keys import Keys

    keys = Keys("chat")
    for gid in (5, 6, 1234):
        names = keys.group_view_keys(gid) + [keys.group_channel(gid)]
        assert len({key_slot(n.encode()) for n in names}) == 1, names


def test_views_on_a_cluster_export_as_copies_do(
    app_factory: Callable[..., Flask], redis_url: str
) -> None:
    import shutil

    from cluster import RedisCluster
    from conftest import require
    from redis.cluster import RedisCluster as ClusterClient

    if not (shutil.which("redis-cli") and shutil.which("redis-server")):
        require("redis-cli and redis-server are needed to start a Redis Cluster")
    started = RedisCluster().start()
    try:
        client = ClusterClient.from_url(started.url, decode_responses=True)
        compare(app_factory, client, [
            ("online", 2, 3),
            ("send", 1, "5_Group", "a"),
            ("send", 2, "5_Group", "b"),
            ("send", 3, "2_User", "dm"),
            ("offline", 3),
            ("send", 1, "5_Group", "c"),
            ("send", 2, "5_Group", "d"),
            ("export",),
            ("spill", 2),
            ("persist", 1, 2, 3),
            ("export",),
            ("send", 1, "5_Group", "e"),
            ("page", 2, "5_Group", 5),
            ("catchup", 2, "m1"),
            ("sweep",),
            ("export",),
            ("cached",),
            ("sql",),
        ], CHAT_HISTORY_LIMIT=2, CHAT_REDIS_URL=started.url, CHAT_REDIS_CLUSTER=True,
            CHAT_RQ_REDIS_URL=redis_url)
        client.close()
    finally:
        started.stop()
