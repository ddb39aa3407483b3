"""A host app for the job tests, also loaded by real ``flask chat worker`` processes.

Every user id from 1 to 100,000 exists (``user<id>``); group 5 has users 1, 2 and 3.
Settings come from the environment (``CHAT_REDIS_URL``, ``CHAT_DATABASE_URL``, ...).
"""

from __future__ import annotations

import json
import os
from typing import Any

from flask import Flask, session

from flask_chat import Chat, GroupInfo, UserInfo

chat = Chat()


@chat.current_user_loader
def current() -> Any:
    return session.get("uid")


@chat.user_loader
def user(user_id: int) -> UserInfo | None:
    return UserInfo(user_id, f"user{user_id}", None) if user_id <= 100_000 else None


@chat.group_loader
def group(group_id: int) -> GroupInfo | None:
    return GroupInfo(5, "team", (1, 2, 3)) if group_id == 5 else None


@chat.user_groups_loader
def groups_of(user_id: int) -> list[int]:
    return [5] if user_id in (1, 2, 3) else []


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="jobs", CHAT_SEND_RATE=0, CHAT_HISTORY_LIMIT=10_000)
    for name, raw in os.environ.items():
        if name.startswith("CHAT_"):
            try:
                app.config[name] = json.loads(raw)
            except ValueError:
                app.config[name] = raw
    app.config.update(config or {})
    chat.init_app(app)
    return app
