"""What a user reads back: their chat cache in the legacy layout, and their persisted
transcripts with each conversation named."""

from __future__ import annotations

from typing import Any

from .conversations import ConversationKey
from .state import ChatState


def history(state: ChatState, user_id: int) -> dict[str, Any]:
    """The user's chat cache in the legacy layout (``GET /chats/history``)."""
    groups = () if state.config.group_member_caches else state.hooks.user_group_ids(user_id)
    return state.cache.export(user_id, groups)


def transcripts(state: ChatState, user_id: int, page: int, per_page: int) -> dict[str, Any]:
    """The user's persisted history (``GET /chats/transcripts``): sessions newest first,
    each with its conversations — named, in order of their first message — and their
    messages, oldest first."""
    hooks = state.hooks
    body = state.history.transcripts(user_id, page, per_page)
    names: dict[str, str | None] = {}
    for item in body["sessions"]:
        conversations = []
        for key, entries in item["conversations"].items():
            if key not in names:
                conv = ConversationKey.parse(key)
                who = hooks.get_group(conv.id) if conv.is_group else hooks.get_user(conv.id)
                names[key] = who.name if who else None
            conversations.append(
                {
                    "conversation": key,
                    "type": key.split("_", 1)[1],
                    "name": names[key],
                    "messages": entries,
                }
            )
        item["conversations"] = conversations
    return body
