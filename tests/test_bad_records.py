"""One bad record never blocks its batch: U+0000 refused at send; a poisoned write-behind
record or cache entry (as an older version could have stored it) is isolated, reported
and kept for inspection while every other message of its batch reaches SQL. On SQLite
and PostgreSQL (PostgreSQL text cannot hold U+0000; SQLite can)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from helpers import dump
from sqlalchemy import func, select

from flask_chat.cache import CacheEntry
from flask_chat.errors import ValidationError
from flask_chat.jobs import drain_write_behind, persist_users, sweep
from flask_chat.models import messages, views

Login = Callable[[int], FlaskClient]


@pytest.fixture
def app(app_factory: Callable[..., Flask], database_url: str) -> Flask:
    return app_factory(CHAT_DATABASE_URL=database_url, CHAT_DATABASE_AUTO_UPGRADE=True)


def stored_ids(app: Flask) -> set[str]:
    with app.app_context():
        engine = app.extensions["chat"].state.history.engine
        with engine.connect() as conn:
            return set(conn.scalars(select(messages.c.id)))


def count(app: Flask, table: Any) -> int:
    with app.app_context():
        engine = app.extensions["chat"].state.history.engine
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def is_postgres(app: Flask) -> bool:
    with app.app_context():
        return bool(app.extensions["chat"].state.history.engine.dialect.name == "postgresql")


def dead_letters(app: Flask) -> dict[str, dict[str, Any]]:
    with app.app_context():
        state = app.extensions["chat"].state
        raw = state.redis.hgetall(state.keys.dead_letters())
    return {name: json.loads(body) for name, body in raw.items()}


def test_a_nul_in_a_message_is_refused_and_stores_nothing(
    app: Flask, as_user: Login, r: redis.Redis
) -> None:
    alice = as_user(1)
    before = dump(r)
    for body in ({"json": {"to": "2_User", "message_text": "a\x00b"}},
                 {"data": {"to": "2_User", "message_text": "\x00"}}):
        response = alice.post("/chats/send_message", **body)  # type: ignore[arg-type]
        assert response.status_code == 400, response.json
        assert response.json == {
            "error": "invalid_character",
            "field": "message_text",
            "message": "'message_text' contains U+0000 (NUL), which cannot be stored.",
        }
    chat = app.extensions["chat"]
    with app.app_context(), pytest.raises(ValidationError) as caught:
        chat.send_message(1, "5_Group", "nul \x00 in a group")
    assert caught.value.code == "invalid_character"
    assert dump(r) == before  # no cache, no queue record, no id allocated
    with app.app_context():
        drain_write_behind()
    assert count(app, messages) == 0


def poisoned_event(template: dict[str, Any], message_id: str, **changes: Any) -> bytes:
    """A write-behind record as an older version queued it: the event, and who holds it."""
    event = dict(template["m"], id=message_id, **changes)
    return json.dumps({"m": event, "v": template["v"]}).encode()


def test_a_poisoned_write_behind_record_never_blocks_its_batch(
    app: Flask, r: redis.Redis
) -> None:
    chat = app.extensions["chat"]
    with app.app_context():
        state = chat.state
        good = [chat.send_message(1, "2_User", f"good {i}").id for i in range(6)]
        key = state.keys.persist_queue()
        queued = r.lrange(key, 0, -1)
        template = json.loads(queued[0])
        nul, null, long_key = "1600000000001-0000", "1600000000002-0000", "1600000000003-0000"
        poison = [
            poisoned_event(template, nul, message_text="an old \x00 message"),
            poisoned_event(template, null, message_text=None),
            b"{not json",
            json.dumps({"m": dict(template["m"], id=long_key),
                        "v": [[1, "9" * 60 + "_User", "sent"]]}).encode(),
        ]
        r.delete(key)
        r.rpush(key, *queued[:3], *poison, *queued[3:])
        summary = drain_write_behind()
    postgres = is_postgres(app)
    # PostgreSQL refuses U+0000 and a 62-character conversation key; SQLite stores both.
    bad = {null, "record"} | ({nul, long_key} if postgres else set())
    assert summary["rejected"] == len(bad)
    assert summary["written"] == 6 + (0 if postgres else 2)
    assert stored_ids(app) == set(good) | ({nul, long_key} - bad)
    assert r.llen(key) == 0
    letters = dead_letters(app)
    assert len(letters) == len(bad)
    by_id = {entry.get("message_id") or "record": entry for entry in letters.values()}
    assert set(by_id) == bad
    assert all(e["source"] == "write-behind" and e["error"] and e["record"]
               for e in letters.values())
    assert by_id[null]["error"].startswith("invalid record")
    assert by_id["record"]["record"] == "{not json"
    if postgres:
        assert "NUL" in by_id[nul]["error"] or "0x00" in by_id[nul]["error"]
    with app.app_context():
        again = drain_write_behind()
    assert again["rejected"] == 0 and dead_letters(app) == letters
    # The caches still hold every good message: write-behind only copies.
    with app.app_context():
        assert [m["id"] for m in chat.history(2)["1_User"]["messages"]] == good
    listed = app.test_cli_runner().invoke(args=["chat", "dead-letters"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.strip().splitlines()[-1] == f"{len(bad)} dead letters"
    assert "1600000000002-0000" in listed.output
    app.test_cli_runner().invoke(args=["chat", "dead-letters", "--forget"])
    assert dead_letters(app) == {}


def test_a_poisoned_cache_entry_is_kept_and_reported_by_persist_and_the_sweep(
    app: Flask, r: redis.Redis
) -> None:
    chat = app.extensions["chat"]
    with app.app_context():
        state = chat.state
        good = [chat.send_message(1, "2_User", f"good {i}").id for i in range(4)]
        good.append(chat.send_message(2, "1_User", "bob answers").id)
        nul, null, garbage = "1600000000001-0000", "1600000000002-0000", "1600000000003-0000"

        def body(mid: str, text: Any) -> str:
            return json.dumps({"message_text": text, "type": "received", "image": None,
                               "id": mid, "sender_id": 1, "sent_at": "2020-09-13T12:26:40Z"})

        state.cache.append([
            CacheEntry(2, "1_User", nul, body(nul, "old \x00 text")),
            CacheEntry(2, "1_User", null, body(null, None)),
            CacheEntry(2, "1_User", garbage, "{not json"),
        ], score=1)
        state.redis.delete(state.keys.persist_queue())  # only the caches hold them now
        summary = persist_users([1, 2], clear=True)
    postgres = is_postgres(app)
    bad = {null, garbage} | ({nul} if postgres else set())
    assert summary["rejected"] == len(bad)
    assert summary["written"] == len(good) + (0 if postgres else 1)
    assert stored_ids(app) == set(good) | ({nul} - bad)
    with app.app_context():
        assert chat.history(1) == {}
        # Bob's cache keeps exactly what could not be persisted (never cleared
        # unpersisted), so he stays a cached user for the next sweep to retry.
        left = r.hkeys(state.keys.message_bodies(2, "1_User"))
        assert set(left) == bad
        assert 2 in set(chat.cached_user_ids()) and 1 not in set(chat.cached_user_ids())
    letters = dead_letters(app)
    assert {e["message_id"] for e in letters.values()} == bad
    assert all(e["source"] == "cache" and e["owner"] == 2 for e in letters.values())
    with app.app_context():
        swept = sweep()
    assert swept["rejected"] == len(bad) and swept["written"] == 0
    assert dead_letters(app).keys() == letters.keys()  # one entry per record, not per run
    assert count(app, views) == 2 * len(good) + (0 if postgres else 1)
    line = app.test_cli_runner().invoke(args=["chat", "sweep"]).output.strip().splitlines()[-1]
    assert line.endswith(f"; {len(bad)} could not be stored, kept in the cache "
                         "(flask chat dead-letters)"), line
