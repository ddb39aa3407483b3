"""The HTTP routes: round trips through real Redis, and every refused input."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from helpers import dump

from flask_chat import message_sent

Login = Callable[[int], FlaskClient]


def send(client: FlaskClient, to: str, text: str) -> Any:
    return client.post("/chats/send_message", json={"to": to, "message_text": text})


def test_one_to_one_round_trip_matches_the_seed_layout(as_user: Login) -> None:
    alice, bob = as_user(1), as_user(2)
    first = send(alice, "2_User", "hi bob")
    assert first.status_code == 201, first.json
    body = first.json
    assert list(body) == [
        "id",
        "conversation",
        "message_text",
        "type",
        "image",
        "sender_id",
        "sent_at",
    ]
    assert body["conversation"] == "2_User"
    assert body["type"] == "sent"
    assert body["sender_id"] == 1
    assert body["image"] == "/img/alice.png"
    assert body["sent_at"].endswith("Z")
    reply = send(bob, "1_User", "hello alice").json

    alice_history = alice.get("/chats/history").json
    bob_history = bob.get("/chats/history").json
    assert alice_history == {
        "2_User": {
            "type": "User",
            "messages": [
                {
                    "message_text": "hi bob",
                    "type": "sent",
                    "image": "/img/alice.png",
                    "id": body["id"],
                    "sender_id": 1,
                    "sent_at": body["sent_at"],
                },
                {
                    "message_text": "hello alice",
                    "type": "received",
                    "image": "/img/bob.png",
                    "id": reply["id"],
                    "sender_id": 2,
                    "sent_at": reply["sent_at"],
                },
            ],
        }
    }
    assert bob_history == {
        "1_User": {
            "type": "User",
            "messages": [
                {
                    "message_text": "hi bob",
                    "type": "received",
                    "image": "/img/alice.png",
                    "id": body["id"],
                    "sender_id": 1,
                    "sent_at": body["sent_at"],
                },
                {
                    "message_text": "hello alice",
                    "type": "sent",
                    "image": "/img/bob.png",
                    "id": reply["id"],
                    "sender_id": 2,
                    "sent_at": reply["sent_at"],
                },
            ],
        }
    }
    # Nothing else at the top level, and carol has nothing.
    assert as_user(3).get("/chats/history").json == {}


def test_group_round_trip_reaches_every_online_member(as_user: Login, app: Flask) -> None:
    from conftest import make_online

    make_online(app, 1, 2, 3)
    alice, bob, carol = as_user(1), as_user(2), as_user(3)
    sent = send(alice, "5_Group", "hello team").json
    assert sent["conversation"] == "5_Group"
    send(carol, "5_Group", "hi all")
    for client, types in (
        (alice, ["sent", "received"]),
        (bob, ["received", "received"]),
        (carol, ["received", "sent"]),
    ):
        history = client.get("/chats/history").json
        assert list(history) == ["5_Group"]
        assert history["5_Group"]["type"] == "Group"
        messages = history["5_Group"]["messages"]
        assert [m["message_text"] for m in messages] == ["hello team", "hi all"]
        assert [m["type"] for m in messages] == types
        assert [m["sender_id"] for m in messages] == [1, 3]


def test_form_posts_work_and_carry_the_token_as_a_field(app: Flask) -> None:
    from conftest import login

    c = app.test_client()
    token = login(c, 1)
    resp = c.post(
        "/chats/send_message", data={"to": "2_User", "message_text": "by form", "csrf_token": token}
    )
    assert resp.status_code == 201, resp.json
    assert resp.json["message_text"] == "by form"


def test_offline_members_get_no_cache_entry_but_see_the_group_on_opening(
    as_user: Login, app: Flask
) -> None:
    from conftest import make_online

    make_online(app, 2)  # bob online, carol offline
    alice, bob, carol = as_user(1), as_user(2), as_user(3)
    sent = send(alice, "5_Group", "while carol was away").json
    assert list(bob.get("/chats/history").json) == ["5_Group"]
    assert carol.get("/chats/history").json == {}
    opened = carol.get("/chats/conversations/5_Group").json
    assert [m["id"] for m in opened["messages"]] == [sent["id"]]
    assert opened["messages"][0]["type"] == "received"
    mine = alice.get("/chats/conversations/5_Group").json["messages"]
    assert [(m["id"], m["type"]) for m in mine] == [(sent["id"], "sent")]


def test_message_sent_signal(app: Flask, as_user: Login) -> None:
    seen: list[tuple[Any, list[int]]] = []

    def receiver(sender: Flask, message: Any, recipients: list[int]) -> None:
        seen.append((message, recipients))

    from conftest import make_online

    make_online(app, 2, 3)
    with message_sent.connected_to(receiver, app):
        send(as_user(1), "5_Group", "signal me")
    assert len(seen) == 1
    message, recipients = seen[0]
    assert message.message_text == "signal me"
    assert sorted(recipients) == [2, 3]


def test_conversation_pages_back_newest_first(as_user: Login) -> None:
    alice = as_user(1)
    ids = [send(alice, "2_User", f"m{i}").json["id"] for i in range(7)]
    page = alice.get("/chats/conversations/2_User?limit=3").json
    assert [m["id"] for m in page["messages"]] == ids[::-1][:3]
    assert page["next_before"] == ids[4]
    page2 = alice.get(f"/chats/conversations/2_User?limit=3&before={page['next_before']}").json
    assert [m["id"] for m in page2["messages"]] == ids[::-1][3:6]
    last = alice.get(f"/chats/conversations/2_User?limit=3&before={ids[1]}").json
    assert [m["id"] for m in last["messages"]] == [ids[0]]
    assert last["next_before"] is None
    empty = as_user(3).get("/chats/conversations/1_User").json
    assert empty["messages"] == [] and empty["next_before"] is None


def test_windows_are_stored_in_order(as_user: Login) -> None:
    alice = as_user(1)
    assert alice.get("/chats/windows").json == {"windows": []}
    alice.post("/chats/windows", json={"conversation": "2_User", "state": "open"})
    alice.post("/chats/windows", json={"conversation": "5_Group", "state": "minimised"})
    resp = alice.post("/chats/windows", json={"conversation": "2_User", "state": "hidden"})
    assert resp.status_code == 200
    expected = [
        {"conversation": "2_User", "state": "hidden"},
        {"conversation": "5_Group", "state": "minimised"},
    ]
    assert resp.json == {"windows": expected}
    assert alice.get("/chats/windows").json == {"windows": expected}


@pytest.mark.parametrize(
    "path", ["/chats/history", "/chats/windows", "/chats/conversations/2_User"]
)
def test_anonymous_gets_401(client: FlaskClient, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 401
    assert resp.json["error"] == "not_authenticated"


def test_anonymous_send_is_401_and_stores_nothing(client: FlaskClient, r: redis.Redis) -> None:
    resp = client.post("/chats/send_message", json={"to": "2_User", "message_text": "x"})
    assert resp.status_code == 401
    assert dump(r) == {}


# Each case: (request kwargs, status, code). Sent by alice (1) with her CSRF token.
BAD_SENDS: list[tuple[str, dict[str, Any], int, str]] = [
    ("unknown user", {"json": {"to": "99_User", "message_text": "x"}}, 404, "unknown_recipient"),
    ("unknown group", {"json": {"to": "99_Group", "message_text": "x"}}, 404, "unknown_recipient"),
    ("not a member", {"json": {"to": "6_Group", "message_text": "x"}}, 403, "not_a_member"),
    ("to self", {"json": {"to": "1_User", "message_text": "x"}}, 400, "invalid_recipient"),
    ("empty text", {"json": {"to": "2_User", "message_text": ""}}, 400, "empty_message"),
    ("blank text", {"json": {"to": "2_User", "message_text": " \n\t "}}, 400, "empty_message"),
    ("too long", {"json": {"to": "2_User", "message_text": "x" * 2001}}, 400, "message_too_long"),
    ("text not a string", {"json": {"to": "2_User", "message_text": 5}}, 400, "invalid_field"),
    ("text a list", {"json": {"to": "2_User", "message_text": ["a"]}}, 400, "invalid_field"),
    ("no text", {"json": {"to": "2_User"}}, 400, "missing_field"),
    ("no to", {"json": {"message_text": "x"}}, 400, "missing_field"),
    ("malformed to", {"json": {"to": "bob", "message_text": "x"}}, 400, "invalid_conversation"),
    ("zero id", {"json": {"to": "0_User", "message_text": "x"}}, 400, "invalid_conversation"),
    ("padded id", {"json": {"to": "02_User", "message_text": "x"}}, 400, "invalid_conversation"),
    (
        "lower-case kind",
        {"json": {"to": "2_user", "message_text": "x"}},
        400,
        "invalid_conversation",
    ),
    (
        "huge id",
        {"json": {"to": "99999999999999999999_User", "message_text": "x"}},
        400,
        "invalid_conversation",
    ),
    ("to a number", {"json": {"to": 2, "message_text": "x"}}, 400, "invalid_conversation"),
    (
        "trailing newline",
        {"json": {"to": "2_User\n", "message_text": "x"}},
        400,
        "invalid_conversation",
    ),
    (
        "invalid json",
        {"data": b'{"to": "2_User",', "content_type": "application/json"},
        400,
        "invalid_json",
    ),
    (
        "invalid utf-8",
        {"data": b'{"to": "\xff"}', "content_type": "application/json"},
        400,
        "invalid_json",
    ),
    ("json not an object", {"json": ["2_User", "x"]}, 400, "invalid_body"),
    ("json null", {"data": b"null", "content_type": "application/json"}, 400, "invalid_body"),
    (
        "wrong content type",
        {"data": "to=2_User", "content_type": "text/plain"},
        415,
        "unsupported_media_type",
    ),
    ("no content type", {"data": b""}, 415, "unsupported_media_type"),
    (
        "body too large",
        {"json": {"to": "2_User", "message_text": "x" * 70000}},
        413,
        "request_too_large",
    ),
    (
        "lone surrogate",
        {
            "data": b'{"to": "2_User", "message_text": "\\ud800"}',
            "content_type": "application/json",
        },
        400,
        "invalid_field",
    ),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "status", "code"), BAD_SENDS, ids=[c[0] for c in BAD_SENDS]
)
def test_bad_sends_are_refused_and_change_nothing(
    as_user: Login, r: redis.Redis, name: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    alice = as_user(1)
    send(alice, "2_User", "before")  # some state to compare against
    before = dump(r)
    resp = alice.post("/chats/send_message", **kwargs)
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.json["error"] == code
    assert isinstance(resp.json["message"], str) and resp.json["message"]
    assert dump(r) == before


def test_csrf_missing_or_wrong_token_is_refused(app: Flask, r: redis.Redis) -> None:
    from conftest import login

    c = app.test_client()
    login(c, 1)
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
        resp = c.post(
            "/chats/send_message", json={"to": "2_User", "message_text": "x"}, headers=headers
        )
        assert resp.status_code == 403
        assert resp.json["error"] == "csrf_failed"
        resp = c.post(
            "/chats/windows", json={"conversation": "2_User", "state": "open"}, headers=headers
        )
        assert resp.status_code == 403
    assert dump(r) == {}


def test_csrf_token_from_the_bootstrap_data_works(app: Flask) -> None:
    c = app.test_client()
    with c.session_transaction() as sess:
        sess["uid"] = 1
    html = c.get("/page").get_data(as_text=True)
    start = html.index('id="flask-chat-bootstrap">') + len('id="flask-chat-bootstrap">')
    data = json.loads(html[start : html.index("</script>", start)])
    resp = c.post(
        "/chats/send_message",
        json={"to": "2_User", "message_text": "x"},
        headers={"X-CSRF-Token": data["csrf_token"]},
    )
    assert resp.status_code == 201


def test_csrf_can_be_switched_off(app_factory: Callable[..., Flask]) -> None:
    from conftest import login

    app = app_factory(CHAT_CSRF_ENABLED=False)
    c = app.test_client()
    login(c, 1)
    assert (
        c.post("/chats/send_message", json={"to": "2_User", "message_text": "x"}).status_code == 201
    )


BAD_READS = [
    ("/chats/conversations/bob", 400, "invalid_conversation"),
    ("/chats/conversations/99_User", 404, "unknown_recipient"),
    ("/chats/conversations/6_Group", 403, "not_a_member"),
    ("/chats/conversations/2_User?limit=0", 400, "invalid_parameter"),
    ("/chats/conversations/2_User?limit=abc", 400, "invalid_parameter"),
    ("/chats/conversations/2_User?limit=100000", 400, "invalid_parameter"),
    ("/chats/conversations/2_User?before=zzz", 400, "invalid_parameter"),
]


@pytest.mark.parametrize(("path", "status", "code"), BAD_READS)
def test_bad_reads(as_user: Login, path: str, status: int, code: str) -> None:
    resp = as_user(1).get(path)
    assert resp.status_code == status
    assert resp.json["error"] == code


BAD_WINDOWS: list[tuple[dict[str, Any], int, str]] = [
    ({"conversation": "2_User", "state": "maximised"}, 400, "invalid_state"),
    ({"conversation": "2_User"}, 400, "missing_field"),
    ({"state": "open"}, 400, "missing_field"),
    ({"conversation": "x", "state": "open"}, 400, "invalid_conversation"),
    ({"conversation": "99_User", "state": "open"}, 404, "unknown_recipient"),
    ({"conversation": "6_Group", "state": "open"}, 403, "not_a_member"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_WINDOWS)
def test_bad_windows_change_nothing(
    as_user: Login, r: redis.Redis, body: dict[str, Any], status: int, code: str
) -> None:
    alice = as_user(1)
    alice.post("/chats/windows", json={"conversation": "5_Group", "state": "open"})
    before = dump(r)
    resp = alice.post("/chats/windows", json=body)
    assert resp.status_code == status
    assert resp.json["error"] == code
    assert dump(r) == before


# -- hostile input: always a 4xx JSON error with a code, never a 500 -------------------------

HOSTILE_NUMBERS = [
    "/chats/conversations/2_User?limit=%C2%B2",  # "²": str.isdigit() says yes, int() no
    "/chats/conversations/2_User?limit=%D9%A3",  # "٣", an Arabic-Indic digit
    "/chats/conversations/2_User?limit=" + "9" * 5000,  # over int()'s digit limit
    "/chats/conversations/2_User?before=%D9%A3%D9%A3%D9%A3%D9%A3%D9%A3%D9%A3%D9%A3"
    "%D9%A3%D9%A3%D9%A3%D9%A3%D9%A3%D9%A3-0000",
    "/chats/online_users?offset=%C2%B2",
    "/chats/online_users?offset=" + "9" * 5000,
    "/chats/online_users?limit=%C2%B9",
    "/chats/transcripts?page=%C2%B2",
    "/chats/transcripts?page=" + "9" * 5000,
    "/chats/transcripts?per_page=%D9%A3",
]


@pytest.mark.parametrize("path", HOSTILE_NUMBERS)
def test_hostile_numbers_in_the_query_are_400s(as_user: Login, path: str) -> None:
    resp = as_user(1).get(path)
    assert resp.status_code == 400
    assert resp.json["error"] == "invalid_parameter"


def test_deeply_nested_json_bodies_are_400s_and_change_nothing(
    as_user: Login, r: redis.Redis
) -> None:
    alice = as_user(1)
    before = dump(r)
    for body in ("[" * 50_000, '{"a":' * 10_000):
        resp = alice.post("/chats/send_message", data=body, content_type="application/json")
        assert resp.status_code == 400
        assert resp.json["error"] == "invalid_json"
    assert dump(r) == before


@pytest.mark.parametrize("sender", ["\u00b2", "\u0663", "1" * 5000, "-1", " 1"])
def test_api_sender_ids_that_are_not_plain_digits_are_400s(
    app_factory: Callable[..., Flask], r: redis.Redis, sender: str
) -> None:
    app = app_factory(CHAT_API_TOKEN="secret")
    before = dump(r)
    resp = app.test_client().post(
        "/chats/api/messages",
        json={"sender_id": sender, "to": "2_User", "message_text": "x"},
        headers={"Authorization": "Bearer secret"},
    )
    assert resp.status_code == 400
    assert resp.json["error"] == "invalid_sender"
    assert dump(r) == before


def test_routing_errors_under_the_prefix_are_json_and_the_host_keeps_its_own(
    redis_url: str, closing: Callable[[Flask], Flask], tmp_path: Any
) -> None:
    from flask_chat import Chat

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test", CHAT_REDIS_URL=redis_url, CHAT_DATABASE_AUTO_UPGRADE=True,
        CHAT_DATABASE_URL=f"sqlite:///{tmp_path}/chat.db",
    )

    @app.errorhandler(404)
    def host_404(error: Exception) -> tuple[str, int]:
        return "the host's own page", 404

    Chat(app)
    closing(app)
    client = app.test_client()
    resp = client.get("/chats/send_message")
    assert resp.status_code == 405
    assert resp.json["error"] == "method_not_allowed"
    assert "POST" in resp.headers["Allow"]
    resp = client.delete("/chats/history")
    assert resp.status_code == 405 and resp.json["error"] == "method_not_allowed"
    resp = client.get("/chats/no/such/route")
    assert resp.status_code == 404 and resp.json["error"] == "not_found"
    resp = client.get("/elsewhere")
    assert resp.status_code == 404 and resp.get_data(as_text=True) == "the host's own page"


def test_redis_down_is_a_503_json_error(
    app_factory: Callable[..., Flask], redis_url: str
) -> None:
    from helpers import free_port

    app = app_factory(CHAT_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    client = app.test_client()
    from conftest import login

    token = login(client, 1)
    resp = client.post(
        "/chats/send_message",
        json={"to": "2_User", "message_text": "x"},
        headers={"X-CSRF-Token": token},
    )
    assert resp.status_code == 503
    assert resp.json["error"] == "unavailable"
    assert resp.headers["Retry-After"] == "1"
    resp = client.get("/chats/history")
    assert resp.status_code == 503 and resp.json["error"] == "unavailable"
