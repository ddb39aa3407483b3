"""The extension object: registration, settings, hooks, several apps, embedded Redis."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from flask import Flask
from helpers import dump

import flask_chat
from flask_chat import Chat, ChatError, ConfigurationError, GroupInfo, UserInfo
from flask_chat.ids import is_valid_id


def test_init_app_registers_and_refuses_a_second_chat(
    closing: Callable[[Flask], Flask], redis_url: str
) -> None:
    app = closing(Flask(__name__))
    app.config["CHAT_REDIS_URL"] = redis_url
    chat = Chat(app)
    assert app.extensions["chat"] is chat
    assert "chat" in app.blueprints
    assert app.url_map.bind("x").match("/chats/history")[0] == "chat.history"
    with pytest.raises(RuntimeError, match="already been registered"):
        Chat(app)
    with pytest.raises(RuntimeError, match="already been registered"):
        chat.init_app(app)


def test_defaults_are_set_once_and_documented(
    closing: Callable[[Flask], Flask], redis_url: str
) -> None:
    app = closing(Flask(__name__))
    app.config["CHAT_REDIS_URL"] = redis_url
    Chat(app)
    for name in flask_chat.extension.DEFAULTS:
        assert name in app.config
        assert name in (Chat.init_app.__doc__ or ""), f"{name} is not documented"
    assert app.config["CHAT_URL_PREFIX"] == "/chats"
    assert app.config["CHAT_KEY_PREFIX"] == "chat"


def test_options_given_in_code_and_config_wins(
    closing: Callable[[Flask], Flask], redis_url: str
) -> None:
    app = closing(Flask(__name__))
    app.config.update(CHAT_REDIS_URL=redis_url, CHAT_MAX_MESSAGE_LENGTH=10)
    Chat(app, max_message_length=99, url_prefix="/talk")
    assert app.config["CHAT_MAX_MESSAGE_LENGTH"] == 10
    assert app.config["CHAT_URL_PREFIX"] == "/talk"
    with pytest.raises(TypeError, match="CHAT_NOPE"):
        Chat(nope=1)


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("CHAT_URL_PREFIX", "chats", "CHAT_URL_PREFIX"),
        ("CHAT_URL_PREFIX", "/chats/", "CHAT_URL_PREFIX"),
        ("CHAT_KEY_PREFIX", "a{b}", "CHAT_KEY_PREFIX"),
        ("CHAT_KEY_PREFIX", "", "CHAT_KEY_PREFIX"),
        ("CHAT_MAX_MESSAGE_LENGTH", 0, "CHAT_MAX_MESSAGE_LENGTH"),
        ("CHAT_HISTORY_LIMIT", "200", "CHAT_HISTORY_LIMIT"),
        ("CHAT_PAGE_SIZE", True, "CHAT_PAGE_SIZE"),
    ],
)
def test_bad_settings_fail_at_init_app(
    closing: Callable[[Flask], Flask], redis_url: str, name: str, value: object, match: str
) -> None:
    app = closing(Flask(__name__))
    app.config.update({"CHAT_REDIS_URL": redis_url, name: value})
    with pytest.raises(ConfigurationError, match=match):
        Chat(app)
    assert "chat" not in app.extensions


def test_no_redis_url_fails_clearly(closing: Callable[[Flask], Flask]) -> None:
    app = closing(Flask(__name__))
    with pytest.raises(ConfigurationError, match="set CHAT_REDIS_URL"):
        Chat(app)


def test_embedded_redis_is_a_real_server(closing: Callable[[Flask], Flask]) -> None:
    app = closing(Flask(__name__))
    app.config.update(CHAT_EMBEDDED_REDIS=True)

    @Chat(app).user_loader
    def user(user_id: int) -> UserInfo:
        return UserInfo(user_id, f"u{user_id}")

    with app.app_context():
        chat = app.extensions["chat"]
        url = chat.state.config.redis_url
        assert chat.state.config.redis_url.startswith("unix://")
        info = chat.state.redis.info("server")
        assert info["redis_version"]
        chat.send_message(1, "2_User", "embedded")
        assert chat.history(2)["1_User"]["messages"][0]["message_text"] == "embedded"
        chat.clear_cache(1)
        chat.clear_cache(2)
    # A second app in the same process shares the server, and debug mode opts in too.
    other = closing(Flask(__name__))
    other.debug = True
    Chat(other)
    with other.app_context():
        assert other.extensions["chat"].state.config.redis_url == url


def test_two_apps_keep_separate_config_and_keys(
    app_factory: Callable[..., Flask], r: redis.Redis
) -> None:
    one = app_factory(CHAT_KEY_PREFIX="one", CHAT_MAX_MESSAGE_LENGTH=5)
    two = app_factory(CHAT_KEY_PREFIX="two", CHAT_URL_PREFIX="/talk")
    with one.app_context():
        chat = one.extensions["chat"]
        with pytest.raises(ChatError) as err:
            chat.send_message(1, "2_User", "longer than five")
        assert err.value.code == "message_too_long"
        chat.send_message(1, "2_User", "short")
    with two.app_context():
        two.extensions["chat"].send_message(1, "2_User", "longer than five")
        assert two.extensions["chat"].history(2)["1_User"]["messages"][0]["message_text"] == (
            "longer than five"
        )
    with one.app_context():
        assert [
            m["message_text"] for m in one.extensions["chat"].history(2)["1_User"]["messages"]
        ] == ["short"]
    prefixes = {k.split(":", 1)[0] for k in r.keys() if not k.startswith("rq:")}
    assert prefixes == {"one", "two"}
    # RQ's keys are RQ's, but each app has its own queue.
    assert {"rq:queue:one-persist", "rq:queue:two-persist"} <= set(r.keys())
    assert one.test_client().get("/talk/history").status_code == 404
    assert two.test_client().get("/talk/history").status_code == 401


def test_one_chat_object_serves_several_apps(
    closing: Callable[[Flask], Flask], redis_url: str
) -> None:
    chat = Chat()

    @chat.user_loader
    def user(user_id: int) -> dict[str, object]:
        return {"name": f"u{user_id}", "image": None}

    apps = []
    for prefix in ("a", "b"):
        app = closing(Flask(__name__))
        app.config.update(CHAT_REDIS_URL=redis_url, CHAT_KEY_PREFIX=prefix)
        chat.init_app(app)
        apps.append(app)
    for app in apps:
        with app.app_context():
            assert chat.state.config.key_prefix == app.config["CHAT_KEY_PREFIX"]
            chat.send_message(1, "2_User", app.config["CHAT_KEY_PREFIX"])
            assert (
                chat.history(2)["1_User"]["messages"][-1]["message_text"]
                == (app.config["CHAT_KEY_PREFIX"])
            )


def test_state_outside_a_registered_app_says_how_to_fix(
    closing: Callable[[Flask], Flask], redis_url: str
) -> None:
    chat = Chat()
    app = closing(Flask(__name__))
    with app.app_context(), pytest.raises(RuntimeError, match="init_app"):
        _ = chat.state


BAD_API_SENDS = [
    (0, "2_User", "x", "invalid_sender"),
    ("1", "2_User", "x", "invalid_sender"),
    (99, "2_User", "x", "unknown_sender"),
    (1, "99_User", "x", "unknown_recipient"),
    (1, "6_Group", "x", "not_a_member"),
    (1, "2_User", "", "empty_message"),
    (1, "2_User", None, "invalid_field"),
    (1, "2-User", "x", "invalid_conversation"),
]


@pytest.mark.parametrize(("sender", "to", "text", "code"), BAD_API_SENDS)
def test_python_api_validates_like_the_route(
    app: Flask, r: redis.Redis, sender: object, to: str, text: object, code: str
) -> None:
    before = dump(r)
    with app.app_context(), pytest.raises(ChatError) as err:
        app.extensions["chat"].send_message(sender, to, text)
    assert err.value.code == code
    assert dump(r) == before


def test_python_api_works_outside_a_request(app: Flask) -> None:
    with app.app_context():
        message = app.extensions["chat"].send_message(2, "5_Group", "from a worker")
    assert is_valid_id(message.id)
    assert message.for_sender()["type"] == "sent"
    assert message.sent_at.endswith("Z")


def test_message_ids_sort_in_time_order(app: Flask) -> None:
    with app.app_context():
        chat = app.extensions["chat"]
        ids = [chat.send_message(1, "2_User", str(i)).id for i in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 50
    assert all(is_valid_id(i) for i in ids)
    assert int(ids[0].split("-")[0]) < 2**53


def test_permission_handler_replaces_the_default(app_factory: Callable[..., Flask]) -> None:
    app = app_factory()
    chat = app.extensions["chat"]
    seen = []

    @chat.permission_handler
    def may(sender_id: int, to: object) -> bool:
        seen.append((sender_id, str(to)))
        return str(to) != "3_User"

    with app.app_context():
        chat.send_message(1, "6_Group", "non-member allowed by the hook")
        with pytest.raises(ChatError) as err:
            chat.send_message(1, "3_User", "refused")
        assert err.value.code == "forbidden" and err.value.status == 403
    assert seen == [(1, "6_Group"), (1, "3_User")]


def test_flask_login_is_the_default_current_user(
    closing: Callable[[Flask], Flask], redis_url: str
) -> None:
    from flask_login import LoginManager, UserMixin, login_user

    class U(UserMixin):
        def __init__(self, id: int) -> None:
            self.id = id
            self.name = f"user{id}"
            self.image_url = f"/img/{id}.png"

    app = closing(Flask(__name__))
    app.config.update(SECRET_KEY="x", CHAT_REDIS_URL=redis_url, CHAT_CSRF_ENABLED=False)
    manager = LoginManager(app)
    manager.user_loader(lambda uid: U(int(uid)) if uid in ("1", "2") else None)
    Chat(app)

    @app.get("/login/<int:uid>")
    def login(uid: int) -> str:
        login_user(U(uid))
        return "ok"

    c = app.test_client()
    assert c.get("/chats/history").status_code == 401
    c.get("/login/1")
    sent = c.post("/chats/send_message", json={"to": "2_User", "message_text": "via login"})
    assert sent.status_code == 201, sent.json
    assert sent.json["image"] == "/img/1.png"
    assert (
        c.post("/chats/send_message", json={"to": "7_User", "message_text": "x"}).json["error"]
        == "unknown_recipient"
    )


def test_public_names_are_reexported() -> None:
    assert sorted(flask_chat.__all__) == flask_chat.__all__
    for name in flask_chat.__all__:
        assert getattr(flask_chat, name) is not None
    assert GroupInfo(5, "g").members == ()
