"""The per-user chat cache: layout, ordering under concurrency, window, clear, listing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from flask_chat import Chat

Login = Callable[[int], FlaskClient]
HERE = os.path.dirname(os.path.abspath(__file__))


def chat_of(app: Flask) -> Chat:
    chat: Chat = app.extensions["chat"]
    return chat


def check_consistent(history: dict, expected_count: int) -> list[dict]:
    messages = [m for conv in history.values() for m in conv["messages"]]
    ids = [m["id"] for m in messages]
    assert len(ids) == expected_count
    assert len(set(ids)) == expected_count, "duplicated messages"
    assert ids == sorted(ids), "messages out of order"
    return messages


def test_concurrent_sends_from_threads_lose_nothing_and_keep_order(
    app_factory: Callable[..., Flask],
) -> None:
    app = app_factory(CHAT_HISTORY_LIMIT=10_000)
    chat = chat_of(app)
    threads_per_side, per_thread = 6, 40
    errors: list[BaseException] = []

    def worker(sender: int, to: str, tag: str) -> None:
        try:
            with app.app_context():
                for i in range(per_thread):
                    chat.send_message(sender, to, f"{tag}:{i}")
        except BaseException as exc:  # surfaced below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(1, "2_User", f"a{t}"))
        for t in range(threads_per_side)
    ] + [
        threading.Thread(target=worker, args=(2, "1_User", f"b{t}"))
        for t in range(threads_per_side)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    total = threads_per_side * per_thread * 2
    with app.app_context():
        alice = check_consistent(chat.history(1), total)
        bob = check_consistent(chat.history(2), total)
    # Both sides hold the same messages in the same order, each from its own side.
    assert [m["id"] for m in alice] == [m["id"] for m in bob]
    for a, b in zip(alice, bob, strict=True):
        assert {a["type"], b["type"]} == {"sent", "received"}
        assert a["message_text"] == b["message_text"]
    # Each thread's messages are in the order it sent them.
    for tag in {m["message_text"].split(":")[0] for m in alice}:
        seq = [
            int(m["message_text"].split(":")[1])
            for m in alice
            if m["message_text"].startswith(tag + ":")
        ]
        assert seq == list(range(per_thread))


def test_concurrent_http_sends_to_a_group(as_user: Login, app: Flask) -> None:
    from conftest import make_online

    make_online(app, 1, 2, 3)
    per_user = 30  # 90 in all: within the default window of 200
    errors: list[object] = []

    def worker(user_id: int) -> None:
        c = as_user(user_id)
        for i in range(per_user):
            resp = c.post(
                "/chats/send_message", json={"to": "5_Group", "message_text": f"{user_id}:{i}"}
            )
            if resp.status_code != 201:
                errors.append(resp.json)

    threads = [threading.Thread(target=worker, args=(u,)) for u in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    with app.app_context():
        views = [check_consistent(chat_of(app).history(u), per_user * 3) for u in (1, 2, 3)]
    assert [m["id"] for m in views[0]] == [m["id"] for m in views[1]] == [m["id"] for m in views[2]]


def test_concurrent_sends_from_greenlets(redis_url: str) -> None:
    """Under gevent (patched by the entry point, as in production) nothing is lost either."""
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "gevent_sender.py"), redis_url, "25", "20"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=HERE,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {"alice": 500, "bob": 500, "unique": 500, "ordered": True}


def test_history_limit_keeps_the_newest(app_factory: Callable[..., Flask]) -> None:
    app = app_factory(CHAT_HISTORY_LIMIT=5)
    chat = chat_of(app)
    with app.app_context():
        ids = [chat.send_message(1, "2_User", f"m{i}").id for i in range(8)]
        for user in (1, 2):
            kept = chat.history(user)[("2_User", "1_User")[user - 1]]["messages"]
            assert [m["id"] for m in kept] == ids[3:]


def test_retrying_an_append_is_a_no_op(app: Flask, r: redis.Redis) -> None:
    from flask_chat.cache import CacheEntry

    chat = chat_of(app)
    with app.app_context():
        cache = chat.state.cache
        entry = CacheEntry(
            1,
            "2_User",
            "1700000000000-0000",
            json.dumps(
                {
                    "message_text": "x",
                    "type": "sent",
                    "image": None,
                    "id": "1700000000000-0000",
                    "sender_id": 1,
                    "sent_at": "2023-11-14T22:13:20.000Z",
                }
            ),
        )
        assert cache.append([entry], score=1) == ([0], None)
        assert cache.append([entry], score=1) == ([-1], None)
        assert len(chat.history(1)["2_User"]["messages"]) == 1


def test_clear_and_listing(app: Flask, r: redis.Redis) -> None:
    from conftest import make_online

    make_online(app, 1, 2)
    chat = chat_of(app)
    with app.app_context():
        chat.send_message(1, "2_User", "one")
        chat.send_message(3, "5_Group", "two")
        assert sorted(chat.cached_user_ids()) == [1, 2, 3]
        assert chat.clear_cache(2) == 2
        assert chat.history(2) == {}
        assert sorted(chat.cached_user_ids()) == [1, 3]
        assert chat.history(1) != {}  # other users untouched
        assert chat.clear_cache(2) == 0
        chat.clear_cache(1)
        chat.clear_cache(3)
        assert list(chat.cached_user_ids()) == []
    # Only catch-up floors and publish logs and presence entries remain, and they expire.
    left = [k for k in r.scan_iter() if ":{u:" in k]
    assert left and all(
        k.endswith((":floor", ":published", ":conns")) and r.ttl(k) > 0 for k in left
    )


def test_a_message_arriving_during_clear_survives(app: Flask) -> None:
    """clear() removes only what it read; a later message stays, and stays listed."""
    chat = chat_of(app)
    with app.app_context():
        cache = chat.state.cache
        chat.send_message(1, "2_User", "old")
        cache.client.srem(cache.keys.cached_users(), 2)
        history = cache.export(2)
        chat.send_message(1, "2_User", "new")  # lands between the read and the removal
        cache.remove_listed(
            2, {c: [m["id"] for m in d["messages"]] for c, d in history.items()}
        )
        left = chat.history(2)["1_User"]["messages"]
        assert [m["message_text"] for m in left] == ["new"]
        assert 2 in set(chat.cached_user_ids())


def test_keys_of_one_user_share_a_cluster_hash_tag(
    app_factory: Callable[..., Flask], r: redis.Redis
) -> None:
    # The legacy layout, where the sender's own store holds the group message.
    app = app_factory(CHAT_GROUP_MEMBER_CACHES=True)
    chat = chat_of(app)
    with app.app_context():
        chat.send_message(1, "5_Group", "tagged")
        chat.state.windows.set(1, "5_Group", "open")
    user_keys = [k for k in r.scan_iter() if ":{u:1}:" in k]
    assert len(user_keys) == 5  # convs, idx, msg, windows, published
    slots = {r.execute_command("CLUSTER KEYSLOT", k) if False else _slot(k) for k in user_keys}
    assert len(slots) == 1


def _slot(key: str) -> str:
    start = key.index("{")
    return key[start + 1 : key.index("}", start)]


@pytest.mark.parametrize("prefix", ["chat", "app2"])
def test_every_key_uses_the_prefix(
    app_factory: Callable[..., Flask], r: redis.Redis, prefix: str
) -> None:
    app = app_factory(CHAT_KEY_PREFIX=prefix)
    with app.app_context():
        chat_of(app).send_message(1, "2_User", "x")
    # RQ keeps its own keys under "rq:" (the write-behind drain job); ours all carry the prefix.
    ours = [k for k in r.keys() if not k.startswith("rq:")]
    assert ours and all(k.startswith(prefix + ":") for k in ours)


def test_sends_survive_a_script_flush(app: Flask, r: redis.Redis) -> None:
    """Scripts run as plain EVALSHA; after SCRIPT FLUSH (or a Redis restart) they are
    loaded again and the send goes through, once."""
    from conftest import make_online

    make_online(app, 2, 3)
    chat = chat_of(app)
    with app.app_context():
        chat.send_message(1, "2_User", "before")
        r.script_flush()
        chat.send_message(1, "2_User", "after a flush")
        r.script_flush()
        chat.send_message(1, "5_Group", "group after a flush")
        assert [m["message_text"] for m in chat.history(2)["1_User"]["messages"]] == [
            "before", "after a flush"]
        assert [m["message_text"] for m in chat.history(3)["5_Group"]["messages"]] == [
            "group after a flush"]


def test_without_member_copies_groups_are_read_from_their_store(
    app_factory: Callable[..., Flask], r: redis.Redis
) -> None:
    """CHAT_GROUP_MEMBER_CACHES = False: one write per group message, not one per member;
    members' histories show the group's recent messages from its shared store."""
    from conftest import make_online

    app = app_factory(CHAT_GROUP_MEMBER_CACHES=False)
    make_online(app, 2, 3)
    chat = chat_of(app)
    with app.app_context():
        first = chat.send_message(1, "5_Group", "hello team")
        second = chat.send_message(3, "5_Group", "hi")
        assert not [k for k in r.keys() if k.startswith(("chat:{u:2}:msg", "chat:{u:2}:idx"))]
        for user, types in ((1, ["sent", "received"]), (2, ["received", "received"]),
                            (3, ["received", "sent"])):
            group = chat.history(user)["5_Group"]
            assert group["type"] == "Group"
            assert [m["id"] for m in group["messages"]] == [first.id, second.id]
            assert [m["type"] for m in group["messages"]] == types
        # Who was online when it was sent is still recorded for SQL (write-behind).
        from flask_chat.jobs import drain_write_behind

        drain_write_behind()
        page = chat.state.history.conversation_page(2, __import__(
            "flask_chat.conversations", fromlist=["x"]).ConversationKey.group(5), None, 10)
        assert [m["id"] for m in page] == [second.id, first.id]
