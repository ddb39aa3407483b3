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
    resp = client.post("/login", data={"username": name})
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
    assert c.post("/login", data={"username": "mallory"}).status_code == 400
    login(c, "carol")
    assert c.get("/chats/history").status_code == 200
    assert c.get("/logout").status_code == 302
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
