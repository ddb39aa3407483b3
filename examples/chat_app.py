"""The flask-chat demo: alice (1), bob (2) and carol (3), and the group "team" (5).

``create_app(config)`` takes a mapping of settings; ``SECRET_KEY`` (or
``FLASK_SECRET_KEY``) and every ``CHAT_*`` setting can also come from the environment, so
the same app runs in the tests, in the demo (``bash examples/run-demo.sh``) and behind a
load balancer.

The secret key signs the session cookie and flask-chat's websocket tokens, so there is no
fixed fallback: without one, each start makes a random key (and logs a warning), and
sessions end when the process restarts. Several processes serving the same users (behind
a load balancer, gunicorn with several workers) must be given the same key.

The login and logout forms carry flask-chat's CSRF token (the one the chat's own routes
check, kept in the session); logout is a POST.

This module does not monkey-patch; the entry point that serves it (``serve.py``) does.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from typing import Any

from flask import Flask, abort, redirect, render_template, request, session, url_for
from flask_chat_bridge import JuggernautBridge
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user

from flask_chat import Chat, GroupInfo, UserInfo, csrf
from flask_chat.errors import Forbidden

#: Where the secret key may come from, first found wins (``FLASK_SECRET_KEY`` is what
#: Flask's own ``from_prefixed_env`` reads).
SECRET_KEY_VARIABLES = ("SECRET_KEY", "FLASK_SECRET_KEY")
RANDOM_KEY_WARNING = (
    "SECRET_KEY not set: a random key was generated; sessions and websocket tokens end "
    "when the process restarts (set SECRET_KEY, the same for every process, to keep them)"
)


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
    """``CHAT_*`` (JSON values decoded) and the secret key from the environment."""
    settings: dict[str, Any] = {}
    for name, raw in os.environ.items():
        if name.startswith("CHAT_"):
            try:
                settings[name] = json.loads(raw)
            except ValueError:
                settings[name] = raw
    # Taken as it is: a key such as "1234" must stay a string, not become a number.
    secret = next((os.environ[n] for n in SECRET_KEY_VARIABLES if os.environ.get(n)), None)
    if secret:
        settings["SECRET_KEY"] = secret
    return settings


def _csrf_ok() -> bool:
    """Whether the form post carries the session's CSRF token (flask-chat's own)."""
    try:
        csrf.check_request()
    except Forbidden:
        return False
    return True


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        CHAT_EMBEDDED_REDIS=True,
        # The demo creates its tables itself; production runs `flask chat db upgrade`.
        CHAT_DATABASE_AUTO_UPGRADE=True,
        # The Juggernaut bridge: legacy publishes, legacy browsers, the legacy test page.
        CHAT_JUGGERNAUT_ENABLED=True,
        CHAT_LEGACY_PUBLIC_CHANNELS=["channel*"],
    )
    app.config.update(_env_settings())
    app.config.update(config or {})
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = secrets.token_hex(32)
        app.logger.warning(RANDOM_KEY_WARNING)
    app.add_template_global(csrf.get_token, "csrf_token")
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
            if not _csrf_ok():
                # Also what a form from before a restart gets (its session is gone): the
                # page comes back with a fresh token, so trying again works.
                error = "This form has expired or did not come from this site: try again."
                return render_template("login.html", error=error), 403
            user = BY_NAME.get(request.form.get("username", "").strip().lower())
            if user is None:
                return render_template("login.html", error="Unknown user."), 400
            # A new session, so a new CSRF token: nothing from before the login carries
            # over into the logged-in session.
            session.clear()
            login_user(user)
            return redirect(url_for("index"))
        return render_template("login.html", error=None)

    # POST only (GET answers 405): a link or an image on another site must not be able
    # to log anyone out.
    @app.post("/logout")
    def logout() -> Any:
        if not _csrf_ok():
            return render_template("refused.html"), 403
        logout_user()
        session.pop(csrf.SESSION_KEY, None)  # the next login form gets a new token
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
