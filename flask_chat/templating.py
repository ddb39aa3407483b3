"""``{{ chat_bootstrap() }}``: the current user's chat data and the client, in one call."""

from __future__ import annotations

import time
from typing import Any

from flask import url_for
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup, escape

from . import csrf, reading
from .conversations import ConversationKey
from .ids import format_id
from .state import ChatState, current_state
from .websocket import make_token

BOOTSTRAP_ELEMENT_ID = "flask-chat-bootstrap"


def bootstrap_data(state: ChatState, user_id: int) -> dict[str, Any]:
    """Everything ``chat.js`` needs to rebuild the chat windows on page load."""
    hooks = state.hooks
    me = hooks.get_user(user_id)
    history = reading.history(state, user_id)
    windows = state.windows.get(user_id)

    # Names and images of everyone the windows show: 1:1 peers and group members.
    group_ids: list[int] = hooks.user_group_ids(user_id)
    peer_ids: list[int] = []
    for key in list(history) + [w["conversation"] for w in windows]:
        conv = ConversationKey.parse(key)
        ids = group_ids if conv.is_group else peer_ids
        if conv.id not in ids:
            ids.append(conv.id)
    groups: dict[str, dict[str, Any]] = {}
    for gid in group_ids:
        group = hooks.get_group(gid)
        if group is not None:
            groups[str(gid)] = group.to_dict()
            peer_ids.extend(m for m in group.members if m not in peer_ids)
    people: dict[str, dict[str, Any]] = {}
    for uid in peer_ids:
        info = hooks.get_user(uid) if uid != user_id else None
        if info is not None:
            people[str(uid)] = info.to_dict()
    prefix = state.config.url_prefix
    # Where catch-up starts after the page loads: the newest message the page shows, or
    # a few seconds back when it shows none (the client ignores duplicates).
    newest = [m["id"] for conv in history.values() for m in conv["messages"][-1:]]
    position = max(newest) if newest else format_id(int(time.time() * 1000) - 5000, 0)
    return {
        "user": me.to_dict() if me else {"id": user_id, "name": str(user_id), "image": None},
        "history": history,
        "windows": windows,
        "people": people,
        "groups": groups,
        "csrf_token": csrf.get_token(),
        "ws_token": make_token(user_id),
        "position": position,
        "urls": {
            "send_message": f"{prefix}/send_message",
            "history": f"{prefix}/history",
            "windows": f"{prefix}/windows",
            "conversations": f"{prefix}/conversations/",
            "online_users": f"{prefix}/online_users",
            "websocket": f"{prefix}/ws",
            "poll": f"{prefix}/poll",
        },
        "settings": {
            "max_message_length": state.config.max_message_length,
            "page_size": state.config.page_size,
            "ping_interval": state.config.ping_interval,
        },
    }


def chat_bootstrap() -> Markup:
    """Emit the bootstrap JSON, the stylesheet and ``chat.js``; nothing for anonymous users.

    The JSON is escaped for HTML (``<``, ``>``, ``&`` and ``'`` become ``\\u`` escapes),
    so no message text or user name can end the script element or open a comment.
    """
    state = current_state()
    user_id = state.hooks.current_user_id()
    if user_id is None:
        return Markup("")
    data = htmlsafe_json_dumps(bootstrap_data(state, user_id))
    css = url_for("chat.static", filename="flask_chat/chat.css")
    js = url_for("chat.static", filename="flask_chat/chat.js")
    return Markup(
        f'<link rel="stylesheet" href="{escape(css)}">\n'
        f'<script type="application/json" id="{BOOTSTRAP_ELEMENT_ID}">{data}</script>\n'
        f'<script src="{escape(js)}" defer></script>'
    )
