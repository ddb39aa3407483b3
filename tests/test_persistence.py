"""SQL history: migrations, idempotent writes, persist-then-clear, reading back,
transcripts. On SQLite and PostgreSQL (the ``database_url`` fixture)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, event, func, inspect, select, text

from flask_chat import database
from flask_chat.jobs import persist_users, sweep
from flask_chat.models import messages, sessions, views
from flask_chat.persistence import collect

Login = Callable[[int], FlaskClient]


@pytest.fixture
def app(app_factory: Callable[..., Flask], database_url: str) -> Flask:
    return app_factory(CHAT_DATABASE_URL=database_url, CHAT_DATABASE_AUTO_UPGRADE=True)


def count(app: Flask, table: Any) -> int:
    with app.app_context():
        engine = app.extensions["chat"].state.history.engine
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def test_migrations_use_their_own_version_table(database_url: str) -> None:
    engine = database.make_engine(database_url)
    try:
        with engine.begin() as conn:  # a host app's own Alembic/Flask-Migrate table
            conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
            conn.execute(text("INSERT INTO alembic_version VALUES ('hostapp1')"))
        database.upgrade(engine)
        assert database.current_revision(engine) == database.head_revision() == "0001"
        names = set(inspect(engine).get_table_names())
        assert {
            "chat_messages",
            "chat_sessions",
            "chat_message_views",
            "flask_chat_alembic_version",
        } <= names
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == "hostapp1"
        database.downgrade(engine, "base")
        assert "chat_messages" not in inspect(engine).get_table_names()
        assert database.current_revision(engine) is None
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        engine.dispose()


def test_persist_then_clear_is_idempotent(app: Flask) -> None:
    from conftest import make_online

    make_online(app, 3)
    chat = app.extensions["chat"]
    with app.app_context():
        for i in range(5):
            chat.send_message(1, "2_User", f"hello {i}")
            chat.send_message(2, "1_User", f"hi {i}")
        chat.send_message(1, "5_Group", "to the group")  # carol is online: in her cache
        first = persist_users([1, 2, 3], clear=True)
        assert first["written"] == 11 and first["already"] == 0
        assert chat.history(1) == {} and chat.history(2) == {}
        assert chat.history(3) != {}  # carol is online: persisted, not cleared
        again = persist_users([1, 2, 3], clear=True)
        assert again["written"] == 0 and again["already"] == 1  # carol's copy
    assert count(app, messages) == 11
    # alice: 10 + 1 views, bob: 10, carol: 1
    assert count(app, views) == 22


def test_a_message_arriving_during_persist_is_neither_lost_nor_cleared(app: Flask) -> None:
    chat = app.extensions["chat"]
    with app.app_context():
        state = chat.state
        chat.send_message(1, "2_User", "old")
        collected = collect(state, [2])  # the job has read bob's cache...
        late = chat.send_message(1, "2_User", "late")  # ...when this arrives
        state.history.write(collected.batch)
        state.cache.remove_listed(2, collected.window[2])
        left = chat.history(2)["1_User"]["messages"]
        assert [m["id"] for m in left] == [late.id]
        assert 2 in set(chat.cached_user_ids())
    assert count(app, messages) == 1


def test_trimmed_messages_wait_in_the_spill_until_persisted(
    app_factory: Callable[..., Flask], database_url: str
) -> None:
    app = app_factory(
        CHAT_DATABASE_URL=database_url, CHAT_DATABASE_AUTO_UPGRADE=True, CHAT_HISTORY_LIMIT=3
    )
    chat = app.extensions["chat"]
    with app.app_context():
        ids = [chat.send_message(1, "2_User", str(i)).id for i in range(7)]
        assert [m["id"] for m in chat.history(2)["1_User"]["messages"]] == ids[4:]
        assert len(chat.state.cache.spilled(2)) == 4
        persist_users([1, 2], clear=False)
        assert chat.state.cache.spilled(2) == {}
        assert len(chat.history(2)["1_User"]["messages"]) == 3  # kept: clear=False
    assert count(app, messages) == 7


def test_write_behind_drain(app: Flask) -> None:
    from flask_chat.jobs import drain_write_behind

    chat = app.extensions["chat"]
    with app.app_context():
        for i in range(30):
            chat.send_message(1 + i % 2, "2_User" if i % 2 == 0 else "1_User", str(i))
        assert chat.state.redis.llen(chat.state.keys.persist_queue()) == 30
        assert drain_write_behind()["written"] == 30
        assert chat.state.redis.llen(chat.state.keys.persist_queue()) == 0
        assert drain_write_behind()["written"] == 0
        # The caches are untouched: write-behind only copies.
        assert len(chat.history(1)["2_User"]["messages"]) == 30
    assert count(app, messages) == 30
    assert count(app, views) == 60


def test_conversations_page_back_from_the_cache_into_sql(app: Flask, as_user: Login) -> None:
    chat = app.extensions["chat"]
    with app.app_context():
        old = [chat.send_message(1, "2_User", f"old {i}").id for i in range(4)]
        persist_users([1, 2], clear=True)
        new = [chat.send_message(2, "1_User", f"new {i}").id for i in range(3)]
    alice = as_user(1)
    page = alice.get("/chats/conversations/2_User?limit=5").json
    assert [m["id"] for m in page["messages"]] == (old + new)[::-1][:5]
    assert [m["type"] for m in page["messages"]] == ["received"] * 3 + ["sent"] * 2
    rest = alice.get(f"/chats/conversations/2_User?limit=5&before={page['next_before']}").json
    assert [m["id"] for m in rest["messages"]] == old[:2][::-1]
    # Bob sees the same conversation from his side.
    bob_page = as_user(2).get("/chats/conversations/1_User?limit=10").json["messages"]
    assert [(m["id"], m["type"]) for m in bob_page][-1] == (old[0], "received")


def test_transcripts_by_session_then_conversation(app: Flask, as_user: Login) -> None:
    from conftest import make_online

    make_online(app, 2, 3)
    chat = app.extensions["chat"]
    with app.app_context():
        first = chat.login(1)
        a = chat.send_message(1, "2_User", "session one, to bob")
        b = chat.send_message(2, "1_User", "bob answers")
        g = chat.send_message(1, "5_Group", "session one, to the team")
        chat.state.history.close_session(1, first, chat._now())
        bob_session = chat.login(2)
        second = chat.login(1)
        c = chat.send_message(1, "3_User", "session two, to carol")
        persist_users([1, 2, 3], clear=True)
    body = as_user(1).get("/chats/transcripts").json
    assert body["total"] == 2
    newest, oldest = body["sessions"]
    assert newest["id"] == second and oldest["id"] == first
    assert oldest["ended_at"] is not None and newest["ended_at"] is None
    assert [(c["conversation"], c["name"]) for c in newest["conversations"]] == [
        ("3_User", "carol")
    ]
    assert [m["id"] for m in newest["conversations"][0]["messages"]] == [c.id]
    assert [
        (x["conversation"], x["type"], x["name"], [m["id"] for m in x["messages"]])
        for x in oldest["conversations"]
    ] == [("2_User", "User", "bob", [a.id, b.id]), ("5_Group", "Group", "team", [g.id])]
    assert [m["type"] for m in oldest["conversations"][0]["messages"]] == ["sent", "received"]
    # Bob's transcript holds the same messages from his side (his session started later,
    # so the earlier ones belong to no session of his and are not in it).
    bob = as_user(2).get("/chats/transcripts").json
    assert [s["id"] for s in bob["sessions"]] == [bob_session]
    paged = as_user(1).get("/chats/transcripts?per_page=1&page=2").json
    assert [s["id"] for s in paged["sessions"]] == [first]
    assert as_user(1).get("/chats/transcripts?page=0").status_code == 400


def test_sweep_takes_a_bounded_number_of_sql_round_trips(
    app_factory: Callable[..., Flask], database_url: str
) -> None:
    """10,000 cached messages of 1,000 users: statements grow with batches, not messages."""
    app = app_factory(
        CHAT_DATABASE_URL=database_url,
        CHAT_DATABASE_AUTO_UPGRADE=True,
        CHAT_PERSIST_BATCH_USERS=250,
        CHAT_PERSISTENCE=False,
    )
    chat = app.extensions["chat"]
    from flask_chat.cache import CacheEntry

    with app.app_context():
        state = chat.state
        entries = []
        for n in range(10_000):
            owner = 1 + n % 1000
            mid = f"{1700000000000 + n:013d}-0000"
            entries.append(
                CacheEntry(
                    owner,
                    f"{1 + (owner % 999) + 1}_User",
                    mid,
                    '{"message_text": "m", "type": "sent", "image": null, '
                    f'"id": "{mid}", "sender_id": {owner}, '
                    '"sent_at": "2023-11-14T22:13:20.000Z"}',
                )
            )
            if len(entries) == 2000:
                state.cache.append(entries, score=1)
                entries = []
        statements: list[str] = []
        engine = state.history.engine
        listener = lambda *args: statements.append(args[2])  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        try:
            result = sweep()
        finally:
            event.remove(engine, "before_cursor_execute", listener)
    assert result["users"] == 1000 and result["written"] == 10_000
    writes = [s for s in statements if not s.lstrip().upper().startswith("PRAGMA")]
    # 4 batches x (existing ids, message inserts, session lookup, view inserts): a few
    # dozen statements at most, never one per message.
    assert len(writes) <= 4 * 30, len(writes)
    assert count(app, messages) == 10_000


def test_flask_sqlalchemy_db_is_used_when_given(
    redis_url: str, tmp_path: Any, closing: Callable[[Flask], Flask]
) -> None:
    from flask_sqlalchemy import SQLAlchemy

    from flask_chat import Chat

    app = closing(Flask(__name__))
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/host.db",
        CHAT_REDIS_URL=redis_url,
        CHAT_DATABASE_AUTO_UPGRADE=True,
        CHAT_SEND_RATE=0,
    )
    db = SQLAlchemy(app)
    chat = Chat(app, db=db)

    @chat.user_loader
    def user(user_id: int) -> dict[str, Any]:
        return {"name": str(user_id), "image": None}

    with app.app_context():
        assert chat.state.history.engine is db.engine
        chat.send_message(1, "2_User", "host db")
        persist_users([1, 2])
        with db.engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(messages)) == 1
        db.engine.dispose()


def test_sessions_start_and_end_with_flask_login(
    redis_url: str, database_url: str, closing: Callable[[Flask], Flask]
) -> None:
    import sys

    from helpers import form_login, form_logout

    sys.path.insert(0, __import__("helpers").ROOT + "/examples")
    import chat_app

    app = closing(
        chat_app.create_app(
            {"TESTING": True, "CHAT_REDIS_URL": redis_url, "CHAT_DATABASE_URL": database_url}
        )
    )
    c = app.test_client()
    form_login(c, "alice")
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(sessions)).mappings().all()
        assert [(r["user_id"], r["ended_at"]) for r in rows] == [(1, None)]
        form_logout(c)
        with engine.connect() as conn:
            rows = conn.execute(select(sessions)).mappings().all()
        assert rows[0]["ended_at"] is not None
    finally:
        engine.dispose()


class Killed(BaseException):
    """The process dies here (a BaseException: nothing in flask-chat catches it)."""


def dies_after(client: Any, steps: int) -> Callable[[], None]:
    """Make ``client`` die before its command (or pipeline) number ``steps + 1``: what a
    kill -9 between two Redis round trips leaves. Returns the undo."""
    calls = [0]
    execute_command, pipeline = client.execute_command, client.pipeline

    def step() -> None:
        calls[0] += 1
        if calls[0] > steps:
            raise Killed()

    def command(*args: Any, **kwargs: Any) -> Any:
        step()
        return execute_command(*args, **kwargs)

    def pipe(*args: Any, **kwargs: Any) -> Any:
        made = pipeline(*args, **kwargs)
        execute = made.execute

        def run(*a: Any, **k: Any) -> Any:
            step()
            return execute(*a, **k)

        made.execute = run
        return made

    client.execute_command, client.pipeline = command, pipe

    def undo() -> None:
        del client.execute_command, client.pipeline

    return undo


def test_persist_then_clear_killed_at_any_step_leaves_nothing_the_sweep_misses(
    app: Flask,
) -> None:
    """Kill the job between any two of its Redis round trips: the next sweep still finds
    the user, persists what is left and clears it. (Dropping the user from the set of
    cached users before clearing their cache lost them to every later sweep.)"""
    chat = app.extensions["chat"]
    sent: list[str] = []
    with app.app_context():
        state = chat.state
        for steps in range(100):
            sent += [chat.send_message(1, "2_User", f"{steps}: {i}").id for i in range(3)]
            undo = dies_after(state.redis, steps)
            try:
                persist_users([2], clear=True)
                finished = True
            except Killed:
                finished = False
            finally:
                undo()
            sweep(recover_grace=0)  # a later sweep (the dead job's markers are old by then)
            assert chat.history(1) == chat.history(2) == {}, steps
            assert list(chat.cached_user_ids()) == [], steps
            assert state.redis.zcard(state.keys.clearing()) == 0
            if finished:
                break
        assert steps > 3  # the job was killed at every one of its steps first
    with app.app_context():
        with state.history.engine.connect() as conn:
            assert set(conn.scalars(select(messages.c.id))) == set(sent)


def test_every_script_declares_keys_of_one_slot(app: Flask) -> None:
    """Redis Cluster's rule for the drain's and the clear's scripts: the processing lists
    and leases hash like the queue itself (their tag is the queue's key)."""
    from redis.crc import key_slot

    with app.app_context():
        keys = app.extensions["chat"].state.keys
    drain = [keys.persist_queue(), keys.persist_processing("job-1"), keys.persist_leases()]
    assert len({key_slot(k.encode()) for k in drain}) == 1
    clear = [keys.conversations(7), keys.floor(7), keys.spill(7),
             *keys.conversation_keys(7, "2_User")[1:3], *keys.conversation_keys(7, "5_Group")[1:3]]
    assert len({key_slot(k.encode()) for k in clear}) == 1
