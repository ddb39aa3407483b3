"""The flask-chat demo: alice (1), bob (2) and carol (3), and the group "team" (5).

``create_app(config)`` takes a mapping of settings; ``SECRET_KEY`` and every ``CHAT_*``
setting can also come from the environment, so the same app runs in the tests, in the
demo (``bash examples/run-demo.sh``) and behind a load balancer.

This module does not monkey-patch; the entry point that serves it (``serve.py``) does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, abort, redirect, render_template, request, url_for
from flask_chat_bridge import JuggernautBridge
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user

from flask_chat import Chat, GroupInfo, UserInfo


class User(UserMixin):
    def __init__(self, id: int, name: str, image: str) -> None:
        self.id = id
        self.name = name
        self.image_url = image


USERS = {
    1: User(1, "alice", "/static/avatars/alice.svg"),
    2: User(2, "bob", "/static/avatars/bob.svg"),
    3: User(3, "carol", "/static/avatars/carol.svg"),
}
BY_NAME = {u.name: u for u in USERS.values()}
GROUPS = {5: GroupInfo(id=5, name="team", members=(1, 2, 3))}

chat = Chat()
bridge = JuggernautBridge()
login_manager = LoginManager()


@login_manager.user_loader
def load_login_user(user_id: str) -> User | None:
    return USERS.get(int(user_id)) if user_id.isdigit() else None


@chat.user_loader
def load_chat_user(user_id: int) -> UserInfo | None:
    user = USERS.get(user_id)
    return UserInfo(user.id, user.name, user.image_url) if user else None


@chat.group_loader
def load_group(group_id: int) -> GroupInfo | None:
    return GROUPS.get(group_id)


@chat.user_groups_loader
def groups_of(user_id: int) -> list[int]:
    return [g.id for g in GROUPS.values() if user_id in g.members]


@bridge.channel_authorizer
def may_subscribe(user_id: int, channel: str) -> bool:
    """Legacy channels a logged-in user may read: their own, and their groups'."""
    if channel == f"/chats/user_{user_id}":
        return True
    if channel.startswith("/chats/group_") and channel[13:].isdigit():
        group = GROUPS.get(int(channel[13:]))
        return group is not None and user_id in group.members
    return False


@bridge.translator_hook
def legacy_chat(channel: str, message: dict[str, Any]) -> tuple[int, str, str] | None:
    """The legacy Rails send_message published {"sender_id", "message_text", "image"} to
    /chats/user_<recipient> and /chats/group_<id>: make those flask-chat messages."""
    data = message.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("sender_id"), int):
        return None
    for prefix, kind in (("/chats/user_", "User"), ("/chats/group_", "Group")):
        if channel.startswith(prefix) and channel[len(prefix):].isdigit():
            return data["sender_id"], f"{channel[len(prefix):]}_{kind}", data.get("message_text")
    return None


def _env_settings() -> dict[str, Any]:
    """``SECRET_KEY`` and ``CHAT_*`` from the environment; JSON values are decoded."""
    settings: dict[str, Any] = {}
    for name, raw in os.environ.items():
        if name == "SECRET_KEY" or name.startswith("CHAT_"):
            try:
                settings[name] = json.loads(raw)
            except ValueError:
                settings[name] = raw
    return settings


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="demo-only-not-secret",
        CHAT_EMBEDDED_REDIS=True,
        # The demo creates its tables itself; production runs `flask chat db upgrade`.
        CHAT_DATABASE_AUTO_UPGRADE=True,
        # The Juggernaut bridge: legacy publishes, legacy browsers, the legacy test page.
        CHAT_JUGGERNAUT_ENABLED=True,
        CHAT_LEGACY_PUBLIC_CHANNELS=["channel*"],
    )
    app.config.update(_env_settings())
    app.config.update(config or {})
    login_manager.init_app(app)
    login_manager.login_view = "login"
    chat.init_app(app)
    bridge.init_app(app)

    @app.get("/")
    def index() -> Any:
        if not current_user.is_authenticated:
            return redirect(url_for("login"))
        return render_template("index.html", users=USERS.values(), groups=GROUPS.values())

    @app.get("/about")
    def about() -> Any:
        return render_template("about.html")

    @app.get("/transcripts")
    def transcripts() -> Any:
        if not current_user.is_authenticated:
            return redirect(url_for("login"))
        page = request.args.get("page", "1")
        data = chat.transcripts(current_user.id, int(page) if page.isdigit() and page != "0" else 1)
        return render_template("transcripts.html", data=data)

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if request.method == "POST":
            user = BY_NAME.get(request.form.get("username", "").strip().lower())
            if user is None:
                return render_template("login.html", error="Unknown user."), 400
            login_user(user)
            return redirect(url_for("index"))
        return render_template("login.html", error=None)

    @app.get("/logout")
    def logout() -> Any:
        logout_user()
        return redirect(url_for("login"))

    @app.get("/static/avatars/<name>.svg")
    def avatar(name: str) -> Any:
        user = BY_NAME.get(name) or abort(404)
        colour = {1: "#d9534f", 2: "#428bca", 3: "#5cb85c"}[user.id]
        svg = (
            '<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32">'
            f'<circle cx="16" cy="16" r="16" fill="{colour}"/>'
            '<text x="16" y="21" font-size="15" text-anchor="middle" fill="#fff" '
            f'font-family="sans-serif">{user.name[0].upper()}</text></svg>'
        )
        return app.response_class(svg, mimetype="image/svg+xml")

    return app
