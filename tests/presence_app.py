"""A host app for the presence tests, served on gevent: ``python tests/presence_app.py``.

Users 1 to 1,000 exist; group 7 has members 1 to ``GROUP_SIZE`` (env, default 60). A
request is the user its ``X-Test-User`` header names (a test app, not a login scheme).
``PORT`` and every ``CHAT_*`` setting come from the environment.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402

from flask import Flask, request  # noqa: E402

from flask_chat import Chat, GroupInfo, UserInfo  # noqa: E402
from flask_chat.server import serve  # noqa: E402

GROUP = 7


def create_app(group_size: int) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="presence-tests", CHAT_SEND_RATE=0, CHAT_METRICS_PATH=None)
    for name, raw in os.environ.items():
        if name.startswith("CHAT_"):
            try:
                app.config[name] = json.loads(raw)
            except ValueError:
                app.config[name] = raw
    chat = Chat()
    group = GroupInfo(GROUP, "everyone", tuple(range(1, group_size + 1)))

    @chat.current_user_loader
    def current() -> int | None:
        raw = request.headers.get("X-Test-User", "")
        return int(raw) if raw.isdigit() else None

    @chat.user_loader
    def user(user_id: int) -> UserInfo | None:
        return UserInfo(user_id, f"user{user_id}", None) if 1 <= user_id <= 1000 else None

    @chat.group_loader
    def load_group(group_id: int) -> GroupInfo | None:
        return group if group_id == GROUP else None

    @chat.user_groups_loader
    def groups_of(user_id: int) -> list[int]:
        return [GROUP] if 1 <= user_id <= group_size else []

    chat.init_app(app)
    return app


if __name__ == "__main__":
    serve(create_app(int(os.environ.get("GROUP_SIZE", "60"))), "127.0.0.1",
          int(os.environ["PORT"]), log=None)
