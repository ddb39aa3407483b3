"""What a decoded legacy value must look like to be a chat history.

The legacy ``ChatsController`` kept, per user::

    {"2_User":  {type: "User",
                 messages: [{message_text: "..", type: "sent", image: "/path"}, ...]},
     "5_Group": {type: "Group", messages: [...]}}

Keys may be symbols or strings (they arrive here as ``str`` either way); ``image`` may be
nil or empty; a conversation may have no messages and a history no conversations.
Anything else raises :class:`~.errors.NotAHistory` naming the first thing that is off:
a key is imported whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask_chat.conversations import ConversationKey
from flask_chat.errors import ValidationError

from .errors import NotAHistory

DIRECTIONS = ("sent", "received")


@dataclass(frozen=True)
class LegacyMessage:
    text: str
    #: ``sent`` or ``received``, from the owner's side.
    direction: str
    image: str | None


@dataclass(frozen=True)
class LegacyConversation:
    #: The key as the owner names it (``2_User`` is the chat with user 2).
    key: ConversationKey
    messages: tuple[LegacyMessage, ...]


def ruby_type(value: Any) -> str:
    """How Ruby would name a decoded value's class, for the report."""
    names = {dict: "a Hash", list: "an Array", str: "a String", int: "an Integer",
             float: "a Float", bool: "true/false", tuple: "an Array", type(None): "nil"}
    return names.get(type(value), type(value).__name__)


def parse_history(value: Any) -> list[LegacyConversation]:
    """The conversations of one user's legacy history, in their stored order."""
    if not isinstance(value, dict):
        raise NotAHistory(f"{ruby_type(value)}, not a Hash of conversations")
    conversations = []
    for name, data in value.items():
        try:
            key = ConversationKey.parse(name)
        except ValidationError:
            raise NotAHistory(f"conversation key {str(name)[:40]!r}") from None
        conversations.append(LegacyConversation(key, _messages(str(key), data)))
    return conversations


def _messages(name: str, data: Any) -> tuple[LegacyMessage, ...]:
    if not isinstance(data, dict):
        raise NotAHistory(f"{name} is {ruby_type(data)}, not a Hash")
    kind = data.get("type")
    if kind is not None and kind != name.split("_", 1)[1]:
        raise NotAHistory(f"{name} has type {str(kind)[:20]!r}")
    raw = data.get("messages", [])
    if not isinstance(raw, list):
        raise NotAHistory(f"messages of {name} is {ruby_type(raw)}, not an Array")
    messages = []
    for number, item in enumerate(raw, 1):
        where = f"message {number} of {name}"
        if not isinstance(item, dict):
            raise NotAHistory(f"{where} is {ruby_type(item)}, not a Hash")
        text = item.get("message_text")
        if not isinstance(text, str):
            raise NotAHistory(f"{where} has message_text {ruby_type(text)}")
        direction = item.get("type")
        if direction not in DIRECTIONS:
            raise NotAHistory(f"{where} has type {str(direction)[:20]!r}")
        image = item.get("image")
        if image is not None and not isinstance(image, str):
            raise NotAHistory(f"{where} has image {ruby_type(image)}")
        messages.append(LegacyMessage(text, direction, image))
    return tuple(messages)
