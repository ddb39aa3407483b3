"""``{{ chat_bootstrap() }}``: data for the client that no string can break out of."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import conftest
from flask.testing import FlaskClient

Login = Callable[[int], FlaskClient]

HOSTILE = "</script><script>alert(1)</script><!-- '\"& \u2028\u2029 </SCRIPT >"


def bootstrap_of(html: str) -> dict:
    match = re.search(
        r'<script type="application/json" id="flask-chat-bootstrap">(.*?)</script>', html, re.S
    )
    assert match, html
    return json.loads(match.group(1))


def test_anonymous_pages_get_nothing(client: FlaskClient) -> None:
    assert client.get("/page").get_data(as_text=True) == "<html><body></body></html>"


def test_bootstrap_has_history_windows_and_settings(as_user: Login) -> None:
    alice = as_user(1)
    alice.post("/chats/send_message", json={"to": "2_User", "message_text": "hi"})
    alice.post("/chats/windows", json={"conversation": "2_User", "state": "minimised"})
    html = alice.get("/page").get_data(as_text=True)
    data = bootstrap_of(html)
    assert data["user"] == {"id": 1, "name": "alice", "image": "/img/alice.png"}
    assert data["history"] == alice.get("/chats/history").json
    assert data["windows"] == [{"conversation": "2_User", "state": "minimised"}]
    assert data["people"]["2"]["name"] == "bob"
    assert data["people"]["3"]["name"] == "carol"  # a member of alice's group
    assert data["groups"]["5"] == {"id": 5, "name": "team", "members": [1, 2, 3]}
    assert data["csrf_token"]
    assert data["urls"]["send_message"] == "/chats/send_message"
    assert data["settings"]["max_message_length"] == 2000
    assert "/chats/static/flask_chat/chat.js" in html
    assert "/chats/static/flask_chat/chat.css" in html


def test_hostile_message_text_and_names_cannot_break_out(
    as_user: Login, monkeypatch: object
) -> None:
    # A hostile display name for bob, and hostile message text in the cache.
    conftest.USERS[2] = conftest.UserInfo(2, HOSTILE, "/img/x.png?a=1&b=</script>")
    try:
        alice = as_user(1)
        assert (
            alice.post(
                "/chats/send_message", json={"to": "2_User", "message_text": HOSTILE}
            ).status_code
            == 201
        )
        as_user(2).post("/chats/send_message", json={"to": "1_User", "message_text": HOSTILE})
        html = alice.get("/page").get_data(as_text=True)
    finally:
        conftest.USERS[2] = conftest.UserInfo(2, "bob", "/img/bob.png")
    body = html.split('id="flask-chat-bootstrap">', 1)[1]
    # Exactly one closing tag for our JSON script, no comment opener inside it.
    json_text = body.split("</script>", 1)[0]
    assert "<" not in json_text and ">" not in json_text
    data = bootstrap_of(html)
    texts = [m["message_text"] for m in data["history"]["2_User"]["messages"]]
    assert texts == [HOSTILE, HOSTILE]
    assert data["people"]["2"]["name"] == HOSTILE
    assert "<!--" not in html


def test_static_assets_are_served(client: FlaskClient) -> None:
    with client.get("/chats/static/flask_chat/chat.js") as js:
        assert js.status_code == 200
        assert b"textContent" in js.data
        assert b"innerHTML" not in js.data  # text is never parsed as HTML
    with client.get("/chats/static/flask_chat/chat.css") as css:
        assert css.status_code == 200
