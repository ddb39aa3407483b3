"""The demo app in examples/: login, two pages with the chat, logout, env settings."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
)

import chat_app  # noqa: E402
from helpers import form_login, form_logout, form_token  # noqa: E402
from test_templating import bootstrap_of  # noqa: E402


@pytest.fixture
def demo(redis_url: str, closing: Callable[[Flask], Flask], tmp_path: Any) -> Iterator[Flask]:
    yield closing(
        chat_app.create_app(
            {
                "TESTING": True,
                "CHAT_REDIS_URL": redis_url,
                "CHAT_DATABASE_URL": f"sqlite:///{tmp_path}/chat.db",
            }
        )
    )


def login(client, name: str) -> dict:
    resp = form_login(client, name)
    assert resp.status_code == 302
    return bootstrap_of(client.get("/").get_data(as_text=True))


def test_users_and_group_match_the_seed_keys(demo: Flask) -> None:
    alice, bob = demo.test_client(), demo.test_client()
    a = login(alice, "alice")
    b = login(bob, "bob")
    assert a["user"]["id"] == 1 and b["user"]["id"] == 2
    assert a["groups"]["5"]["name"] == "team"
    from conftest import make_online

    make_online(demo, 2)  # bob is online, so the group message reaches his cache
    headers = {"X-CSRF-Token": a["csrf_token"]}
    assert (
        alice.post(
            "/chats/send_message", json={"to": "2_User", "message_text": "hi bob"}, headers=headers
        ).status_code
        == 201
    )
    assert (
        alice.post(
            "/chats/send_message",
            json={"to": "5_Group", "message_text": "hi team"},
            headers=headers,
        ).status_code
        == 201
    )
    history = bob.get("/chats/history").json
    assert list(history) == ["1_User", "5_Group"]
    assert history["1_User"]["messages"][0]["image"] == "/static/avatars/alice.svg"
    # Both pages carry the chat, rebuilt from the cache.
    for page in ("/", "/about"):
        data = bootstrap_of(bob.get(page).get_data(as_text=True))
        assert data["history"] == history
    with bob.get("/static/avatars/bob.svg") as avatar:
        assert avatar.mimetype == "image/svg+xml"


def test_login_logout_and_unknown_user(demo: Flask) -> None:
    c = demo.test_client()
    assert c.get("/").status_code == 302
    token = form_token(c.get("/login").get_data(as_text=True))
    assert c.post("/login", data={"username": "mallory", "csrf_token": token}).status_code == 400
    login(c, "carol")
    assert c.get("/chats/history").status_code == 200
    assert form_logout(c).status_code == 302
    assert c.get("/chats/history").status_code == 401
    assert "flask-chat-bootstrap" not in c.get("/about").get_data(as_text=True)


def test_settings_come_from_the_environment(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, closing: Callable[[Flask], Flask]
) -> None:
    monkeypatch.setenv("CHAT_REDIS_URL", redis_url)
    monkeypatch.setenv("CHAT_MAX_MESSAGE_LENGTH", "12")
    monkeypatch.setenv("SECRET_KEY", "from-env")
    monkeypatch.setenv("CHAT_DATABASE_URL", "sqlite://")
    app = closing(chat_app.create_app({"TESTING": True}))
    assert app.config["CHAT_MAX_MESSAGE_LENGTH"] == 12
    assert app.config["SECRET_KEY"] == "from-env"


def test_the_secret_key_comes_from_the_environment_as_it_is(
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    closing: Callable[[Flask], Flask],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """FLASK_SECRET_KEY (Flask's own name) works too, and a key that looks like JSON
    stays the string it is (a number is no key for itsdangerous)."""
    monkeypatch.setenv("CHAT_REDIS_URL", redis_url)
    monkeypatch.setenv("CHAT_DATABASE_URL", "sqlite://")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("FLASK_SECRET_KEY", "12345")
    app = closing(chat_app.create_app({"TESTING": True}))
    assert app.config["SECRET_KEY"] == "12345"
    monkeypatch.setenv("SECRET_KEY", "first")
    assert closing(chat_app.create_app({"TESTING": True})).config["SECRET_KEY"] == "first"
    assert "SECRET_KEY not set" not in caplog.text


def test_without_a_secret_key_each_app_makes_its_own_and_warns(
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    closing: Callable[[Flask], Flask],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("FLASK_SECRET_KEY", raising=False)
    monkeypatch.setenv("SECRET_KEY", "")  # set but empty is not set
    settings = {"TESTING": True, "CHAT_REDIS_URL": redis_url, "CHAT_DATABASE_URL": "sqlite://"}
    one = closing(chat_app.create_app(settings))
    two = closing(chat_app.create_app(settings))
    keys = {one.config["SECRET_KEY"], two.config["SECRET_KEY"]}
    assert len(keys) == 2 and "demo-only-not-secret" not in keys
    assert all(isinstance(k, str) and len(k) >= 64 for k in keys)
    warned = [
        r
        for r in caplog.records
        if r.getMessage().startswith(
            "SECRET_KEY not set: a random key was generated; sessions and websocket tokens "
            "end when the process restarts"
        )
    ]
    assert [r.levelname for r in warned] == ["WARNING", "WARNING"]


def test_transcripts_page(demo: Flask) -> None:
    from flask_chat.jobs import persist_users

    c = demo.test_client()
    data = login(c, "alice")
    c.post(
        "/chats/send_message",
        json={"to": "2_User", "message_text": "<for the record>"},
        headers={"X-CSRF-Token": data["csrf_token"]},
    )
    with demo.app_context():
        persist_users([1, 2], clear=False)
    page = c.get("/transcripts").get_data(as_text=True)
    assert "With bob" in page
    assert "&lt;for the record&gt;" in page
