"""The flask-chat app the real-time benchmark serves: many users and one big group.

Users are generated, not stored: every id from 1 to ``MAX_USER`` exists. Group 1 has
members 1..``group_size`` (the fan-out scenario); every other user is in no group. The
websocket authenticates with ``?token=`` (:func:`flask_chat.websocket.make_token`);
HTTP requests say who they are with an ``X-Bench-User`` header (this app only: it is a
benchmark, not a login scheme). CSRF is off, and so is the per-user send rate limit.
``POST /bare`` is a bare JSON route, the baseline ``send_message`` is compared with.

This module does not monkey-patch; ``chat_server.py`` (the entry point) does.
"""

from __future__ import annotations

import json
import os
from typing import Any

from flask import Flask, request

from flask_chat import Chat, GroupInfo, UserInfo

MAX_USER = 1_000_000
FANOUT_GROUP = 1
SECRET_KEY = "flask-chat-benchmark-not-secret"


def create_app(redis_url: str, group_size: int = 1000, **extra: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=SECRET_KEY,
        CHAT_REDIS_URL=redis_url,
        CHAT_SEND_RATE=0,  # no per-user rate limit: the load is the point
        CHAT_CSRF_ENABLED=False,  # HTTP clients say who they are with X-Bench-User
        CHAT_METRICS_PATH=None,
    )
    # CHAT_* settings from the environment too, e.g. CHAT_GROUP_MEMBER_CACHES=false.
    for name, raw in os.environ.items():
        if name.startswith("CHAT_") and name != "CHAT_REDIS_URL":
            try:
                app.config[name] = json.loads(raw)
            except ValueError:
                app.config[name] = raw
    app.config.update(extra)
    chat = Chat()
    group = GroupInfo(id=FANOUT_GROUP, name="everyone", members=tuple(range(1, group_size + 1)))
    users: dict[int, UserInfo] = {}

    @chat.user_loader
    def load_user(user_id: int) -> UserInfo | None:
        user = users.get(user_id)
        if user is None and 1 <= user_id <= MAX_USER:
            user = users[user_id] = UserInfo(user_id, f"user{user_id}", None)
        return user

    @chat.group_loader
    def load_group(group_id: int) -> GroupInfo | None:
        return group if group_id == FANOUT_GROUP else None

    @chat.user_groups_loader
    def groups_of(user_id: int) -> list[int]:
        return [FANOUT_GROUP] if 1 <= user_id <= group_size else []

    @chat.current_user_loader
    def current_user() -> int | None:
        raw = request.headers.get("X-Bench-User", "")
        return int(raw) if raw.isdigit() else None

    @app.post("/bare")
    def bare() -> dict[str, Any]:
        # The yardstick for POST /chats/send_message: what Flask alone costs on the same
        # server for a request of the same size (read a JSON body, answer a small JSON one).
        body = request.get_json(silent=True) or {}
        return {"ok": True, "to": body.get("to")}

    chat.init_app(app)
    return app


def make_tokens(app: Flask, user_ids: Any) -> dict[int, str]:
    """Websocket tokens for these users, signed with the app's key."""
    from flask_chat.websocket import make_token

    with app.app_context():
        return {uid: make_token(uid) for uid in user_ids}
