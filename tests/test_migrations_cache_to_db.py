"""``flask chat migrate cache-to-db``: flask-chat's cached history into SQL with the
jobs' own persist-then-clear, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from conftest import make_online
from flask import Flask
from sqlalchemy import func, select

from flask_chat.models import messages, views


@pytest.fixture
def app(app_factory: Callable[..., Flask], database_url: str) -> Flask:
    application = app_factory(CHAT_DATABASE_URL=database_url, CHAT_DATABASE_AUTO_UPGRADE=True)
    make_online(application, 3)
    chat = application.extensions["chat"]
    with application.app_context():
        for i in range(5):
            chat.send_message(1, "2_User", f"hello {i}")
            chat.send_message(2, "1_User", f"hi {i}")
        chat.send_message(1, "5_Group", "to the team")  # carol is online: in her cache
    return application


def migrate(app: Flask, *args: str) -> str:
    result = app.test_cli_runner().invoke(args=["chat", "migrate", "cache-to-db", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return str(result.output).strip().splitlines()[-1]


def count(app: Flask, table: Any = messages) -> int:
    with app.app_context():
        with app.extensions["chat"].state.history.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def test_every_cached_message_reaches_sql_once(app: Flask) -> None:
    assert migrate(app) == (
        "cache-to-db: 3 cached users read (3 users, 4 conversations); 11 messages read, "
        "11 written, 0 already present; 0 caches cleared, 3 kept; 0 skipped")
    assert count(app) == 11 and count(app, views) == 22
    assert migrate(app) == (
        "cache-to-db: 3 cached users read (3 users, 4 conversations); 11 messages read, "
        "0 written, 11 already present; 0 caches cleared, 3 kept; 0 skipped")
    assert count(app) == 11


def test_clear_empties_the_caches_of_offline_users_only(app: Flask) -> None:
    assert "11 written, 0 already present; 2 caches cleared, 1 kept" in migrate(app, "--clear")
    chat = app.extensions["chat"]
    with app.app_context():
        assert chat.history(1) == {} and chat.history(2) == {}
        assert chat.history(3) != {}  # online: persisted, not cleared
    assert count(app) == 11


def test_a_dry_run_writes_nothing(app: Flask) -> None:
    line = migrate(app, "--dry-run", "--clear")
    assert "11 messages read, 11 would be written, 0 already present" in line
    assert count(app) == 0
    with app.app_context():
        assert app.extensions["chat"].history(1) != {}


def test_an_interrupted_run_resumes(app: Flask) -> None:
    first = migrate(app, "--batch", "1", "--max-users", "1")
    assert first.startswith("cache-to-db: 1 cached users read") and "STOPPED EARLY" in first
    second = migrate(app, "--batch", "1")
    assert second.startswith("cache-to-db: 3 cached users read")
    assert "resumed after 1 users done earlier" in second
    assert count(app) == 11 and count(app, views) == 22
    assert "resumed" not in migrate(app)  # finished: the checkpoint is gone


def test_a_cache_that_cannot_be_read_is_skipped_with_its_reason(app: Flask, r: redis.Redis) -> None:
    with app.app_context():
        keys = app.extensions["chat"].state.keys
    r.zadd(keys.conversations(9), {"1_User": 1})
    r.zadd(keys.message_index(9, "1_User"), {"1700000000000-0000": 0})
    r.hset(keys.message_bodies(9, "1_User"), "1700000000000-0000", "{not json")
    r.sadd(keys.cached_users(), 9)
    line = migrate(app)
    assert line.startswith("cache-to-db: 4 cached users read (3 users")
    assert line.endswith("1 skipped (corrupt: 1)")
    assert count(app) == 11
